import os

import numpy as np
import pytest

import tinyar
from tinyar import nn
from tinyar.errors import CheckpointError


def model():
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))


def test_save_load_round_trip_with_meta(tmp_path):
    a, b = model(), model()
    path = tinyar.save(a, tmp_path / "ckpt.npz", meta={"vocab": ["a", "b"], "hidden": 5})
    meta = tinyar.load(b, path)
    assert meta == {"vocab": ["a", "b"], "hidden": 5}
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


def test_file_is_plain_npz_without_pickle(tmp_path):
    path = tinyar.save(model(), tmp_path / "m", meta={"x": 1})
    assert path.endswith(".npz")
    with np.load(path, allow_pickle=False) as data:  # would raise if anything were pickled
        assert "model/0.weight" in data.files and "__tinyar__" in data.files


def test_write_is_atomic_no_temporary_left(tmp_path):
    tinyar.save(model(), tmp_path / "m.npz")
    assert os.listdir(tmp_path) == ["m.npz"]


def test_failed_write_keeps_the_old_checkpoint(tmp_path):
    path = tinyar.save(model(), tmp_path / "m.npz", meta={"version": 1})
    with pytest.raises(CheckpointError, match="JSON"):
        tinyar.save(model(), path, meta={"bad": object()})
    assert tinyar.load(model(), path) == {"version": 1}
    assert os.listdir(tmp_path) == ["m.npz"]


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        tinyar.load(model(), tmp_path / "nope.npz")


def test_truncated_file(tmp_path):
    path = tinyar.save(model(), tmp_path / "m.npz")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not an .npz file"):
        tinyar.load(model(), path)


def test_mismatched_shapes_name_the_key(tmp_path):
    path = tinyar.save(nn.Sequential(nn.Linear(3, 7), nn.ReLU(), nn.Linear(7, 2)), tmp_path / "m")
    with pytest.raises(CheckpointError, match=r"'model/0.weight' has shape \(7, 3\).*\(5, 3\)"):
        tinyar.load(model(), path)


def test_missing_keys_are_named(tmp_path):
    path = tinyar.save(nn.Sequential(nn.Linear(3, 5)), tmp_path / "m")
    with pytest.raises(CheckpointError, match="missing keys.*2.weight"):
        tinyar.load(model(), path)


def test_foreign_npz_is_rejected(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a tinyar checkpoint"):
        tinyar.load(model(), tmp_path / "other.npz")


def test_optimizer_state_round_trip_resumes_the_same_trajectory(tmp_path):
    from tinyar.optim import Adam
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)

    def train(m, opt, steps):
        for _ in range(steps):
            m.zero_grad()
            y = m(x)
            m.backward(2 * y / y.size)  # d/dy mean(y^2)
            opt.step()

    tinyar.manual_seed(0)
    a = model()
    opt_a = Adam(a.parameters(), lr=0.01)
    train(a, opt_a, 3)
    path = tinyar.save(a, tmp_path / "m", optimizer=opt_a)
    train(a, opt_a, 3)

    b = model()
    opt_b = Adam(b.parameters(), lr=0.5)
    tinyar.load(b, path, optimizer=opt_b)
    assert opt_b.param_groups[0]["lr"] == 0.01
    train(b, opt_b, 3)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


def test_optimizer_class_mismatch_is_explained(tmp_path):
    from tinyar.optim import SGD, Adam
    m = model()
    path = tinyar.save(m, tmp_path / "m", optimizer=SGD(m.parameters(), lr=0.1, momentum=0.9))
    with pytest.raises(CheckpointError, match="SGD optimizer, not of a Adam"):
        tinyar.load(m, path, optimizer=Adam(m.parameters()))
