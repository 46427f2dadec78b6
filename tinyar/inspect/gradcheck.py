"""Central-difference gradient checking in float64.

For a layer y = f(x; W) we check the hand-written backward against

    dL/dx_i ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps),   L = sum(R * y)

with R a fixed random array (so every output element is tested), and the
same for every parameter entry. A loss (a module whose forward returns a
scalar) is checked with L = R * loss. The module is copied and converted to
float64 first, so the check measures the math, not float32 rounding; the
error of central differences is O(eps^2) and, in float64 with eps = 1e-6,
well under 1e-6 relative for smooth functions.

Randomness (dropout) is made repeatable by reseeding tinyar's generator
before every forward call.
"""
import copy
from dataclasses import dataclass
from typing import List

import numpy as np

from ..random import generator, manual_seed


@dataclass
class GradError:
    name: str
    shape: tuple
    max_abs_error: float
    rel_error: float  # max |analytic - numeric| / max(|analytic|, |numeric|) over the tensor

    def ok(self, tol):
        return self.rel_error <= tol


class GradcheckReport:
    """Per-tensor errors; ``print(report)`` shows a table, ``report.ok()`` a verdict."""

    def __init__(self, title, rows: List[GradError], tol):
        self.title, self.rows, self.tol = title, rows, tol

    @property
    def max_rel_error(self):
        return max((r.rel_error for r in self.rows), default=0.0)

    def ok(self, tol=None):
        return all(r.ok(self.tol if tol is None else tol) for r in self.rows)

    def __getitem__(self, name):
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def __str__(self):
        head = f"gradcheck {self.title}  (float64 central differences, tolerance {self.tol:g})"
        width = max([len(r.name) for r in self.rows] + [6])
        lines = [head, f"  {'tensor':<{width}}  {'shape':<16} {'max abs err':>12} "
                       f"{'rel err':>10}  ok"]
        for r in self.rows:
            lines.append(f"  {r.name:<{width}}  {str(r.shape):<16} {r.max_abs_error:>12.3e} "
                         f"{r.rel_error:>10.3e}  {'yes' if r.ok(self.tol) else 'NO'}")
        return "\n".join(lines)

    __repr__ = __str__


def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


def _is_float_array(x):
    return isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)


def gradcheck(module, *inputs, eps=1e-6, tol=1e-6, seed=0, check_params=True):
    """Compare ``module``'s backward with central differences; returns a report.

    ``inputs``: float arrays are differentiated; anything else (integer
    targets, indices) is passed as it is. Nothing of ``module`` is changed: a
    float64 copy is checked.
    """
    model = copy.deepcopy(module).double()
    inputs = [x.astype(np.float64) if _is_float_array(x) else x for x in inputs]
    saved_state = copy.deepcopy(generator().bit_generator.state)

    def run_forward():
        manual_seed(seed)
        return _as_tuple(model(*inputs))

    outputs = run_forward()
    rng = np.random.default_rng(seed + 1)
    projections = [rng.standard_normal(np.shape(y)) for y in outputs]

    def objective():
        return float(sum(np.sum(r * np.asarray(y, dtype=np.float64))
                         for r, y in zip(projections, run_forward())))

    # analytic gradients
    model.zero_grad()
    run_forward()
    grads = [r if np.ndim(r) else float(r) for r in projections]
    input_grads = _as_tuple(model.backward(*grads))
    analytic = {}
    float_inputs = [i for i, x in enumerate(inputs) if _is_float_array(x)]
    for k, i in enumerate(float_inputs):
        if k < len(input_grads) and input_grads[k] is not None:
            analytic[f"input[{i}]"] = (inputs[i], np.array(input_grads[k]))
    if check_params:
        for name, p in model.named_parameters():
            analytic[name] = (p.data, p.grad.copy())

    rows = []
    for name, (array, grad) in analytic.items():
        numeric = np.zeros_like(array, dtype=np.float64)
        flat_x, flat_n = array.reshape(-1), numeric.reshape(-1)
        for j in range(flat_x.size):
            old = flat_x[j]
            flat_x[j] = old + eps
            plus = objective()
            flat_x[j] = old - eps
            minus = objective()
            flat_x[j] = old
            flat_n[j] = (plus - minus) / (2 * eps)
        diff = np.abs(grad.reshape(numeric.shape) - numeric)
        scale = max(np.abs(grad).max(initial=0.0), np.abs(numeric).max(initial=0.0), 1e-300)
        rows.append(GradError(name, tuple(array.shape), float(diff.max(initial=0.0)),
                              float(diff.max(initial=0.0) / scale)))
    generator().bit_generator.state = saved_state
    from ..nn.checks import describe
    return GradcheckReport(describe(module), rows, tol)
