import time

import numpy as np
import pytest

from tinyar.data.glyphs import GLYPH_CHARS, GlyphError, glyph_fonts, make_glyphs, save_grid_png


def nearest_centroid_accuracy(train, test, classes):
    (xa, ya), (xb, yb) = train, test
    xa, xb = xa.reshape(len(xa), -1), xb.reshape(len(xb), -1)
    centroids = np.stack([xa[ya == k].mean(axis=0) for k in range(classes)])
    dist = (xb ** 2).sum(1)[:, None] - 2 * xb @ centroids.T + (centroids ** 2).sum(1)[None]
    return float((dist.argmin(axis=1) == yb).mean())


def test_shapes_dtypes_and_range():
    x, y = make_glyphs(130, seed=3)
    assert x.shape == (130, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (130,) and y.dtype == np.int64
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9
    assert y.min() >= 0 and y.max() < 62
    ink = x.reshape(130, -1).mean(axis=1)
    assert (ink > 0.02).all()                              # no blank image


def test_deterministic_by_seed():
    a, la = make_glyphs(70, seed=5)
    b, lb = make_glyphs(70, seed=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    c, lc = make_glyphs(70, seed=6)
    assert not np.array_equal(a, c) and not np.array_equal(la, lc)


@pytest.mark.parametrize("n", [62 * 3, 200, 5])
def test_class_balance(n):
    _, y = make_glyphs(n, seed=0, jitter=False)
    counts = np.bincount(y, minlength=62)
    assert counts.sum() == n and counts.max() - counts.min() <= 1
    assert len(np.unique(y)) == min(n, 62)


@pytest.mark.parametrize("size", [8, 16, 45])
def test_any_size(size):
    x, y = make_glyphs(20, seed=1, size=size)
    assert x.shape == (20, 1, size, size) and x.max() > 0.5


def test_empty_and_custom_chars():
    x, y = make_glyphs(0)
    assert x.shape == (0, 1, 28, 28) and y.shape == (0,)
    x, y = make_glyphs(30, chars="0123456789", seed=2)
    assert y.max() == 9 and np.bincount(y).tolist() == [3] * 10
    same, _ = make_glyphs(30, chars=list("0123456789"), seed=2)
    np.testing.assert_array_equal(same, x)


def test_clean_glyphs_carry_the_class():
    train = make_glyphs(62 * 12, seed=0, jitter=False)
    test = make_glyphs(62 * 4, seed=1, jitter=False)
    acc = nearest_centroid_accuracy(train, test, 62)
    assert acc > 0.6, acc                                  # chance is 1/62 = 0.016
    # the distorted ones are harder, but still far from chance
    jit_train, jit_test = make_glyphs(62 * 12, seed=0), make_glyphs(62 * 4, seed=1)
    assert nearest_centroid_accuracy(jit_train, jit_test, 62) > 0.15


def test_case_and_baseline_are_kept():
    """'o' is smaller than 'O'; 'p' has ink below the line where 'o' has none."""
    x, y = make_glyphs(62 * 12, seed=0, jitter=False)
    mean = {c: x[y == GLYPH_CHARS.index(c), 0].mean(axis=0) for c in "oOpb"}
    rows_with_ink = {c: np.flatnonzero(m.max(axis=1) > 0.2) for c, m in mean.items()}
    assert rows_with_ink["O"].size > rows_with_ink["o"].size + 3
    assert rows_with_ink["p"].max() > rows_with_ink["o"].max() + 3         # descender
    assert rows_with_ink["b"].min() < rows_with_ink["o"].min() - 3         # ascender


def test_jitter_false_is_centred_and_noise_free():
    x, y = make_glyphs(62, seed=0, jitter=False)
    cols = x[:, 0].sum(axis=1)                              # ink per column
    centre = (cols * np.arange(28)).sum(axis=1) / cols.sum(axis=1)
    assert np.abs(centre - 13.5).max() < 2.0
    assert (x[:, :, 0, :] == 0).all() and (x[:, :, :, 0] == 0).all()   # clean border


def test_fonts_can_be_chosen():
    fonts = glyph_fonts()
    assert len(fonts) == 12 and all(f.endswith(".ttf") for f in fonts)
    mono, _ = make_glyphs(62, seed=0, jitter=False, fonts=[f for f in fonts if "Mono" in f][:1])
    sans, _ = make_glyphs(62, seed=0, jitter=False, fonts=fonts[:1])
    assert not np.array_equal(mono, sans)


def test_bad_arguments():
    with pytest.raises(GlyphError, match="n must be >= 0"):
        make_glyphs(-1)
    with pytest.raises(GlyphError, match="size must be at least 8"):
        make_glyphs(3, size=4)
    with pytest.raises(GlyphError, match="distinct characters"):
        make_glyphs(3, chars="aa")
    with pytest.raises(GlyphError, match="no font file at /nowhere/x.ttf"):
        make_glyphs(3, fonts=["/nowhere/x.ttf"])


def test_ten_thousand_are_fast():
    make_glyphs(10)                                         # outlines cached, imports done
    start = time.perf_counter()
    x, _ = make_glyphs(10_000, seed=9)
    elapsed = time.perf_counter() - start
    assert x.shape == (10_000, 1, 28, 28)
    assert elapsed < 10.0, f"10,000 glyphs took {elapsed:.1f} s"


def test_save_grid_png(tmp_path):
    x, y = make_glyphs(24, seed=0)
    path = save_grid_png(x, y, tmp_path / "grid.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    rgb = (np.random.default_rng(0).random((5, 3, 8, 8)) * 255).astype(np.uint8)
    assert save_grid_png(rgb, None, tmp_path / "rgb.png").is_file()
    # labels beyond the names are captioned by number (CIFAR-100's 100 labels)
    assert save_grid_png(rgb, [0, 61, 62, 99, 5], tmp_path / "c100.png", names=None).is_file()
    assert save_grid_png(rgb, [0, 61, 62, 99, 5], tmp_path / "c100b.png").is_file()
    with pytest.raises(GlyphError, match=r"expected images \(n, 1 or 3, H, W\)"):
        save_grid_png(np.zeros((2, 2, 8, 8)), None, tmp_path / "bad.png")
