"""Hostile checkpoints: every tampered file is a one-line CheckpointError (or FileError),
never a MemoryError, a hang, a raw traceback or a silently wrong model.

Each class of attack is tried on many generated cases: members of the wrong shape or
dtype, NaN weights, huge compressed members, absurd or mistyped JSON configs, forged
optimizer and extra state, truncated and bit-flipped files, FIFOs, directories and
symlinks where the checkpoint should be.
"""
import io
import json
import os
import signal
import stat
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tinyar
from tinyar import checkpoint, fileio, nn
from tinyar.errors import CheckpointError, FileError, TinyarError
from tinyar.models import AutoregressiveLM, CNNClassifier, RowRNNClassifier, classifier_from_config
from tinyar.data.hierarchy import ClassHierarchy
from tinyar.optim import SGD, Adagrad, Adam, AdamW, RMSprop
from tinyar.optim.lr_scheduler import CosineAnnealingLR, ReduceLROnPlateau, StepLR

REFUSED = (CheckpointError, FileError)
HYPOTHESIS = settings(max_examples=40, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- helpers --------------------------------------------------------------------------------
def small_model():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def lm(**kw):
    config = dict(vocab_size=11, embed_dim=4, hidden_size=5, num_layers=1, head="flat")
    config.update(kw)
    return AutoregressiveLM(**config)


def trained(model, optimizer):
    """One step, so that the optimizer state is not all zeros."""
    x = np.random.default_rng(0).integers(0, model.vocab_size, (2, 6))
    model.loss(x, x)
    model.backward()
    optimizer.step()


def lm_checkpoint(tmp_path, name="model.npz", optimizer_class=Adam, extra=None):
    model = lm()
    optimizer = optimizer_class(model.parameters(), lr=0.01)
    trained(model, optimizer)
    path = checkpoint.save(model, tmp_path / name, meta={"model": model.config()},
                           optimizer=optimizer, extra=extra)
    return path, model, optimizer


def contents(path):
    """(arrays, header) of a checkpoint, read with NumPy (the test trusts its own files)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads(str(arrays.pop("__tinyar__")))


def forge(path, arrays, header, out=None, compress=False, allow_pickle=False):
    """Write ``arrays`` and ``header`` as a checkpoint (not through tinyar: anything goes)."""
    out = out or path
    members = dict(arrays, __tinyar__=np.array(json.dumps(header)))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) \
            as zf:
        for name, value in members.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=allow_pickle)
            zf.writestr(name + ".npy", buf.getvalue())
    return out


def add_member(path, name, header, data=b"", compress=zipfile.ZIP_DEFLATED):
    """Append a member whose .npy header is ``header`` followed by ``data``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(name + ".npy", buf.getvalue() + data, compress_type=compress)


def assert_one_line(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message and message.strip() == message and message


def refused(call, match=None):
    with pytest.raises(REFUSED, match=match) as info:
        call()
    assert_one_line(info)
    return str(info.value)


def peak_bytes(call):
    """(result or exception, the peak of Python-tracked memory while ``call`` ran)."""
    tracemalloc.start()
    try:
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 - the caller asserts on it
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- 1. members nobody asks for are never read ------------------------------------------------
@pytest.mark.parametrize("name", ["junk", "model/zzz.extra", "optim/state/planted",
                                  "extra/unreferenced", "__tinyar__2"])
@pytest.mark.parametrize("declared", [2**24, 2**28, 2**31])
def test_a_large_compressed_member_nobody_asks_for_is_never_inflated(tmp_path, name, declared):
    path, model, optimizer = lm_checkpoint(tmp_path)
    # 32 MiB of zeros that deflate to ~32 KiB, behind a header declaring up to 16 GiB
    add_member(path, name, {"descr": "<f8", "fortran_order": False, "shape": (declared,)},
               b"\0" * 2**25)
    assert os.path.getsize(path) < 2**20
    strict = not name.startswith("model/")
    result, peak = peak_bytes(lambda: checkpoint.load(lm(), path, optimizer=Adam(lm()),
                                                      strict=strict))
    assert not isinstance(result, Exception), result
    assert peak < 16 * 2**20
    for call in (lambda: checkpoint.read_meta(path), lambda: checkpoint.read_extra(path)):
        result, peak = peak_bytes(call)
        assert not isinstance(result, Exception) and peak < 16 * 2**20


def test_an_unexpected_model_member_is_named_when_strict(tmp_path):
    path, _, _ = lm_checkpoint(tmp_path)
    add_member(path, "model/planted", {"descr": "<f4", "fortran_order": False, "shape": (2,)},
               b"\0" * 8)
    refused(lambda: checkpoint.load(lm(), path), match=r"unexpected keys \['planted'\]")


def _patch_declared_size(path, member, size):
    """Rewrite the central directory so that ``member`` claims ``size`` uncompressed bytes
    (a forged zip: the data stays as it is)."""
    data = bytearray(open(path, "rb").read())
    entry = data.rfind(b"PK\x01\x02", 0, data.rfind((member + ".npy").encode()))
    struct.pack_into("<I", data, entry + 24, size)
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("shape", [(2**28,), (2**13, 2**15), (2**27, 2)])
def test_a_forged_zip_directory_cannot_make_build_or_read_allocate(tmp_path, shape):
    """The zip directory claims 4 GiB for a member whose .npy header declares 2 GiB; the file
    holds a few KiB. A deflated member cannot inflate more than ~1032-fold: refused."""
    model = nn.Sequential(nn.Linear(2, 2))
    path = checkpoint.save(model, tmp_path / "m.npz")
    arrays, header = contents(path)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                               "shape": shape})
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("model/big.npy", buf.getvalue() + b"\0" * 1000,
                    compress_type=zipfile.ZIP_DEFLATED)
    _patch_declared_size(path, "model/big", 2**32 - 1)
    for call in (lambda: checkpoint.read(path),
                 lambda: checkpoint.build(path, lambda meta: nn.Sequential(nn.Linear(2, 2)))):
        result, peak = peak_bytes(call)
        assert isinstance(result, CheckpointError), result
        assert "cannot hold" in str(result) and peak < 16 * 2**20


