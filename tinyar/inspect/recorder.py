"""``Recorder``: numbers about a model while it trains, without changing its code.

What it measures, at every ``every``-th optimizer step:

per parameter (read at ``recorder.step()``, which you call right after
``optimizer.step()``):

    grad_norm      ||g||_2 of the gradient the optimizer just used (after clipping)
    grad_mean_abs  mean |g|,  grad_max_abs  max |g|     (the "gradient flow" bars)
    param_norm     ||w||_2 after the update
    update_ratio   ||w_after - w_before|| / ||w_before||

The update ratio is the learning rate as the weights feel it: around 1e-3
per step is the usual rule of thumb; 1e-1 means the weights are being
thrown about, 1e-6 that they hardly move. To measure it the recorder keeps
one copy of the weights from before the update (one preallocated buffer,
refreshed only before recorded steps).

per module (its forward output, all calls in the step pooled):

    mean, std      of the output values
    dead           fraction of exact zeros (ReLU / relu RNN outputs)
    dead_units     fraction of units (last axis) that are zero for every row
    saturated      fraction in the flat part: |y| > 0.97 for tanh, y < 0.03 or
                   y > 0.97 for sigmoid; a saturated unit passes almost no gradient
    grad_norm      ||dL/d(output)||, read as the gradient passes through backward

and, at the steps listed in ``histogram_steps``, histograms of every
module's output and every parameter's gradient.

How it attaches: it sets an instance attribute ``forward`` (and
``backward``) on each module, a ``_Hook`` that shadows the class's method,
calls the original and shows the recorder the result (the incoming
gradient). ``detach()`` deletes the attributes again, and the model is as it
was; a deep copy of a watched model (``gradcheck`` makes one) gets plain
methods. Only numbers are kept (sums and counts during a step, a few floats
per step afterwards), so it is cheap enough to leave on.

Two leaves of a GPT never have their forward or backward called: their parent
computes them inline, so the recorder hooks the parent's methods where their
output and its gradient pass instead:

    TransformerBlock.linear1         output a + b1 (M, F), a = z W1^T as the block keeps
                                     it after ``_mlp_hidden``; dL/d(a + b1) is the block's
                                     fused bias + GELU backward of the dL/du that leaves
                                     ``dropout.backward``, run once more on recorded steps
    TransformerStack.pos_embedding   output pos[start:start+T] for each of the N rows
                                     (``_run``'s arguments); dL/d(output) = dL/dh, the dx
                                     that the stack's ``backward`` returns (h = x + pos)

    recorder = Recorder(model, every=10, histogram_steps=(1, 100, 1000))
    for step in ...:
        loss = model.loss(x, y); model.zero_grad(); model.backward()
        optimizer.step()
        recorder.step()
    recorder.save("runs/x/recorder.json");  recorder.detach()

Forwards run for evaluation inside a step are pooled with the training
forward; wrap them in ``with recorder.paused():`` to leave them out.
"""
import contextlib
import copy
import math

import numpy as np

from .. import fileio
from ..errors import FileError

#: How far into the flat part of a squashing function counts as saturated.
TANH_SATURATION = 0.97
SIGMOID_LOW, SIGMOID_HIGH = 0.03, 0.97


def _host(a):
    """A NumPy view or copy of an array on any backend."""
    if isinstance(a, np.ndarray):
        return a
    from ..backend import backend_of
    return np.asarray(backend_of(a).to_host(a))


def _first_array(value):
    """The first array in a module's output: ``y``, or ``output`` of ``(output, state)``."""
    if isinstance(value, (tuple, list)):
        return _first_array(value[0]) if value else None
    if hasattr(value, "shape") and hasattr(value, "dtype") and np.ndim(value) > 0:
        return value
    return None


def output_kind(module):
    """Which special statistic a module's output gets: 'relu', 'tanh', 'sigmoid' or None."""
    name = type(module).__name__
    if name in ("ReLU", "Tanh", "Sigmoid"):
        return name.lower()
    if name == "RNN":  # h_t = act(...)
        return getattr(module, "nonlinearity", "tanh")
    return None


