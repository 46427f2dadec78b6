"""Every op of every backend against the NumPy expression listed in backend/ops."""
import numpy as np
import pytest

from tinyar.backend.ops import REGISTRY

OPS = sorted(REGISTRY)


def _noncontiguous(a):
    """The same values as a strided (non-contiguous) view."""
    if not isinstance(a, np.ndarray) or a.ndim == 0 or a.size < 2:
        return a
    wide = np.empty(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    view = wide[..., ::2]
    assert not view.flags.c_contiguous
    return view


def _copy(v):
    """A fresh copy with the same layout: a strided view stays a strided view."""
    if not isinstance(v, np.ndarray):
        return v
    if v.ndim == 0 or v.flags.c_contiguous:
        return v.copy()
    return _noncontiguous(v.copy())


def _on_backend(backend, v):
    """A fresh copy of argument ``v`` on ``backend``: device arrays for CUDA, with the
    same layout (a strided host view becomes a strided device view)."""
    if backend.name == "cpu" or not isinstance(v, np.ndarray):
        return _copy(v)
    if v.ndim == 0 or v.flags.c_contiguous:
        return backend.asarray(v)
    wide = np.empty(v.shape[:-1] + (2 * v.shape[-1],), v.dtype)
    wide[..., ::2] = v
    return backend.asarray(wide)[(slice(None),) * (v.ndim - 1) + (slice(None, None, 2),)]


def test_every_op_is_implemented(backend):
    missing = [name for name in OPS if not callable(getattr(backend, name, None))]
    assert not missing, f"backend {backend.name} lacks ops {missing}"


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", OPS)
def test_op_matches_reference(backend, name, dtype, layout):
    spec = REGISTRY[name]
    args = spec.example(np.random.default_rng(7), dtype)
    if layout == "strided":
        args = {k: (v if k in spec.contiguous or k in spec.inplace else _noncontiguous(v))
                for k, v in args.items()}
    reference_args = {k: _copy(v) for k, v in args.items()}
    expected = spec.reference(**reference_args)
    expected = expected if isinstance(expected, tuple) else (expected,)

    call_args = {k: _on_backend(backend, v) for k, v in args.items()}
    if layout == "strided" and backend.name == "cpu":
        strided = [k for k, v in call_args.items() if isinstance(v, np.ndarray) and v.ndim
                   and v.size > 1 and not v.flags.c_contiguous]
        eligible = [k for k, v in args.items() if isinstance(v, np.ndarray) and v.ndim
                    and v.size > 1 and k not in spec.contiguous and k not in spec.inplace]
        assert strided == eligible, "the strided variant must pass strided arrays"
    result = getattr(backend, name)(**call_args)
    if spec.inplace:
        got = tuple(call_args[k] for k in spec.inplace)
        expected = expected[:len(spec.inplace)]
    else:
        got = result if isinstance(result, tuple) else (result,)
    tol = dict(rtol=spec.rtol32, atol=spec.atol32) if dtype == np.float32 else dict(rtol=1e-10,
                                                                                     atol=1e-12)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        g = backend.to_host(g)
        assert np.shape(g) == np.shape(e), f"{name} output {i}: shape {np.shape(g)} != {np.shape(e)}"
        if isinstance(g, np.ndarray) and np.issubdtype(g.dtype, np.floating):
            assert g.dtype == dtype, f"{name} output {i} has dtype {g.dtype}, expected {dtype}"
        np.testing.assert_allclose(g, e, err_msg=f"{name} output {i}", **tol)