def test_a_declared_size_beyond_this_machines_memory_is_refused_with_the_figure(
        tmp_path, monkeypatch):
    path, _, _ = lm_checkpoint(tmp_path)
    monkeypatch.setattr(checkpoint, "physical_memory", lambda: 1000)
    message = refused(lambda: checkpoint.build(
        path, lambda meta: AutoregressiveLM.from_config(meta["model"])), match="memory")
    assert "1,000 bytes" in message
    refused(lambda: checkpoint.read(path), match=r"more than this machine's memory \(1,000")


# --- 2. members of the wrong shape or dtype ---------------------------------------------------
BAD_DTYPES = [np.int8, np.int32, np.int64, np.uint8, np.uint64, np.bool_, np.complex64,
              np.complex128, "U4", "S4"]


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=str)
@pytest.mark.parametrize("member", ["model/0.weight", "model/0.bias", "model/1.running_mean",
                                    "model/1.weight", "model/3.weight"])
def test_weights_that_are_not_real_floats_are_refused(tmp_path, dtype, member):
    path = checkpoint.save(small_model(), tmp_path / "m.npz")
    arrays, header = contents(path)
    arrays[member] = np.ones(arrays[member].shape).astype(dtype)
    forge(path, arrays, header)
    model = small_model()
    before = model.state_dict()
    message = refused(lambda: checkpoint.load(model, path), match=repr(member))
    assert "holds" in message
    for name, value in model.state_dict().items():  # nothing was changed
        np.testing.assert_array_equal(value, before[name])


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    path = checkpoint.save(small_model(), tmp_path / "m.npz")
    arrays, header = contents(path)
    arrays["model/0.bias"] = np.array([object()] * 4, dtype=object)
    forge(path, arrays, header, allow_pickle=True)
    refused(lambda: checkpoint.load(small_model(), path), match="object")


@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.uint8, np.uint64])
def test_num_batches_tracked_stays_an_integer(tmp_path, dtype):
    path = checkpoint.save(small_model(), tmp_path / "m.npz")
    arrays, header = contents(path)
    arrays["model/1.num_batches_tracked"] = np.array(7).astype(dtype)
    forge(path, arrays, header)
    model = small_model()
    if np.dtype(dtype).kind == "f":
        refused(lambda: checkpoint.load(model, path), match="integers")
    else:
        checkpoint.load(model, path)
        assert model[1].num_batches_tracked.dtype == np.int64
        assert int(model[1].num_batches_tracked) == 7


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_every_real_float_is_accepted_and_converted(tmp_path, dtype):
    source = small_model()
    path = checkpoint.save(source, tmp_path / "m.npz")
    arrays, header = contents(path)
    arrays = {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in arrays.items()}
    forge(path, arrays, header)
    model = small_model()
    checkpoint.load(model, path)
    assert model.dtype == np.float32
    np.testing.assert_allclose(model[0].weight.data, source[0].weight.data,
                               rtol=1e-3 if dtype == np.float16 else 1e-7)


@pytest.mark.parametrize("value", [1e39, -1e300])
def test_a_float64_beyond_float32_is_refused_not_turned_into_inf(tmp_path, value):
    path = checkpoint.save(small_model(), tmp_path / "m.npz")
    arrays, header = contents(path)
    arrays["model/0.weight"] = arrays["model/0.weight"].astype(np.float64)
    arrays["model/0.weight"][1, 2] = value
    forge(path, arrays, header)
    refused(lambda: checkpoint.load(small_model(), path), match="largest float32")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(member=st.sampled_from(["model/0.weight", "model/0.bias", "model/1.running_var",
                               "model/3.weight"]),
       shape=st.lists(st.integers(0, 6), min_size=0, max_size=3))
def test_members_of_another_shape_are_refused_naming_both_shapes(tmp_path, member, shape):
    path = checkpoint.save(small_model(), tmp_path / "m.npz")
    arrays, header = contents(path)
    expected = arrays[member].shape
    if tuple(shape) == expected:
        return
    arrays[member] = np.zeros(shape, np.float32)
    forge(path, arrays, header)
    message = refused(lambda: checkpoint.load(small_model(), path), match=repr(member))
    assert str(tuple(shape)) in message and str(expected) in message


