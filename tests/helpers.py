"""Test helpers: gradient checks and side-by-side comparison with PyTorch.

``compare_with_torch`` is in the spirit of tinygrad's ``helper_test_op``: it
loads our layer's weights into its torch twin by name, runs both forward and
backward on the same inputs and upstream gradient, and compares outputs,
input gradients and every parameter gradient.
"""
import numpy as np
import pytest

from tinyar.inspect import gradcheck

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}


def torch_or_skip():
    return pytest.importorskip(
        "torch", reason="torch is not installed: the side-by-side PyTorch tests need the "
                        "'compare' extra (pip install -e .[compare])")


def assert_gradcheck(module, *inputs, tol=1e-6, **kwargs):
    report = gradcheck(module, *inputs, tol=tol, **kwargs)
    assert report.rows, "gradcheck checked nothing"
    assert report.ok(), f"\n{report}"
    return report


def _to_torch(torch, x, requires_grad):
    t = torch.from_numpy(np.array(x))
    if requires_grad and t.is_floating_point():
        t.requires_grad_(True)
    return t


def _close(name, ours, theirs, dtype):
    tol = TOL[np.dtype(dtype).type]
    np.testing.assert_allclose(np.asarray(ours, dtype=np.float64),
                               np.asarray(theirs, dtype=np.float64), err_msg=name, **tol)


def load_into_torch(ours, theirs):
    """Copy our state_dict into the torch twin (names must match 1:1)."""
    torch = torch_or_skip()
    state = {k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)


def compare_with_torch(ours, theirs, *inputs, dtype=np.float64, seed=0, grad_inputs=True,
                       train=True, upstream=None):
    """Same weights, same inputs: same outputs, input gradients and parameter gradients.

    ``ours`` and ``theirs`` may be layers (upstream gradient R: random) or
    losses (scalar output; upstream 1). Returns (our output, torch output).
    """
    torch = torch_or_skip()
    ours.to(dtype)
    theirs.to({np.float64: torch.float64, np.float32: torch.float32}[np.dtype(dtype).type])
    ours.train(train)
    theirs.train(train)
    load_into_torch(ours, theirs)
    inputs = [x.astype(dtype) if np.issubdtype(np.asarray(x).dtype, np.floating) else x
              for x in inputs]
    t_inputs = [_to_torch(torch, x, grad_inputs) for x in inputs]

    y = ours(*inputs)
    ty = theirs(*t_inputs)
    multi = isinstance(y, tuple)
    ys, tys = (y, ty) if multi else ((y,), (ty,))
    for i, (a, b) in enumerate(zip(ys, tys)):
        _close(f"output[{i}]", a, b.detach().numpy(), dtype)

    rng = np.random.default_rng(seed)
    if upstream is None:
        upstream = [rng.standard_normal(np.shape(a)).astype(dtype) if np.ndim(a) else 1.0
                    for a in ys]
    ours.zero_grad()
    theirs.zero_grad(set_to_none=True)
    grads_in = ours.backward(*upstream)
    total = sum((b * torch.as_tensor(np.asarray(r), dtype=b.dtype)).sum()
                for b, r in zip(tys, upstream))
    total.backward()

    if grad_inputs:
        grads_in = grads_in if isinstance(grads_in, tuple) else (grads_in,)
        float_t = [t for t in t_inputs if t.is_floating_point()]
        for i, (g, t) in enumerate(zip(grads_in, float_t)):
            if g is not None:
                _close(f"grad input[{i}]", g, t.grad.numpy(), dtype)
    t_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert name in t_params, f"torch twin has no parameter {name!r}"
        tg = t_params[name].grad
        _close(f"grad {name}", p.grad, np.zeros(p.shape) if tg is None else tg.numpy(), dtype)
    return y, ty