def _sum_of_squares(a):
    """sum(a^2) with one BLAS dot and no temporary array."""
    v = np.ravel(a)
    return float(np.dot(v, v))


def activation_stats(y, kind=None):
    """Sums and counts of one output array (pooled over calls, finished by ``finish_stats``)."""
    y = _host(y)
    stats = {"n": y.size, "sum": float(y.sum(dtype=np.float64)), "sumsq": _sum_of_squares(y)}
    if kind == "relu":
        zero = y == 0
        stats["special"] = int(np.count_nonzero(zero))
        if y.ndim >= 2:
            units = zero.reshape(-1, y.shape[-1]).all(axis=0)
            stats["dead_units"] = float(units.mean())
    elif kind == "tanh":
        stats["special"] = int(np.count_nonzero(np.abs(y) > TANH_SATURATION))
    elif kind == "sigmoid":
        stats["special"] = int(np.count_nonzero((y < SIGMOID_LOW) | (y > SIGMOID_HIGH)))
    return stats


def _merge(total, stats):
    if total is None:
        return dict(stats)
    for key in ("n", "sum", "sumsq", "special"):
        if key in stats:
            total[key] = total.get(key, 0) + stats[key]
    if "dead_units" in stats:  # a unit is dead only if it was dead in every call
        total["dead_units"] = min(total.get("dead_units", 1.0), stats["dead_units"])
    return total


def finish_stats(total, kind):
    """mean, std, and dead or saturated fractions from pooled sums."""
    n = max(total["n"], 1)
    mean = total["sum"] / n
    out = {"mean": mean, "std": math.sqrt(max(total["sumsq"] / n - mean * mean, 0.0))}
    if kind == "relu":
        out["dead"] = total.get("special", 0) / n
        out["dead_units"] = total.get("dead_units")
    elif kind in ("tanh", "sigmoid"):
        out["saturated"] = total.get("special", 0) / n
    return out


def histogram(values, bins=30):
    """{"counts", "edges"} of the finite values of an array (JSON-ready lists)."""
    v = _host(values).astype(np.float64, copy=False).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"counts": [], "edges": []}
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    return {"counts": counts.tolist(), "edges": edges.tolist()}