@pytest.mark.parametrize("name", ["0.weight", "1.running_var", "1.num_batches_tracked"])
def test_missing_members_are_named(tmp_path, name):
    path = checkpoint.save(small_model(), tmp_path / "m.npz")
    arrays, header = contents(path)
    del arrays[f"model/{name}"]
    forge(path, arrays, header)
    refused(lambda: checkpoint.load(small_model(), path), match=rf"missing keys \['{name}'\]")
    checkpoint.load(small_model(), path, strict=False)  # what is there loads


def test_a_file_without_the_header_is_not_a_checkpoint(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    for reader in (lambda p: checkpoint.load(small_model(), p), checkpoint.read_meta,
                   checkpoint.read_extra, checkpoint.read):
        refused(lambda: reader(tmp_path / "other.npz"), match="not a tinyar checkpoint")


# --- 3. NaN and infinite weights --------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("count", [1, 3, 12])
@pytest.mark.parametrize("name", ["0.weight", "3.bias", "1.running_mean"])
def test_nan_and_inf_weights_are_refused_with_the_name_and_the_count(tmp_path, bad, count,
                                                                     name):
    path = checkpoint.save(small_model(), tmp_path / "m.npz")
    arrays, header = contents(path)
    flat = arrays[f"model/{name}"].reshape(-1)
    count = min(count, flat.size)
    flat[:count] = bad
    forge(path, arrays, header)
    message = refused(lambda: checkpoint.load(small_model(), path), match=f"'{name}'")
    assert f"holds {count} NaN or infinite" in message and "diverged" in message


def test_a_negative_running_variance_is_refused(tmp_path):
    path = checkpoint.save(small_model(), tmp_path / "m.npz")
    arrays, header = contents(path)
    arrays["model/1.running_var"][2] = -0.5
    forge(path, arrays, header)
    refused(lambda: checkpoint.load(small_model(), path), match="running_var.*variance")


def test_sampling_from_nan_weights_is_refused_not_printed_as_spaces(tmp_path):
    model = lm()
    model.head.linear.weight.data[0, 0] = np.nan
    with pytest.raises(tinyar.NumericalError, match="NaN"):
        model.generate([1, 2], 3)
    # ... and such a model is never saved, so the last good checkpoint stays
    good = checkpoint.save(lm(), tmp_path / "m.npz", meta={"v": 1})
    refused(lambda: checkpoint.save(model, good), match="head.linear.weight.*NaN")
    assert checkpoint.read_meta(good) == {"v": 1}
    assert os.listdir(tmp_path) == ["m.npz"]


# --- 4. the JSON config: absurd sizes, wrong types, missing keys --------------------------------
SIZE_KEYS = ["vocab_size", "embed_dim", "hidden_size", "num_layers", "kernel_size",
             "num_heads", "context"]
TRANSFORMER = dict(backbone="transformer", embed_dim=4, hidden_size=4, num_heads=2, context=8)


def _with_config(tmp_path, change, backbone="rnn"):
    model = lm(**TRANSFORMER) if backbone == "transformer" else lm(backbone=backbone)
    path = checkpoint.save(model, tmp_path / "model.npz", meta={"model": model.config()})
    arrays, header = contents(path)
    change(header["meta"]["model"])
    return forge(path, arrays, header)


def build_lm(path):
    return checkpoint.build(path, lambda meta: AutoregressiveLM.from_config(meta["model"]))


@pytest.mark.parametrize("backbone", ["rnn", "conv", "transformer"])
@pytest.mark.parametrize("key", SIZE_KEYS + ["width"])
@pytest.mark.parametrize("value", [40_000, 10**6, 2**31 - 1, 2**31, 10**12, 10**30])
def test_absurd_sizes_are_refused_before_allocating(tmp_path, backbone, key, value):
    """Sizes whose model would need far more than 100 GB: refused within a few MB.
    ``width``: a transformer's embed_dim and hidden_size together (they must be equal)."""
    uses = {"rnn": SIZE_KEYS[:4], "conv": SIZE_KEYS[:5],
            "transformer": SIZE_KEYS[:4] + ["context", "width"]}
    if key not in uses[backbone]:  # a size this backbone does not read
        return
    if key == "width" and value >= 10**6:
        value = value - value % 2  # divisible by num_heads: refused for its size alone
    keys = ("embed_dim", "hidden_size") if key == "width" else (key,)
    path = _with_config(tmp_path, lambda c: c.update({k: value for k in keys}), backbone)
    result, peak = peak_bytes(lambda: build_lm(path))
    assert isinstance(result, CheckpointError), result
    assert "\n" not in str(result) and repr(str(path)) in str(result)
    assert peak < 32 * 2**20


@pytest.mark.parametrize("key", SIZE_KEYS)
@pytest.mark.parametrize("value", [0, -1, -(2**40), 2.5, 6.0, "6", None, True, [6], {"n": 6}])
def test_sizes_of_the_wrong_type_or_range_name_the_key(tmp_path, key, value):
    path = _with_config(tmp_path, lambda c: c.update({key: value}))
    message = refused(lambda: build_lm(path), match=key)
    assert repr(value) in message or str(value) in message


@pytest.mark.parametrize("key, value", [
    ("cell", "transformer"), ("cell", 3), ("cell", None), ("head", "tree"), ("head", ["flat"]),
    ("backbone", "mlp"), ("dropout", 1.0), ("dropout", -0.1), ("dropout", "0.1"),
    ("dropout", None), ("tie_weights", "yes"), ("tie_weights", 2), ("tie_weights", None)])
def test_options_of_the_wrong_type_or_value_name_the_key(tmp_path, key, value):
    path = _with_config(tmp_path, lambda c: c.update({key: value}))
    refused(lambda: build_lm(path), match=key)


# (num_heads, context and activation may be missing: a checkpoint from before the transformer
# backbone means their defaults, tests/models/test_gpt.py)
@pytest.mark.parametrize("key", SIZE_KEYS[:5] + ["cell", "dropout", "head", "tie_weights",
                                                 "backbone"])
def test_missing_and_unknown_config_keys_are_named(tmp_path, key):
    path = _with_config(tmp_path, lambda c: c.pop(key))
    refused(lambda: build_lm(path), match=rf"missing keys \['{key}'\]")
    path = _with_config(tmp_path, lambda c: c.update({key + "_x": 1}))
    refused(lambda: build_lm(path), match=rf"unknown keys \['{key}_x'\]")


@pytest.mark.parametrize("config", [None, [], "lstm", 3, {"model": {}}])
def test_a_config_that_is_not_an_object_is_refused(tmp_path, config):
    model = lm()
    path = checkpoint.save(model, tmp_path / "m.npz", meta={"model": config})
    refused(lambda: build_lm(path), match="JSON object|missing keys")


@pytest.mark.parametrize("meta", [None, [1], "x", 3, {"other": 1}])
def test_build_needs_a_meta_object_holding_the_config(tmp_path, meta):
    path = checkpoint.save(lm(), tmp_path / "m.npz", meta=meta)
    refused(lambda: build_lm(path), match="its meta")


def test_contradictory_settings_are_refused(tmp_path):
    path = _with_config(tmp_path, lambda c: c.update(tie_weights=True))
    refused(lambda: build_lm(path), match="tie_weights needs embed_dim == hidden_size")
    path = _with_config(tmp_path, lambda c: c.update(tie_weights=True, head="multilevel"))
    refused(lambda: build_lm(path), match="tie_weights needs head='flat'")


def test_a_config_that_fits_another_model_is_a_shape_error_naming_the_member(tmp_path):
    path = _with_config(tmp_path, lambda c: c.update(hidden_size=6))
    refused(lambda: build_lm(path), match=r"'model/backbone.weight_ih_l0' has shape \(20, 4\), "
                                          r"the model expects \(24, 4\)")


@HYPOTHESIS
@given(config=st.dictionaries(st.sampled_from(SIZE_KEYS + ["cell", "head", "dropout",
                                                           "tie_weights", "backbone", "zz"]),
                              st.one_of(st.integers(-10, 10**9), st.floats(allow_nan=False),
                                        st.text(max_size=5), st.booleans(), st.none()),
                              max_size=11))
def test_any_generated_config_is_built_or_refused_in_one_line(tmp_path, config):
    model = lm()
    path = checkpoint.save(model, tmp_path / "m.npz", meta={"model": dict(model.config(),
                                                                          **config)})
    result, peak = peak_bytes(lambda: build_lm(path))
    assert peak < 64 * 2**20
    if isinstance(result, Exception):
        assert isinstance(result, CheckpointError) and "\n" not in str(result)
    else:
        assert isinstance(result, AutoregressiveLM)


HIERARCHY = ClassHierarchy.from_counts(np.arange(1, 13), 4)


@pytest.mark.parametrize("make", [
    lambda: CNNClassifier(HIERARCHY, (1, 12, 12), head="flat"),
    lambda: CNNClassifier(HIERARCHY, (1, 12, 12), arch="vgg"),
    lambda: RowRNNClassifier(HIERARCHY, (1, 12, 12), hidden=4, cell="gru")])
@pytest.mark.parametrize("change, match", [
    (lambda c: c.update(image_shape=[1, 10**5, 10**5]), "limit|in_features|VGG"),
    (lambda c: c.update(image_shape=[1, 12]), "image_shape"),
    (lambda c: c.update(image_shape="1x12x12"), "image_shape"),
    (lambda c: c.update(image_shape=[0, 12, 12]), "image_shape"),
    (lambda c: c.update(head="deep"), "head"),
    (lambda c: c.update(level_weights=[0, 0]), "not both 0"),
    (lambda c: c.update(level_weights=[1, float("inf")]), "level_weights"),
    (lambda c: c.update(schedule=[[1, [1, 1]]]), "first milestone"),
    (lambda c: c.update(schedule="0:1,1"), "schedule"),
    (lambda c: c.update(model="mlp"), "model"),
    (lambda c: c.pop("head"), "missing keys"),
    (lambda c: c.update(hidden=10**7, arch="lenet"), "limit|unknown keys")])
def test_classifier_configs_are_checked_too(tmp_path, make, change, match):
    model = make()
    config = model.config()
    assert classifier_from_config(json.loads(json.dumps(config)), HIERARCHY).num_parameters() \
        == model.num_parameters()
    path = checkpoint.save(model, tmp_path / "m.npz", meta={"model": config})
    arrays, header = contents(path)
    change(header["meta"]["model"])
    forge(path, arrays, header)
    result, peak = peak_bytes(lambda: checkpoint.build(
        path, lambda meta: classifier_from_config(meta["model"], HIERARCHY)))
    if match.endswith("VGG") and getattr(model, "arch", None) == "vgg":
        # convolutions and a global pooling: the parameters do not depend on the image size
        assert isinstance(result, CNNClassifier) and peak < 32 * 2**20
        return
    assert isinstance(result, CheckpointError), result
    assert peak < 32 * 2**20 and "\n" not in str(result)
    import re
    assert re.search(match, str(result)), str(result)


# --- 5. the JSON header itself ------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "{", "[]", "null", '"x"', "1", '{"format": 2}',
                                  '{"format": true}', '{"format": "1"}', '{"format": 1}',
                                  '{"format": 1, "class": 3}',
                                  '{"format": 1, "class": "X", "optimizer": []}',
                                  "[" * 10_000 + "]" * 10_000,
                                  '{"format": 1, "class": "X", "meta": ' + "[" * 70 + "]" * 70
                                  + "}"])
