"""Word-level LM training step: V = 10,000, embedding 256, 1-layer LSTM 256,
batch 32, 35 time steps, Adam. tinyar's multi-level softmax against PyTorch's
full softmax and ``AdaptiveLogSoftmaxWithLoss``; tinyar's flat softmax against
PyTorch's flat softmax.

    python benchmarks/bench_word_lm.py [--repeats 30] [--head-only]

Tokens are drawn with Zipf frequencies (like words); the multi-level head's
classes come from sqrt-frequency binning of those counts (C = 100 by default).
The adaptive softmax uses cutoffs [1000, 5000] (head of 1,000 words plus two
tail clusters, div_value 4), a common setting for a 10k vocabulary.

``--head-only`` times the output layer alone: forward and backward of the
softmax over 32 x 35 = 1,120 hidden states (256 wide) with their targets, no
LSTM, no optimizer.

``--floor`` times the parts of the step that do not depend on the output
layer, in both frameworks: the embedding + LSTM forward and backward, and
one Adam step over all parameters (plus, for tinyar, clearing the gradient
buffer, which PyTorch's ``zero_grad`` skips by setting gradients to None).
The faster of the two frameworks at each part, plus tinyar's multi-level
head, is a floor under any whole step built from these libraries on this
machine: it says which whole-step speed-ups are reachable at all.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_ms, table, torch_or_none  # noqa: E402
from lm_twins import batch, tinyar_lm, torch_lm  # noqa: E402

V, EMBED, HIDDEN, LAYERS, BATCH, STEPS = 10_000, 256, 256, 1, 32, 35


def head_only(args, torch):
    import numpy as np
    from tinyar.data.hierarchy import ClassHierarchy
    from tinyar.nn import CrossEntropyLoss, Linear, MultiLevelSoftmax
    from lm_twins import zipf_tokens
    rng = np.random.default_rng(0)
    h = rng.standard_normal((BATCH * STEPS, HIDDEN)).astype(np.float32)
    t = zipf_tokens(V, BATCH * STEPS, seed=2)
    counts = np.bincount(zipf_tokens(V, 200_000, seed=1), minlength=V) + 1
    ml = MultiLevelSoftmax(HIDDEN, ClassHierarchy.from_counts(counts, args.classes))
    flat, ce = Linear(HIDDEN, V), CrossEntropyLoss()

    def ml_step():
        ml.zero_grad()
        ml(h, t)
        ml.backward()

    def flat_step():
        flat.zero_grad()
        ce(flat(h), t)
        flat.backward(ce.backward())
    rows = [("tinyar multi-level softmax", median_ms(ml_step, args.warmup, args.repeats)),
            ("tinyar flat softmax", median_ms(flat_step, args.warmup, args.repeats))]
    if torch is not None:
        th = torch.from_numpy(h).requires_grad_(True)
        tt = torch.from_numpy(t)
        t_flat = torch.nn.Linear(HIDDEN, V)
        t_adaptive = torch.nn.AdaptiveLogSoftmaxWithLoss(HIDDEN, V, [1000, 5000])

        def torch_flat():
            t_flat.zero_grad()
            th.grad = None
            torch.nn.functional.cross_entropy(t_flat(th), tt).backward()

        def torch_adaptive():
            t_adaptive.zero_grad()
            th.grad = None
            t_adaptive(th, tt).loss.backward()
        rows.append(("torch full softmax", median_ms(torch_flat, args.warmup, args.repeats)))
        rows.append(("torch AdaptiveLogSoftmaxWithLoss", median_ms(torch_adaptive, args.warmup,
                                                                   args.repeats)))
    print(table(f"word LM output layer alone, forward + backward: {BATCH * STEPS} rows of "
                f"{HIDDEN}, V={V}", rows, reference="tinyar multi-level softmax"))


def blas_table(args, torch):
    """The LSTM's matrix products alone, tinyar's BLAS (MKL or NumPy's OpenBLAS,
    ``tinyar/backend/cpu/blas.py``) against PyTorch's (MKL), in microseconds per call:
    the part of the gap that is the library."""
    import numpy as np
    from tinyar.backend.cpu import blas, linalg
    rng = np.random.default_rng(0)
    tokens, gates = BATCH * STEPS, 4 * HIDDEN
    shapes = [("X W_ih^T, once a step", (tokens, EMBED), (EMBED, gates), 1),
              ("h W_hh^T, every time step", (BATCH, HIDDEN), (HIDDEN, gates), STEPS),
              ("dA W_hh, every time step", (BATCH, gates), (gates, HIDDEN), STEPS),
              ("dA^T X (dW_ih; dW_hh alike)", (gates, tokens), (tokens, EMBED), 2),
              ("dA W_ih (dX)", (tokens, gates), (gates, EMBED), 1)]
    lines = [f"| product | calls per step | tinyar's BLAS, {blas.LIBRARY} (us) | torch (us) "
             "| ratio |",
             "|---|---:|---:|---:|---:|"]
    total = [0.0, 0.0]
    for name, a_shape, b_shape, calls in shapes:
        a = rng.standard_normal(a_shape).astype(np.float32)
        b = rng.standard_normal(b_shape).astype(np.float32)
        out = np.empty((a_shape[0], b_shape[1]), np.float32)
        ta, tb, tout = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out.copy())
        ours = median_ms(lambda: linalg.matmul(a, b, out=out), args.warmup, 10 * args.repeats)
        theirs = median_ms(lambda: torch.mm(ta, tb, out=tout), args.warmup, 10 * args.repeats)
        total[0] += calls * ours
        total[1] += calls * theirs
        lines.append(f"| {name} | {calls} | {ours * 1e3:.1f} | {theirs * 1e3:.1f} | "
                     f"{ours / theirs:.2f} |")
    lines.append(f"| all of a step's LSTM products | | {total[0] * 1e3:.0f} | "
                 f"{total[1] * 1e3:.0f} | {total[0] / total[1]:.2f} |")
    return "\n".join(lines)


def floor(args, torch):
    """Time the parts of the step shared by every head (see the module docstring)."""
    import numpy as np
    import tinyar
    from tinyar.nn import LSTM, Embedding
    from tinyar.backend import cpu as B
    from tinyar.nn.parameter import FlatBuffer, Parameter
    from tinyar.optim import Adam
    from lm_twins import batch as make_batch
    x, _ = make_batch(V, BATCH, STEPS)
    tinyar.manual_seed(0)
    embedding, lstm = Embedding(V, EMBED), LSTM(EMBED, HIDDEN, LAYERS)
    grad_out = np.random.default_rng(0).standard_normal((BATCH, STEPS, HIDDEN)).astype(np.float32)

    def lstm_step():
        out, _ = lstm(embedding(x))
        lstm.zero_grad()
        embedding.zero_grad()
        embedding.backward(lstm.backward(grad_out)[0])

    # every parameter of the multi-level model: embedding, LSTM, class layer, word layer
    sizes = [V * EMBED, 4 * HIDDEN * (EMBED + HIDDEN + 2), args.classes * (HIDDEN + 1),
             V * (HIDDEN + 1)]
    params = [Parameter(np.zeros(n, np.float32)) for n in sizes]
    flat = FlatBuffer.pack(params)
    adam = Adam(params, lr=1e-3)
    flat.grad[:] = 1e-3

    def zero_grad():  # what Module.zero_grad does
        B.zero_(flat.grad)
    rows = [("tinyar embedding + LSTM, fwd + bwd", median_ms(lstm_step, args.warmup, args.repeats)),
            (f"tinyar Adam over {sum(sizes):,} parameters", median_ms(adam.step, args.warmup,
                                                                      args.repeats)),
            ("tinyar zero_grad (one fill, zero_)", median_ms(zero_grad, args.warmup, args.repeats))]
    if torch is not None:
        t_embedding = torch.nn.Embedding(V, EMBED)
        t_lstm = torch.nn.LSTM(EMBED, HIDDEN, LAYERS, batch_first=True)
        tx, tg = torch.from_numpy(x), torch.from_numpy(grad_out)

        def torch_lstm_step():
            t_embedding.zero_grad()
            t_lstm.zero_grad()
            out, _ = t_lstm(t_embedding(tx))
            out.backward(tg)
        t_params = [torch.nn.Parameter(torch.zeros(n)) for n in sizes]
        for p in t_params:
            p.grad = torch.full((p.numel(),), 1e-3)
        t_adam = torch.optim.Adam(t_params, lr=1e-3)
        rows += [("torch embedding + LSTM, fwd + bwd", median_ms(torch_lstm_step, args.warmup,
                                                                 args.repeats)),
                 (f"torch Adam over {sum(sizes):,} parameters", median_ms(t_adam.step,
                                                                         args.warmup,
                                                                         args.repeats))]
    print(table(f"word LM step without its output layer: V={V}, embedding {EMBED}, LSTM "
                f"{HIDDEN}x{LAYERS}, batch {BATCH}, {STEPS} steps", rows,
                reference="tinyar embedding + LSTM, fwd + bwd"))
    if torch is not None:
        print("\n" + blas_table(args, torch))
    d = dict(rows)
    best_lstm = min(v for k, v in d.items() if "LSTM" in k)
    best_adam = min(v for k, v in d.items() if "Adam" in k)
    print(f"\nfloor without the head: {best_lstm:.1f} ms (fastest embedding + LSTM) + "
          f"{best_adam:.1f} ms (fastest Adam) = {best_lstm + best_adam:.1f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--head-only", action="store_true")
    parser.add_argument("--floor", action="store_true")
    args = parser.parse_args()
    if args.head_only:
        return head_only(args, torch_or_none())
    if args.floor:
        return floor(args, torch_or_none())
    x, y = batch(V, BATCH, STEPS)
    rows = []
    _, ml_step = tinyar_lm(V, EMBED, HIDDEN, LAYERS, "multilevel", x, y, classes=args.classes)
    rows.append(("tinyar multi-level softmax", median_ms(ml_step, args.warmup, args.repeats)))
    flat_model, flat_step = tinyar_lm(V, EMBED, HIDDEN, LAYERS, "flat", x, y)
    rows.append(("tinyar flat softmax", median_ms(flat_step, args.warmup, args.repeats)))
    torch = torch_or_none()
    if torch is not None:
        _, t_flat = torch_lm(torch, V, EMBED, HIDDEN, LAYERS, "flat", x, y,
                             state=flat_model.state_dict())
        rows.append(("torch full softmax", median_ms(t_flat, args.warmup, args.repeats)))
        _, t_adaptive = torch_lm(torch, V, EMBED, HIDDEN, LAYERS, "adaptive", x, y,
                                 cutoffs=[1000, 5000])
        rows.append(("torch AdaptiveLogSoftmaxWithLoss", median_ms(t_adaptive, args.warmup,
                                                                   args.repeats)))
    print(table(f"word LM training step: V={V}, embedding {EMBED}, LSTM {HIDDEN}x{LAYERS}, "
                f"batch {BATCH}, {STEPS} steps, Adam", rows,
                reference="tinyar multi-level softmax"))
    if torch is not None:
        d = dict(rows)
        print(f"\ntinyar flat / torch full softmax: "
              f"{d['tinyar flat softmax'] / d['torch full softmax']:.2f}")


if __name__ == "__main__":
    main()
