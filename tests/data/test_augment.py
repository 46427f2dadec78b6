import numpy as np
import pytest

import tinyar
from tinyar.data.augment import (Augment, AugmentError, channel_stats, denormalize, flip_allowed,
                                 normalize, random_crop, random_hflip, random_rotation, rotate,
                                 to_float)
from tinyar.errors import ShapeError


@pytest.fixture
def batch(rng):
    return rng.integers(0, 256, (16, 3, 9, 11), dtype=np.uint8)


def test_random_crop_is_a_shift_with_fill(batch, rng):
    pad = 3
    out = random_crop(batch, pad, rng=np.random.default_rng(0))
    assert out.shape == batch.shape and out.dtype == np.uint8
    offsets = np.random.default_rng(0).integers(0, 2 * pad + 1, size=(2, len(batch)))
    padded = np.pad(batch, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    for i, (dy, dx) in enumerate(offsets.T):
        np.testing.assert_array_equal(out[i], padded[i, :, dy:dy + 9, dx:dx + 11])
    assert len({tuple(o) for o in offsets.T}) > 1          # images get different shifts
    np.testing.assert_array_equal(random_crop(batch, 0, rng), batch)


def test_random_crop_fill_value():
    x = np.ones((50, 1, 4, 4), np.float32)
    out = random_crop(x, 2, np.random.default_rng(1), fill=-1.0)
    assert set(np.unique(out)) == {-1.0, 1.0}
    assert (out == 1.0).sum(axis=(1, 2, 3)).min() >= 4      # at least a 2x2 corner survives


def test_rotate_matches_rot90_and_identity(rng):
    x = rng.standard_normal((3, 2, 7, 7))
    np.testing.assert_allclose(rotate(x, 90), np.rot90(x, 1, axes=(2, 3)), atol=1e-12)
    np.testing.assert_allclose(rotate(x, -90), np.rot90(x, -1, axes=(2, 3)), atol=1e-12)
    np.testing.assert_allclose(rotate(x, 180), x[:, :, ::-1, ::-1], atol=1e-12)
    np.testing.assert_array_equal(rotate(x, 0), x)
    per_image = rotate(x, [0, 90, 180])
    np.testing.assert_allclose(per_image[1], np.rot90(x[1], 1, axes=(1, 2)), atol=1e-12)
    assert rotate(x.astype(np.float32), 10).dtype == np.float32


def test_rotate_small_angle_keeps_a_centred_blob():
    yy, xx = np.mgrid[:21, :21] - 10
    blob = np.exp(-(yy ** 2 + xx ** 2) / 8.0)[None, None].astype(np.float32)
    out = rotate(blob, 10)
    np.testing.assert_allclose(out, blob, atol=0.02)        # a round blob is (nearly) invariant
    assert abs(out.sum() - blob.sum()) < 0.01 * blob.sum()
    line = np.zeros((1, 1, 21, 21), np.float32)
    line[0, 0, 10, :] = 1
    turned = rotate(line, 90, fill=0)
    assert turned[0, 0, :, 10].min() > 0.99 and turned[0, 0, 10, :3].max() < 0.01


def test_random_rotation_uses_the_rng_and_fill(batch):
    a = random_rotation(batch, 15, rng=np.random.default_rng(3))
    b = random_rotation(batch, 15, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == batch.shape
    ones = np.ones((4, 1, 10, 10), np.float32)
    assert (random_rotation(ones, 30, np.random.default_rng(0), fill=0.0) < 1).any()
    np.testing.assert_array_equal(random_rotation(batch, 0.0, np.random.default_rng(0)), batch)


def test_default_generator_is_tinyars(batch):
    tinyar.manual_seed(7)
    a = random_crop(batch, 2)
    tinyar.manual_seed(7)
    np.testing.assert_array_equal(random_crop(batch, 2), a)


def test_random_hflip(batch):
    out = random_hflip(batch, p=0.5, rng=np.random.default_rng(2))
    flipped = np.random.default_rng(2).random(len(batch)) < 0.5
    assert 0 < flipped.sum() < len(batch)
    np.testing.assert_array_equal(out[flipped], batch[flipped, :, :, ::-1])
    np.testing.assert_array_equal(out[~flipped], batch[~flipped])
    np.testing.assert_array_equal(random_hflip(batch, p=1.0), batch[..., ::-1])
    np.testing.assert_array_equal(random_hflip(batch, p=0.0), batch)


def test_flip_allowed_only_for_mirror_safe_data():
    assert flip_allowed("cifar10") and flip_allowed("CIFAR100") and flip_allowed("fashion_mnist")
    assert not flip_allowed("mnist") and not flip_allowed("glyphs")
    assert not flip_allowed("emnist-balanced")
    with pytest.raises(AugmentError, match="unknown data set 'svhn'"):
        flip_allowed("svhn")
    with pytest.raises(AugmentError, match="glyphs must not be flipped"):
        Augment(hflip=True, data="glyphs")


def test_normalize_and_inverse(rng):
    x = rng.integers(0, 256, (40, 3, 6, 6), dtype=np.uint8)
    mean, std = channel_stats(x)
    assert mean.shape == std.shape == (3,)
    z = normalize(x, mean, std)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-4)
    np.testing.assert_allclose(denormalize(z, mean, std), to_float(x), atol=1e-6)
    # hand-checked values, one channel
    one = np.full((1, 1, 1, 2), 0.5, np.float64)
    np.testing.assert_allclose(normalize(one, 0.25, 0.5, dtype=np.float64), 0.5)
    np.testing.assert_allclose(to_float(np.array([[[[0, 51, 255]]]], np.uint8)), [[[[0, 0.2, 1]]]])


def test_normalize_errors(rng):
    x = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(AugmentError, match="3 channels, got 2 means"):
        normalize(x, [0.1, 0.2], [1, 1, 1])
    with pytest.raises(AugmentError, match="std must be positive"):
        normalize(x, 0.0, [1, 0, 1])
    with pytest.raises(ShapeError, match=r"normalize: expected images \(N, C, H, W\), got shape "
                                         r"\(3, 4, 4\)"):
        normalize(x[0], 0, 1)
    with pytest.raises(AugmentError, match="uint8 or float"):
        to_float(np.zeros(3, np.int32))


def test_augment_pipeline(batch):
    aug = Augment.for_dataset("cifar10", rng=np.random.default_rng(0))
    assert (aug.padding, aug.max_degrees, aug.hflip) == (4, 0.0, True)
    out = aug(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype and not np.array_equal(out, batch)
    digits = Augment.for_dataset("mnist")
    assert not digits.hflip and digits.max_degrees == 10.0 and digits.padding == 2
    assert Augment.for_dataset("fashion-mnist").hflip
    np.testing.assert_array_equal(Augment()(batch), batch)
    assert "padding=4" in repr(aug)


def test_large_batch_is_quick(rng):
    import time
    x = rng.random((512, 3, 32, 32), dtype=np.float32)
    start = time.perf_counter()
    Augment(padding=4, max_degrees=10, hflip=True, rng=rng)(x)
    assert time.perf_counter() - start < 2.0