def test_a_damaged_header_is_refused(tmp_path, text):
    path = checkpoint.save(small_model(), tmp_path / "m.npz")
    arrays, _ = contents(path)
    members = dict(arrays, __tinyar__=np.array(text))
    np.savez(path, **members)
    for call in (lambda: checkpoint.load(small_model(), path),
                 lambda: checkpoint.read_meta(path), lambda: checkpoint.read_extra(path)):
        refused(call)


@pytest.mark.parametrize("value", [np.zeros(3), np.array(["{}", "{}"]), np.array(b"{}")])
def test_a_header_that_is_not_one_string_is_refused(tmp_path, value):
    path = checkpoint.save(small_model(), tmp_path / "m.npz")
    arrays, _ = contents(path)
    np.savez(path, **dict(arrays, __tinyar__=value))
    refused(lambda: checkpoint.read_meta(path))


def test_a_huge_header_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "MAX_META_CHARS", 1000)
    path = checkpoint.save(small_model(), tmp_path / "m.npz", meta={"x": "a" * 5000})
    refused(lambda: checkpoint.read_meta(path), match="at most 4,000")


@pytest.mark.parametrize("depth", [60, 64, 70, 500])
def test_save_refuses_meta_it_could_not_read_back(tmp_path, depth):
    meta = []
    for _ in range(depth):
        meta = [meta]
    path = tmp_path / "m.npz"
    if depth + 2 <= 64:  # the header object and the list itself count
        checkpoint.save(small_model(), path, meta=meta)
        assert checkpoint.read_meta(path) == meta
    else:
        refused(lambda: checkpoint.save(small_model(), path, meta=meta), match="nested")
        assert not os.path.exists(path)


