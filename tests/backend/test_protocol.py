"""The backend protocol: both backends provide exactly the declared ops and memory
functions (``backend/ops``), with the same signatures, imported by name from their
topic files."""
import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

from tinyar.backend import get_backend, ops
from tinyar.backend.ops import MEMORY, REGISTRY, TOPICS, protocol

BACKEND_DIR = Path(ops.__file__).parent.parent


def _backend_module(device):
    pytest.importorskip("numba.cuda") if device == "cuda" else None
    return get_backend(device)


def test_the_protocol_is_the_ops_and_the_memory_functions():
    assert set(protocol()) == set(REGISTRY) | set(MEMORY)
    assert not set(REGISTRY) & set(MEMORY)
    # every op is registered by the reference file of its topic
    assert {spec.reference.__module__.rsplit(".", 1)[-1] for spec in REGISTRY.values()} == \
        set(TOPICS) - {"memory"}


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_backend_provides_exactly_the_protocol(device):
    B = _backend_module(device)
    assert sorted(B.__all__) == sorted(["name"] + protocol())
    missing = [n for n in protocol() if not callable(getattr(B, n, None))]
    assert not missing, f"{device} lacks {missing}"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_each_op_is_imported_by_name_from_its_topic_file(device):
    """``B.lstm_sequence_forward`` leads a reader to ``backend/<device>/rnn.py``: the
    backend's __init__ imports each name explicitly from the file of its topic."""
    tree = ast.parse((BACKEND_DIR / device / "__init__.py").read_text())
    imported = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in TOPICS:
            for alias in node.names:
                imported[alias.asname or alias.name] = node.module
    expected = {name: spec.reference.__module__.rsplit(".", 1)[-1]
                for name, spec in REGISTRY.items()}
    expected.update({name: "memory" for name in MEMORY})
    assert imported == expected
    for topic in TOPICS:
        assert (BACKEND_DIR / device / f"{topic}.py").exists()


def test_both_backends_have_the_same_signatures():
    pytest.importorskip("numba.cuda")
    cpu, cuda = get_backend("cpu"), get_backend("cuda")
    differ = []
    for name in protocol():
        a, b = inspect.signature(getattr(cpu, name)), inspect.signature(getattr(cuda, name))
        if a != b:
            differ.append(f"{name}: cpu{a} cuda{b}")
    assert not differ, "\n".join(differ)


def test_memory_functions_mean_what_ops_memory_declares(backend):
    rng = np.random.default_rng(0)
    host = rng.standard_normal((3, 4)).astype(np.float32)
    x = backend.asarray(host)
    assert backend.is_array(x) and not backend.is_array([1.0])
    assert backend.asarray(x) is x
    np.testing.assert_array_equal(backend.to_host(x), host)
    np.testing.assert_array_equal(backend.to_host(backend.zeros((2, 3), np.float64)),
                                  np.zeros((2, 3)))
    empty = backend.empty((2, 5), np.float64)
    assert empty.shape == (2, 5) and empty.dtype == np.float64
    copied = backend.copy(x)
    assert copied is not x
    np.testing.assert_array_equal(backend.to_host(copied), host)
    column = x[:, 1:3]
    contiguous = backend.contiguous(column)
    np.testing.assert_array_equal(backend.to_host(contiguous), host[:, 1:3])
    assert backend.contiguous(contiguous) is contiguous
    np.testing.assert_array_equal(backend.to_host(backend.copy(column)), host[:, 1:3])
    assert isinstance(backend.workspace_bytes(), int) and backend.workspace_bytes() >= 1 << 20
    assert isinstance(backend.multiplies_stacks(), bool)
