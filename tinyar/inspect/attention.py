"""Attention maps: what each head of a transformer looks at, as heat maps.

    attention_maps(model, ids)     -> [P_l (H, T, T) for each layer l]
    plot_attention(path, maps, tokens, layers=None, heads=None)
    prompt_ids(tokenizer, ...)     the prompt the HTML report draws the maps for

For a prompt of T tokens, layer l and head h, the map is the softmax of the scaled
scores that ``CausalSelfAttention`` computes:

    P[h, i, j] = softmax_j(q_i . k_j / sqrt(D))   for j <= i,   0 for j > i

row i (the query at position i) is a probability distribution over the keys
0 .. i: every row sums to 1 and everything above the diagonal is 0.

``plot_attention`` follows the other plot helpers (``plots.py``): the PNG's
path first, and the path returned; with ``path=None`` the ``Figure``.
"""
import math

import numpy as np

from .plots import _figure, _save
from ..errors import DTypeError, ShapeError, TinyarError

#: Tokens of the report's prompt taken from a training sample, and the prompt used when a
#: run has neither a configured prompt nor a sample.
SAMPLE_TOKENS = 32
FALLBACK_PROMPT = "def main():\n    return 0\n"
#: Characters of a sample or prompt that are encoded (enough for any context we draw).
MAX_PROMPT_CHARS = 4096
#: Whitespace drawn as a visible sign; other unprintable characters are escaped (\x0b).
VISIBLE = {" ": "\u2423", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def attention_layers(model):
    """[(name, CausalSelfAttention), ...] of ``model``, in the order the forward runs them
    (``block0.self_attn``, ``block1.self_attn``, ...)."""
    from ..nn.attention import CausalSelfAttention
    return [(name, m) for name, m in model.named_modules() if isinstance(m, CausalSelfAttention)]


def attention_maps(model, ids):
    """The attention probabilities of every layer for one prompt.

    ``model``: a language model with ``features(ids (N, T))`` (``AutoregressiveLM``), or any
    module called on ids (N, T); ``ids``: a 1-D sequence of T token ids, T at most the
    model's context. Returns a list with one host array (H, T, T) per
    ``CausalSelfAttention`` of the model, in forward order: ``maps[l][h, i, j]`` is how
    much query i attends key j in layer l, head h.

    The forward runs in evaluation mode (no dropout) with ``keep_attention`` set on every
    attention layer; afterwards each module's training flag and each attention layer's
    ``keep_attention`` and ``last_attention`` are as they were. What the forward cached for
    a backward is overwritten, as by any forward: run the next training forward before a
    backward.
    """
    layers = attention_layers(model)
    if not layers:
        raise TinyarError(f"attention_maps: {type(model).__name__} has no CausalSelfAttention "
                          f"layer (only a transformer has attention maps)")
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.size == 0:
        raise ShapeError(f"attention_maps: expected a 1-D prompt of at least one token id, got "
                         f"shape {tuple(ids.shape)}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise DTypeError(f"attention_maps: expected integer token ids, got dtype {ids.dtype}")
    modes = [(m, m.training) for m in model.modules()]
    kept = [(a, a.keep_attention, a.last_attention) for _, a in layers]
    try:
        model.eval()
        for _, a in layers:
            a.keep_attention, a.last_attention = True, None
        batch = ids.astype(np.int64).reshape(1, -1)
        model.features(batch) if hasattr(model, "features") else model(batch)
        maps = []
        for name, a in layers:
            if a.last_attention is None:  # a layer the forward did not reach
                raise TinyarError(f"attention_maps: the forward did not run {name}")
            maps.append(np.array(a.last_attention[0]))  # the batch's one row: (H, T, T)
        return maps
    finally:
        for m, training in modes:
            object.__setattr__(m, "training", training)
        for a, keep, last in kept:
            a.keep_attention, a.last_attention = keep, last


# --- the prompt -------------------------------------------------------------------------------
def prompt_ids(tokenizer, prompt="", samples=(), limit=None,
               prompt_is="the run's prompt"):
    """(ids, where they came from) of the prompt whose attention the report draws.

    In order: ``prompt`` (the run's configured prompt) if it is a non-empty text; else the
    first ``SAMPLE_TOKENS`` tokens of the first text in ``samples`` (the samples of the
    training log); else ``FALLBACK_PROMPT``. Unknown tokens become the unknown token; a
    text the tokenizer cannot encode at all is passed over. ``limit``: at most this many
    tokens, the first ones (the model's context). ``prompt_is``: how the answer names
    ``prompt`` ("the given prompt" for one from the command line). Raises ``TinyarError`` when nothing
    encodes to at least one token.
    """
    candidates = []
    if isinstance(prompt, str) and prompt:
        candidates.append((prompt_is, prompt, None))
    first = next((s for s in samples if isinstance(s, str) and s), None)
    if first is not None:
        candidates.append(("the first training sample", first, SAMPLE_TOKENS))
    candidates.append(("a fixed prompt", FALLBACK_PROMPT, None))
    problems = []
    for where, text, count in candidates:
        try:
            ids = tokenizer.encode(text[:MAX_PROMPT_CHARS], errors="replace")
        except (TinyarError, ValueError, TypeError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        ids = ids[:count] if count else ids
        if ids.size:
            return (ids[:limit] if limit else ids), where
        problems.append(f"{where}: no tokens")
    raise TinyarError("attention maps: no prompt could be encoded (" + "; ".join(problems) + ")")


# --- the figure -------------------------------------------------------------------------------
def token_label(token, limit=10):
    """A tick label for a token: whitespace made visible (space as an open box, newline as
    \\n), other unprintable characters escaped (\\x0b, \\u200b), ``$`` escaped so that
    matplotlib does not read it as mathematics; at most ``limit`` characters shown."""
    pieces = []
    for ch in str(token):
        if ch in VISIBLE:
            pieces.append(VISIBLE[ch])
        elif ch == "$":
            pieces.append(r"\$")
        elif ch.isprintable():
            pieces.append(ch)
        else:
            pieces.append(ch.encode("unicode_escape").decode("ascii"))
    if not pieces:
        return "''"
    return "".join(pieces[:limit]) + ("\u2026" if len(pieces) > limit else "")


def _chosen(values, count, what):
    """``values`` (None: all of 0 .. count-1) as a checked list of indices."""
    chosen = list(range(count)) if values is None else [int(v) for v in values]
    bad = [v for v in chosen if not 0 <= v < count]
    if not chosen or bad:
        raise ValueError(f"plot_attention: {what} must be indices in [0, {count}), got "
                         f"{chosen[:8] if not chosen else bad[:8]}")
    return chosen


def plot_attention(path, maps, tokens, layers=None, heads=None, title=""):
    """A grid of heat maps: one row per layer, one column per head.

    ``maps``: ``attention_maps``'s list of (H, T, T) arrays; ``tokens``: the T tokens of
    the prompt (strings), the tick labels of both axes, the query i on the y axis (top to
    bottom) and the key j on the x axis. ``layers``, ``heads``: indices to draw (default:
    all). Colour is P[h, i, j] on one square-root scale from 0 to 1 for every panel, so
    that small weights stay visible and panels compare; the masked future (j > i) is grey.
    """
    from matplotlib.colors import PowerNorm
    if not maps:
        raise ValueError("plot_attention: no attention maps to draw")
    arrays = [np.asarray(m, dtype=np.float64) for m in maps]
    shape = arrays[0].shape
    if any(a.ndim != 3 or a.shape != shape or a.shape[1] != a.shape[2] for a in arrays):
        raise ShapeError(f"plot_attention: expected maps of one shape (H, T, T), got "
                         f"{[a.shape for a in arrays][:4]}")
    steps = shape[1]
    labels = [token_label(t) for t in tokens]
    if len(labels) != steps:
        raise ShapeError(f"plot_attention: expected {steps} tokens (the maps' T), got "
                         f"{len(labels)}")
    layers = _chosen(layers, len(arrays), "layers")
    heads = _chosen(heads, shape[0], "heads")
    # a panel grows with T up to a limit; past it labels shrink, then only every k-th shows
    side = min(max(0.11 * steps + 1.2, 2.8), 5.0)  # inches, 1.2 of them for labels
    fontsize = min(max(0.8 * 72 * (side - 1.2) / steps, 3.5), 8.0)
    every = max(1, math.ceil(steps * 3.5 / (72 * (side - 1.2))))
    ticks = np.arange(0, steps, every)
    fig = _figure(side * len(heads) + 1.2, side * len(layers) + 0.6)
    from matplotlib import colormaps
    cmap = colormaps["viridis"].with_extremes(bad="0.85")
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)  # sqrt: weights of 0.01 still show
    future = np.triu(np.ones((steps, steps), dtype=bool), k=1)
    axes = fig.subplots(len(layers), len(heads), squeeze=False)
    image = None
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r][c]
            p = arrays[layer][head]
            shown = np.ma.masked_where(future & (p == 0), p)  # hide only the causal zeros
            image = ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest")
            ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=fontsize)
            ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=fontsize)
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            if r == len(layers) - 1:
                ax.set_xlabel("key", fontsize=8)
            if c == 0:
                ax.set_ylabel("query", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention probability (sqrt scale)")
    fig.suptitle(title or "attention")
    return _save(fig, path)