# --- 6. truncated and damaged files ---------------------------------------------------------
def test_a_file_cut_anywhere_is_refused(tmp_path):
    path, _, _ = lm_checkpoint(tmp_path, extra={"h": np.ones((1, 2, 5), np.float32)})
    data = open(path, "rb").read()
    cut = tmp_path / "cut.npz"
    for length in list(range(0, 200, 7)) + list(range(200, len(data), max(1, len(data) // 150))):
        cut.write_bytes(data[:length])
        for call in (lambda: checkpoint.load(lm(), cut), lambda: checkpoint.read_meta(cut),
                     lambda: checkpoint.read_extra(cut), lambda: checkpoint.read(cut)):
            refused(call)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), min_size=1,
                      max_size=6))
def test_flipped_bytes_are_refused_or_harmless(tmp_path, flips):
    path = tmp_path / "base.npz"
    if not path.exists():
        model = small_model()
        checkpoint.save(model, path, meta={"k": [1, 2]}, optimizer=Adam(model),
                        extra={"h": np.ones(3)})
    data = bytearray(path.read_bytes())
    for position, value in flips:
        data[position % len(data)] = value
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(bytes(data))
    for call in (lambda: checkpoint.load(small_model(), damaged),
                 lambda: checkpoint.read_extra(damaged), lambda: checkpoint.read(damaged),
                 lambda: checkpoint.build(damaged, lambda meta: small_model())):
        try:
            call()
        except TinyarError as exc:
            assert isinstance(exc, REFUSED) and "\n" not in str(exc)
    model = small_model()
    try:
        checkpoint.load(model, damaged)
    except TinyarError:
        return
    for value in model.state_dict().values():  # what loads is finite
        assert np.isfinite(value).all()


# --- 7. not a regular file --------------------------------------------------------------------
class _Alarm:
    """Fail the test instead of hanging forever (a FIFO opened for reading blocks)."""

    def __enter__(self):
        signal.signal(signal.SIGALRM, self._ring)
        signal.alarm(5)

    def __exit__(self, *exc):
        signal.alarm(0)

    @staticmethod
    def _ring(*_):
        raise AssertionError("reading the checkpoint hung")