def _clean(x):
    """NaN and infinities as None, so the JSON is strict."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class Recorder:
    """Attach to ``model``; call ``step()`` after every ``optimizer.step()``.

    ``every``: record steps 1, 1 + every, 1 + 2 every, ... and the histogram
    steps (the other steps cost nothing but a counter). ``activations``: also
    wrap the modules' forward/backward for output statistics.
    ``histogram_steps``: the steps (counting from 1) at which histograms are
    taken; ``bins`` per histogram. ``modules``: which modules to watch:
    "leaves" (modules without children, the default) or "all".

    Cost of a recorded step: about three passes over the parameters in
    ``step()`` (norms, the weight copy, the update) and two over each watched
    module's output and output gradient; steps that are not recorded cost a
    counter and one flag test per module call.
    """

    def __init__(self, model, every=1, activations=True, histogram_steps=(), bins=30,
                 modules="leaves"):
        if int(every) < 1:
            raise ValueError(f"Recorder: every must be at least 1, got {every}")
        if modules not in ("leaves", "all"):
            raise ValueError(f"Recorder: modules must be 'leaves' or 'all', got {modules!r}")
        self.model = model
        self.every = int(every)
        self.bins = int(bins)
        self.histogram_steps = sorted({int(s) for s in histogram_steps})
        self.steps = []  # the recorded step numbers
        self.params = dict(model.named_parameters())
        self.param_series = {name: {k: [] for k in ("grad_norm", "grad_mean_abs", "grad_max_abs",
                                                    "param_norm", "update_ratio")}
                             for name in self.params}
        self.module_series = {}  # name -> {"type", "kind", series...}
        self.histograms = []  # {"step", "kind": "activation"|"gradient", "name", counts, edges}
        self._step = 1  # the step now running (counting from 1)
        self._pending = {}  # name -> pooled forward sums of this step
        self._pending_grad = {}  # name -> sum of squares of dL/d(output) of this step
        self._pending_hist = {}
        self._paused = 0
        self._before = None  # the weights before the update of step _before_step
        self._before_step = None
        self._wrapped = []  # (module, attribute, what was there before)
        if activations:
            self._attach(modules)
        self._snapshot()

    # --- attaching ---------------------------------------------------------------
    def _attach(self, which):
        named = list(self.model.named_modules())
        for name, module in named:
            if which == "leaves" and module._modules:
                continue
            label = name or type(module).__name__
            kind = output_kind(module)
            self.module_series[label] = {"type": type(module).__name__, "kind": kind}
            self._wrap(module, "forward", self._forward_wrapper(module, label, kind))
            self._wrap(module, "backward", self._backward_wrapper(module, label))
        for name, module in named:
            self._watch_inline_leaves(name, module)

    def _wrap(self, module, attribute, wrapper):
        before = module.__dict__.get(attribute, _ABSENT)
        object.__setattr__(module, attribute, wrapper)
        self._wrapped.append((module, attribute, before))

    def _observe_output(self, label, kind, y):
        """Pool the statistics (and at histogram steps the histogram) of one output."""
        if y is not None and np.issubdtype(y.dtype, np.floating):
            self._pending[label] = _merge(self._pending.get(label), activation_stats(y, kind))
            if self._step in self.histogram_steps and label not in self._pending_hist:
                self._pending_hist[label] = histogram(y, self.bins)

    def _observe_grad(self, label, g):
        """Add ||dL/d(output)||^2 of one backward call."""
        if g is not None:
            self._pending_grad[label] = self._pending_grad.get(label, 0.0) + \
                _sum_of_squares(_host(g))

    def _forward_wrapper(self, module, label, kind):
        def watch(result):
            self._observe_output(label, kind, _first_array(result))

        return _Hook(self, module.forward, after=watch)

    def _backward_wrapper(self, module, label):
        def watch(args):
            self._observe_grad(label, _first_array(args[0]) if args else None)

        return _Hook(self, module.backward, before=watch)

    def _watch_inline_leaves(self, name, module):
        """Watch the leaves that ``module`` computes itself, without calling their forward
        or backward, where their output and its gradient pass instead (the module
        docstring's list)."""
        from ..nn.transformer import TransformerBlock, TransformerStack
        prefix = f"{name}." if name else ""
        if isinstance(module, TransformerBlock) and prefix + "linear1" in self.module_series:
            label = prefix + "linear1"
            self._wrap(module, "_mlp_hidden", _Hook(
                self, module._mlp_hidden,
                after=lambda _: self._observe_output(label, None, _linear1_output(module))))
            self._wrap(module.dropout, "backward", _Hook(
                self, module.dropout.backward,
                after=lambda grad_u: self._observe_grad(label, _linear1_grad(module, grad_u))))
        if isinstance(module, TransformerStack) and prefix + "pos_embedding" in self.module_series:
            label = prefix + "pos_embedding"
            self._wrap(module, "_run", _Hook(
                self, module._run,
                before=lambda args: self._observe_output(label, None,
                                                         _positions_output(module, *args[:2]))))
            # h = x + pos: dL/d(the positions' rows) = dL/dh, the dx the stack returns
            self._wrap(module, "backward", _Hook(
                self, module.backward,
                after=lambda result: self._observe_grad(label, _first_array(result))))

    def detach(self):
        """Remove every wrapper: the modules behave exactly as before."""
        for module, attribute, before in reversed(self._wrapped):
            if before is _ABSENT:
                module.__dict__.pop(attribute, None)
            else:
                object.__setattr__(module, attribute, before)
        self._wrapped = []
        return self

    @property
    def attached(self):
        return bool(self._wrapped)

    # --- stepping ----------------------------------------------------------------
    def records(self, step):
        """Whether step ``step`` (counting from 1) is recorded: every ``every``-th from the
        first, and the histogram steps."""
        return (step - 1) % self.every == 0 or step in self.histogram_steps

    @property
    def recording(self):
        """Whether the step now running is recorded (and not paused)."""
        return not self._paused and self.records(self._step)

    @contextlib.contextmanager
    def paused(self):
        """Forwards and backwards inside this block are not recorded (evaluation)."""
        self._paused += 1
        try:
            yield self
        finally:
            self._paused -= 1

    def _snapshot(self):
        """Copy the weights if the coming update is to be measured."""
        if not self.records(self._step):
            return
        if self._before is None:
            self._before = {name: np.array(_host(p.data)) for name, p in self.params.items()}
        else:
            for name, p in self.params.items():
                np.copyto(self._before[name], _host(p.data))
        self._before_step = self._step

    def step(self):
        """Close the step that just ended (call right after ``optimizer.step()``)."""
        if self.records(self._step):
            self._record_step()
        self._pending, self._pending_grad, self._pending_hist = {}, {}, {}
        self._step += 1
        self._snapshot()

    def _record_step(self):
        step = self._step
        self.steps.append(step)
        take_hist = step in self.histogram_steps
        for name, p in self.params.items():
            g, w = _host(p.grad), _host(p.data)
            series = self.param_series[name]
            series["grad_norm"].append(_clean(math.sqrt(_sum_of_squares(g))))
            series["grad_mean_abs"].append(
                _clean(np.abs(g).sum(dtype=np.float64) / g.size) if g.size else None)
            series["grad_max_abs"].append(_clean(max(g.max(), -g.min())) if g.size else None)
            series["param_norm"].append(_clean(math.sqrt(_sum_of_squares(w))))
            ratio = None
            if self._before is not None and self._before_step == step:
                w0 = self._before[name]
                w0_norm = math.sqrt(_sum_of_squares(w0))
                if w0_norm > 0:
                    ratio = _clean(math.sqrt(_sum_of_squares(w - w0)) / w0_norm)
            series["update_ratio"].append(ratio)
            if take_hist:
                self.histograms.append({"step": step, "kind": "gradient", "name": name,
                                        **histogram(g, self.bins)})
        for label, series in self.module_series.items():
            total = self._pending.get(label)
            values = finish_stats(total, series["kind"]) if total is not None else {}
            for key in ("mean", "std", "dead", "dead_units", "saturated"):
                if key in values or key in series:
                    series.setdefault(key, [None] * (len(self.steps) - 1))
                    series[key].append(_clean(values.get(key)))
            sq = self._pending_grad.get(label)
            series.setdefault("grad_norm", [None] * (len(self.steps) - 1))
            series["grad_norm"].append(None if sq is None else _clean(math.sqrt(sq)))
        for label, hist in self._pending_hist.items():
            self.histograms.append({"step": step, "kind": "activation", "name": label, **hist})

    # --- results -------------------------------------------------------------------
    def to_dict(self):
        """Everything recorded, as JSON-ready lists (None where there was no value)."""
        modules = {}
        for label, series in self.module_series.items():
            n = len(self.steps)
            modules[label] = {k: (v + [None] * (n - len(v)) if isinstance(v, list) else v)
                              for k, v in series.items()}
        return {"every": self.every, "steps": list(self.steps),
                "parameters": {n: {k: list(v) for k, v in s.items()}
                               for n, s in self.param_series.items()},
                "parameter_shapes": {n: list(p.shape) for n, p in self.params.items()},
                "activations": modules, "histograms": list(self.histograms)}

    def save(self, path):
        """Write ``to_dict()`` as standard JSON, atomically (``fileio.write_json``)."""
        fileio.write_json(path, self.to_dict())
        return path

    @staticmethod
    def load(path, follow_symlinks=True):
        """The dict a ``save`` wrote. A file that is not one (not JSON, too large or deep,
        series of the wrong type or length) is a ``FileError`` naming the file and the
        first problem; ``follow_symlinks=False`` for a file inside a shared run folder."""
        data = fileio.read_json(path, follow_symlinks=follow_symlinks, what="recorder file")
        _, problems = clean_record(data)
        if problems:
            raise FileError(f"recorder file {str(path)!r}: {problems[0]}"
                            + (f" (and {len(problems) - 1} more problems)"
                               if len(problems) > 1 else ""))
        return data

    def __repr__(self):
        return (f"Recorder(every={self.every}, parameters={len(self.params)}, "
                f"modules={len(self.module_series)}, recorded_steps={len(self.steps)}, "
                f"attached={self.attached})")


# --- reading a saved record back ---------------------------------------------------------------
#: The series ``step()`` keeps per parameter, and per watched module.
PARAMETER_SERIES = ("grad_norm", "grad_mean_abs", "grad_max_abs", "param_norm", "update_ratio")
MODULE_SERIES = ("mean", "std", "dead", "dead_units", "saturated", "grad_norm")
HISTOGRAM_KINDS = ("activation", "gradient")
#: Most entries of each kind that ``clean_record`` keeps (the figures stay readable).
MAX_NAMES = 200
MAX_HISTOGRAMS = 2000
MAX_BINS = 10_000


def _number(v):
    """A finite float, or None for anything else (JSON null, text, NaN, huge integers)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        v = float(v)
    except OverflowError:
        return None
    return v if math.isfinite(v) else None


def _series(value, n):
    """``value`` as a list of n floats-or-None, or None when it is not one."""
    if not isinstance(value, list) or len(value) != n:
        return None
    return [_number(v) for v in value]


def _type_name(value):
    return {dict: "an object", list: "a list", str: "a text", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def clean_record(data):
    """(record, problems): the parts of a loaded recorder JSON that are what ``to_dict``
    writes, ready for the figures, and one line for each part that is not (left out, or
    its series replaced by missing values). ``record`` is None when nothing is usable.
    At most ``MAX_NAMES`` parameters and modules and ``MAX_HISTOGRAMS`` histograms are kept."""
    if not isinstance(data, dict):
        return None, [f"expected a JSON object, got {_type_name(data)}"]
    problems = []
    steps = data.get("steps")
    if not isinstance(steps, list) or any(_number(s) is None for s in steps):
        problems.append("'steps' is not a list of numbers")
        steps = []
    n = len(steps)
    record = {"every": data.get("every"), "steps": list(steps), "parameters": {},
              "activations": {}, "histograms": []}
    record["parameters"] = _clean_named(data.get("parameters", {}), "parameters",
                                        PARAMETER_SERIES, n, problems, required=True)
    record["activations"] = _clean_named(data.get("activations", {}), "activations",
                                         MODULE_SERIES, n, problems, required=False)
    record["histograms"] = _clean_histograms(data.get("histograms", []), problems)
    return record, problems


def _clean_named(value, key, series_keys, n, problems, required):
    """{name: {series...}} of 'parameters' or 'activations'. A missing or malformed series
    becomes n missing values when ``required`` (the figures draw every parameter), else is
    left out."""
    if not isinstance(value, dict):
        problems.append(f"'{key}' is {_type_name(value)}, not an object")
        return {}
    out = {}
    for i, (name, entry) in enumerate(value.items()):
        if i == MAX_NAMES:
            problems.append(f"'{key}': only the first {MAX_NAMES} of {len(value)} are shown")
            break
        if not isinstance(entry, dict):
            problems.append(f"'{key}.{name}' is {_type_name(entry)}, not an object")
            continue
        clean = {}
        if key == "activations":
            clean["type"] = entry.get("type") if isinstance(entry.get("type"), str) else None
            kind = entry.get("kind")
            clean["kind"] = kind if kind in ("relu", "tanh", "sigmoid") else None
        for series_key in series_keys:
            if series_key not in entry and not required:
                continue
            series = _series(entry.get(series_key), n)
            if series is None:
                problems.append(f"'{key}.{name}.{series_key}' is not a list of {n} numbers")
                if not required:
                    continue
                series = [None] * n
            clean[series_key] = series
        out[name] = clean
    return out


def _clean_histograms(value, problems):
    if not isinstance(value, list):
        problems.append(f"'histograms' is {_type_name(value)}, not a list")
        return []
    out, bad = [], 0
    for h in value[:MAX_HISTOGRAMS]:
        ok = isinstance(h, dict) and _number(h.get("step")) is not None and \
            h.get("kind") in HISTOGRAM_KINDS and isinstance(h.get("name"), str)
        counts = h.get("counts") if ok else None
        edges = h.get("edges") if ok else None
        ok = ok and isinstance(counts, list) and isinstance(edges, list) and \
            len(counts) <= MAX_BINS and (len(edges) == len(counts) + 1 or not counts and not edges)
        if ok:
            counts, edges = [_number(c) for c in counts], [_number(e) for e in edges]
            ok = None not in counts and None not in edges and all(c >= 0 for c in counts)
        if not ok:
            bad += 1
            continue
        out.append({"step": h["step"], "kind": h["kind"], "name": h["name"],
                    "counts": counts, "edges": edges})
    if bad:
        problems.append(f"{bad} of the histograms are malformed and left out")
    if len(value) > MAX_HISTOGRAMS:
        problems.append(f"only the first {MAX_HISTOGRAMS} of {len(value)} histograms are shown")
    return out


# --- leaves that their parent computes inline ------------------------------------------------
def _linear1_output(block):
    """A TransformerBlock's linear1 output a + b1 (M, F): the block's product a = z W1^T,
    kept for its backward, and the bias the fused bias + GELU adds."""
    a = _host(block._a)
    bias = block.linear1.bias
    return a if bias is None else a + _host(bias.data)


def _linear1_grad(block, grad_u):
    """dL/d(a + b1) (M, F) from dL/du, u = gelu(a + b1): the block's own fused op, run
    once more (on recorded steps only)."""
    from ..backend import backend_of
    B = backend_of(grad_u)
    return B.bias_gelu_backward(grad_u.reshape(block._a.shape), block._a, block._bias1(B),
                                block.activation == "gelu_tanh")


def _positions_output(stack, x, start):
    """What an Embedding of positions start .. start+T-1 would output for x (N, T, E):
    rows pos[start:start+T] for each of the N sequences, (N, T, E) (a broadcast view)."""
    n, steps = x.shape[0], x.shape[1]
    rows = _host(stack.pos_embedding.weight.data[start:start + steps])
    return np.broadcast_to(rows, (n,) + rows.shape)


class _Hook:
    """What stands in for a module's ``forward`` or ``backward`` while it is watched:
    calls the original and shows the recorder its arguments (``before``) or its result
    (``after``). A deep copy of a watched module gets the plain method back (bound to
    the copy), so copies neither record nor call into the original."""

    def __init__(self, recorder, original, before=None, after=None):
        self.recorder, self.original = recorder, original
        self.before, self.after = before, after
        self.__wrapped__ = original

    def __call__(self, *args, **kwargs):
        recording = self.recorder.recording
        if recording and self.before is not None:
            self.before(args)
        result = self.original(*args, **kwargs)
        if recording and self.after is not None:
            self.after(result)
        return result

    def __deepcopy__(self, memo):
        return copy.deepcopy(self.original, memo)


class _Absent:
    def __repr__(self):
        return "<absent>"


_ABSENT = _Absent()