READERS = {
    "load": lambda p, **kw: checkpoint.load(small_model(), p, **kw),
    "read_meta": lambda p, **kw: checkpoint.read_meta(p, **kw),
    "read_extra": lambda p, **kw: checkpoint.read_extra(p, **kw),
    "read": lambda p, **kw: checkpoint.read(p, **kw),
    "build": lambda p, **kw: checkpoint.build(p, lambda meta: small_model(), **kw),
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("kind", ["fifo", "directory", "device", "dangling", "missing",
                                  "empty", "text"])
def test_what_is_not_a_checkpoint_file_is_refused_without_hanging(tmp_path, reader, kind):
    path = tmp_path / "model.npz"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "device":
        os.symlink("/dev/zero", path)
    elif kind == "dangling":
        os.symlink(tmp_path / "nowhere.npz", path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not a zip\n" * 100)
    with _Alarm():
        message = refused(lambda: READERS[reader](path))
    assert "model.npz" in message


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_symlink_is_refused_inside_a_run_folder_and_followed_when_given(tmp_path, reader):
    real = checkpoint.save(small_model(), tmp_path / "real.npz", meta={"m": 1})
    link = tmp_path / "model.npz"
    os.symlink(real, link)
    refused(lambda: READERS[reader](link, follow_symlinks=False), match="symlink")
    READERS[reader](link)  # a path the user gave may be a symlink


# --- 8. the optimizer's state -----------------------------------------------------------------
OPTIMIZERS = [Adam, AdamW, SGD, RMSprop, Adagrad]


def _optimizer_checkpoint(tmp_path, cls, **kw):
    model = lm()
    optimizer = cls(model.parameters(), lr=0.01, **kw)
    trained(model, optimizer)
    trained(model, optimizer)
    return checkpoint.save(model, tmp_path / "m.npz", optimizer=optimizer), model, optimizer


@pytest.mark.parametrize("cls, kw", [(Adam, {}), (Adam, {"amsgrad": True}), (AdamW, {}),
                                     (SGD, {}), (SGD, {"momentum": 0.9, "nesterov": True}),
                                     (RMSprop, {"centered": True, "momentum": 0.5}),
                                     (Adagrad, {})])
def test_every_optimizer_round_trips(tmp_path, cls, kw):
    path, model, optimizer = _optimizer_checkpoint(tmp_path, cls, **kw)
    other_model = lm()
    other = cls(other_model.parameters(), lr=0.5, **kw)
    checkpoint.load(other_model, path, optimizer=other)
    assert other.state["step"] == optimizer.state["step"] == 2
    assert other.param_groups[0]["lr"] == 0.01
    for key, value in optimizer.state.items():
        np.testing.assert_array_equal(other.state[key], value)


BAD_GROUP_VALUES = [None, "0.1", -1, True, [0.1], {"x": 1}, 1e400]
FLAGS = ("amsgrad", "nesterov", "centered")


@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize("value", BAD_GROUP_VALUES, ids=repr)
def test_hyperparameters_of_the_wrong_type_or_range_are_refused(tmp_path, cls, value):
    path, _, _ = _optimizer_checkpoint(tmp_path, cls)
    arrays, header = contents(path)
    group = header["optimizer"]["state"]["param_groups"][0]
    for key in [k for k in group if k not in ("params", "num_elements")]:
        if (key in FLAGS and value is True) or (key == "dampening" and value == -1):
            continue  # valid values of those
        tampered = json.loads(json.dumps(header))
        tampered["optimizer"]["state"]["param_groups"][0][key] = value
        forge(path, arrays, tampered)
        model = lm()
        optimizer = cls(model.parameters())
        before = dict(optimizer.param_groups[0])
        refused(lambda: checkpoint.load(model, path, optimizer=optimizer), match=key)
        assert optimizer.param_groups[0] == before and optimizer.state["step"] == 0


@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize("step", [-1, 2.5, "3", None, True, [3], 1e30])
def test_a_step_count_of_the_wrong_type_is_refused(tmp_path, cls, step):
    path, _, _ = _optimizer_checkpoint(tmp_path, cls)
    arrays, header = contents(path)
    header["optimizer"]["state"]["state"]["step"] = step
    forge(path, arrays, header)
    model = lm()
    refused(lambda: checkpoint.load(model, path, optimizer=cls(model.parameters())),
            match="'step'")


@pytest.mark.parametrize("cls", [Adam, RMSprop, Adagrad])
@pytest.mark.parametrize("damage", ["shape", "short", "2d", "int", "complex", "nan", "inf",
                                    "negative", "missing", "unknown", "twice", "elsewhere"])
def test_state_arrays_are_checked_before_they_are_read(tmp_path, cls, damage):
    path, _, optimizer = _optimizer_checkpoint(tmp_path, cls)
    arrays, header = contents(path)
    state = header["optimizer"]["state"]["state"]
    name = {Adam: "exp_avg_sq", RMSprop: "square_avg", Adagrad: "sum"}[cls]
    member = f"optim/state/{name}"
    n = optimizer.num_elements
    if damage == "shape":
        arrays[member] = np.zeros(n + 1, np.float32)
    elif damage == "short":
        arrays[member] = np.zeros(3, np.float32)
    elif damage == "2d":
        arrays[member] = np.zeros((1, n), np.float32)
    elif damage == "int":
        arrays[member] = np.zeros(n, np.int32)
    elif damage == "complex":
        arrays[member] = np.zeros(n, np.complex64)
    elif damage in ("nan", "inf", "negative"):
        arrays[member][5] = {"nan": np.nan, "inf": np.inf, "negative": -1.0}[damage]
    elif damage == "missing":
        del state[name]
    elif damage == "unknown":
        state["planted"] = {"__array__": member}
        del state[name]
    elif damage == "twice":
        state["other"] = {"__array__": member}
    elif damage == "elsewhere":
        state[name] = {"__array__": "model/head.linear.weight"}
    forge(path, arrays, header)
    model = lm()
    refused(lambda: checkpoint.load(model, path, optimizer=cls(model.parameters())))


def test_optimizer_class_and_absence_are_explained(tmp_path):
    path, _, _ = _optimizer_checkpoint(tmp_path, SGD)
    model = lm()
    refused(lambda: checkpoint.load(model, path, optimizer=Adam(model.parameters())),
            match="SGD optimizer, not of a Adam")
    plain = checkpoint.save(lm(), tmp_path / "plain.npz")
    refused(lambda: checkpoint.load(model, plain, optimizer=Adam(model.parameters())),
            match="no optimizer state")
    arrays, header = contents(path)
    for entry in ({"class": 3, "state": {}}, {"state": {}}, {"class": "SGD"},
                  {"class": "SGD", "state": []}, {"class": "SGD", "state": {"state": {}}}):
        header["optimizer"] = entry
        forge(path, arrays, header)
        refused(lambda: checkpoint.load(model, path, optimizer=SGD(model.parameters())))


def test_a_refused_optimizer_state_leaves_the_model_unchanged(tmp_path):
    path, _, _ = _optimizer_checkpoint(tmp_path, Adam)
    arrays, header = contents(path)
    header["optimizer"]["state"]["param_groups"][0]["betas"] = [0.9, 1.5]
    forge(path, arrays, header)
    model = lm()
    before = model.state_dict()
    refused(lambda: checkpoint.load(model, path, optimizer=Adam(model.parameters())),
            match=r"betas\[1\]")
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("make", [lambda o: StepLR(o, 3, gamma=0.5),
                                  lambda o: CosineAnnealingLR(o, 10, warmup_steps=2),
                                  lambda o: ReduceLROnPlateau(o)])
@pytest.mark.parametrize("change", [
    lambda s: s.update(last_epoch="3"), lambda s: s.update(last_epoch=2.5),
    lambda s: s.update(base_lrs=[None]), lambda s: s.update(base_lrs=[0.1, 0.2]),
    lambda s: s.update(base_lrs=0.1), lambda s: s.update(planted=1),
    lambda s: s.pop("last_epoch"), lambda s: s.update(_last_lr=[float("nan")]),
    lambda s: s.update(_step_count=True)])
def test_scheduler_states_are_checked(make, change):
    model = lm()
    scheduler = make(Adam(model.parameters(), lr=0.1))
    state = json.loads(fileio.dumps_json(scheduler.state_dict()))  # as a checkpoint holds it
    make(Adam(model.parameters(), lr=0.1)).load_state_dict(state)  # accepted as saved
    change(state)
    fresh = make(Adam(model.parameters(), lr=0.1))
    before = fresh.state_dict()
    with pytest.raises(CheckpointError) as info:
        fresh.load_state_dict(state)
    assert_one_line(info)
    assert fresh.state_dict() == before
    assert not hasattr(fresh, "planted")


# --- 9. extra state -------------------------------------------------------------------------
arrays_st = st.builds(lambda shape, dtype, seed: np.random.default_rng(seed).standard_normal(
    shape).astype(dtype), st.lists(st.integers(0, 4), max_size=3),
    st.sampled_from([np.float32, np.float64, np.int64, np.int32]), st.integers(0, 9))
json_st = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6))
extra_st = st.recursive(st.one_of(arrays_st, json_st), lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text("abcxyz_", min_size=1, max_size=4),
                                                 inner, max_size=3)), max_leaves=10)


def _same(a, b):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b)
        for k in a:
            _same(a[k], b[k])
    else:
        assert a == b


@HYPOTHESIS
@given(extra=extra_st)
def test_extra_round_trips(tmp_path, extra):
    path = checkpoint.save(small_model(), tmp_path / "m.npz", extra=extra)
    got = checkpoint.read_extra(path)
    if extra is None:
        assert got is None
    else:
        _same(extra, got)


def test_the_carried_lstm_state_round_trips_and_feeds_the_next_batch(tmp_path):
    model = lm(num_layers=2)
    x = np.random.default_rng(0).integers(0, 11, (3, 7))
    _, state = model.loss(x, x)
    path = checkpoint.save(model, tmp_path / "m.npz", extra={"state": state})
    carried = checkpoint.read_extra(path)["state"]
    a, _ = model.loss(x, x, state)
    b, _ = model.loss(x, x, carried)
    assert a == b


def _nested(depth, leaf):
    for _ in range(depth):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize("extra, match", [
    (_nested(100, np.ones(2)), "nested"), (_nested(5000, 1), "nested"),
    ({"a/b": np.ones(2)}, "without '/'"), ({3: np.ones(2)}, "strings"),
    ({"__array__": "x"}, "__array__"), ({"": 1}, "non-empty"),
    ({"h": np.array([np.nan])}, "NaN"), ({"h": np.ones(2, complex)}, "real numbers"),
    ({"h": np.array(["a"])}, "real numbers"), ({"h": object()}, "JSON")])
def test_save_refuses_extra_it_could_not_read_back(tmp_path, extra, match):
    refused(lambda: checkpoint.save(small_model(), tmp_path / "m.npz", extra=extra),
            match=match)
    assert not os.path.exists(tmp_path / "m.npz")


@pytest.mark.parametrize("damage", ["outside", "missing", "twice", "complex", "nan", "big",
                                    "not a string"])
def test_tampered_extra_references_are_refused(tmp_path, damage):
    path = checkpoint.save(small_model(), tmp_path / "m.npz",
                           extra={"h": np.ones((2, 3), np.float32), "n": 4})
    arrays, header = contents(path)
    ref = {"__array__": "extra/h"}
    if damage == "outside":
        header["extra"]["h"] = {"__array__": "model/0.weight"}
    elif damage == "missing":
        header["extra"]["h"] = {"__array__": "extra/gone"}
    elif damage == "twice":
        header["extra"]["n"] = ref
    elif damage == "complex":
        arrays["extra/h"] = np.ones(3, np.complex64)
    elif damage == "nan":
        arrays["extra/h"][0, 0] = np.nan
    elif damage == "not a string":
        header["extra"]["h"] = {"__array__": [1, 2]}
    forge(path, arrays, header)
    if damage == "big":
        refused(lambda: checkpoint.read_extra(path, max_bytes=8), match="at most 8")
    else:
        refused(lambda: checkpoint.read_extra(path))


# --- 10. writing ------------------------------------------------------------------------------
def test_save_replaces_a_planted_symlink_and_never_writes_through_it(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    folder = tmp_path / "run"
    folder.mkdir()
    os.symlink(target, folder / "model.npz")
    checkpoint.save(small_model(), folder / "model.npz")
    assert target.read_text() == "keep me"
    assert stat.S_ISREG(os.lstat(folder / "model.npz").st_mode)
    checkpoint.load(small_model(), folder / "model.npz", follow_symlinks=False)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_save_gives_the_users_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = checkpoint.save(small_model(), tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


def test_a_failed_save_keeps_the_old_checkpoint_and_leaves_no_temporary(tmp_path):
    path = checkpoint.save(small_model(), tmp_path / "m.npz", meta={"v": 1})
    for bad in ({"x": object()}, {"x": np.ones(2)}, {"x": {1, 2}}):
        refused(lambda: checkpoint.save(small_model(), path, meta=bad), match="JSON")
    assert checkpoint.read_meta(path) == {"v": 1} and os.listdir(tmp_path) == ["m.npz"]


def test_meta_is_standard_json(tmp_path):
    meta = {"loss": float("nan"), "best": float("inf"), "n": np.int64(3), "f": np.float32(0.5),
            "t": (1, 2)}
    path = checkpoint.save(small_model(), tmp_path / "m.npz", meta=meta)
    with np.load(path) as data:
        text = str(data["__tinyar__"])
    assert "NaN" not in text and "Infinity" not in text
    assert checkpoint.read_meta(path) == {"loss": None, "best": None, "n": 3, "f": 0.5,
                                          "t": [1, 2]}


# --- 11. the allocation limit itself --------------------------------------------------------
@pytest.mark.parametrize("make, elements", [
    (lambda: nn.Linear(10**6, 10**6), 10**12), (lambda: nn.Embedding(10**9, 512), 5 * 10**11),
    (lambda: nn.LSTM(10**5, 10**5), 8 * 10**10), (lambda: nn.Conv2d(10**5, 10**5, 7), 10**12),
    (lambda: nn.LayerNorm((10**6, 10**6)), 10**12), (lambda: nn.BatchNorm2d(10**9), 4 * 10**9),
    (lambda: nn.GRUCell(10**5, 10**5), 6 * 10**10)])
@pytest.mark.parametrize("limit", [0, 10, 10**6])
def test_the_allocation_limit_refuses_before_allocating(make, elements, limit):
    """Each of these would need more than 100 GB; refused within a few MB."""
    with nn.init.allocation_limit(limit, "test") as budget:
        result, peak = peak_bytes(make)
    assert isinstance(result, CheckpointError), result
    assert f"{limit:,}" in str(result) and "test" in str(result)
    assert peak < 8 * 2**20 and budget.used <= limit


def test_nested_limits_all_apply_and_count():
    with nn.init.allocation_limit(1000) as outer:
        with nn.init.allocation_limit(100) as inner:
            nn.Linear(9, 9)  # 90 values
            with pytest.raises(CheckpointError, match="limit of 100"):
                nn.Linear(3, 3)  # its weight fits (99), its bias does not
        assert inner.used == 99 and outer.used == 99
        nn.Linear(20, 20)
        assert outer.used == 99 + 420
    nn.Linear(100, 100)  # no limit outside
