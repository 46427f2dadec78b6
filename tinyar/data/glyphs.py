"""Glyphs: tinyar's built-in image data set, drawn from matplotlib's own fonts.

``make_glyphs(n, seed)`` returns ``n`` grey-scale images of the 62 characters
0-9, A-Z, a-z (labels 0..61 in that order, ``GLYPH_CHARS[label]``), as
float32 in [0, 1] of shape (n, 1, size, size), with int64 labels. It needs no
download: the twelve DejaVu fonts (Sans, Serif, Sans Mono; regular, bold,
oblique/italic, bold oblique) ship with matplotlib, which tinyar depends on.

How an image is made
--------------------
1. Each character's outline comes once from each font as a vector path
   (``matplotlib.textpath.TextPath``), in em units with the baseline at y=0,
   and is cached. Its ink is centred horizontally; vertically the font's line
   is centred, so case and descenders stay visible: 'o' is smaller than 'O',
   'p' hangs below the line, as in handwriting. Glyphs wider than 0.9 em
   (W, M in bold serif) are condensed horizontally, never shrunk in height.
2. Each sample draws its own affine map: rotation (+-10 degrees), scale,
   horizontal shear and a shift. The outline is pushed through that map and
   filled, with a stroke of random width around it (a thicker pen), by
   matplotlib's Agg rasteriser into its own cell of a large canvas, clipped to
   the cell. Rendering the vector outline at the final size gives exact
   anti-aliasing with no resampling blur, and Agg does the per-pixel work in
   C++: about 60 microseconds an image.
3. Vectorised NumPy then scales the contrast and adds Gaussian noise of a
   per-image strength, and clips to [0, 1].

Labels are balanced (each character ``n // 62`` or one more times) and
shuffled; everything random comes from ``numpy.random.default_rng(seed)``, so
the same seed, size and options give the same images, bit for bit, with the
same matplotlib. ``jitter=False`` gives clean, centred, upright glyphs.

Held-out fonts make a harder test set: ``make_glyphs(n, fonts=...)`` with a
list from ``glyph_fonts()``.
"""
import functools
import os
from pathlib import Path

import numpy as np

from .. import fileio
from ..errors import TinyarError

__all__ = ["make_glyphs", "glyph_fonts", "save_grid_png", "GlyphError", "GLYPH_CHARS",
           "DEFAULT_FONTS"]

GLYPH_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

DEFAULT_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
                 "DejaVuSans-BoldOblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
                 "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf", "DejaVuSansMono.ttf",
                 "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
                 "DejaVuSansMono-BoldOblique.ttf")

EM = 0.72            # the em square's height as a fraction of the image side
MIDLINE = 0.27       # em units: halfway between the descenders (-0.22) and ascenders (0.76)
MAX_WIDTH = 0.9      # em units: wider glyphs are condensed horizontally
CHUNK = 4096         # images drawn on one canvas (bounds the canvas' memory)


class GlyphError(TinyarError, ValueError):
    """Bad arguments to ``make_glyphs``, or no usable font found."""


def _font_dir():
    import matplotlib
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def glyph_fonts():
    """The font files (full paths) of ``DEFAULT_FONTS`` that this matplotlib ships."""
    folder = _font_dir()
    found = [str(folder / name) for name in DEFAULT_FONTS if (folder / name).is_file()]
    if not found:
        raise GlyphError(f"make_glyphs: none of the DejaVu fonts {DEFAULT_FONTS} is in "
                         f"{folder}; pass fonts=[paths of .ttf files]")
    return found


@functools.lru_cache(maxsize=16)
def _outlines(fonts, chars):
    """outline[f][c]: the path of ``chars[c]`` in font ``fonts[f]``, centred, in em units."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.path import Path as MplPath
    from matplotlib.textpath import TextPath

    table = []
    for font in fonts:
        if not os.path.isfile(font):
            raise GlyphError(f"make_glyphs: no font file at {font}")
        prop = FontProperties(fname=font)
        row = []
        for ch in chars:
            path = TextPath((0.0, 0.0), ch, size=1.0, prop=prop)
            box = path.get_extents()
            if path.vertices.size == 0 or box.width <= 0:
                raise GlyphError(f"make_glyphs: the font {font} has no glyph for {ch!r}")
            v = path.vertices - [(box.x0 + box.x1) / 2, MIDLINE]
            v[:, 0] *= min(1.0, MAX_WIDTH / box.width)
            row.append(MplPath(v, path.codes))
        table.append(row)
    return table


def _random_maps(rng, n, size, jitter, rotation, scale, shear, shift):
    """(n, 3, 3) affine matrices from em units to cell pixels (y up), drawn per image."""
    em_px = EM * size
    if jitter:
        angle = np.deg2rad(rng.uniform(-rotation, rotation, n))
        s = rng.uniform(scale[0], scale[1], n) * em_px
        k = rng.uniform(-shear, shear, n)
        tx, ty = rng.uniform(-shift, shift, (2, n)) * size
    else:
        angle, s, k = np.zeros(n), np.full(n, em_px), np.zeros(n)
        tx = ty = np.zeros(n)
    cos, sin = np.cos(angle), np.sin(angle)
    # M = translate(centre + t) @ rotate(angle) @ shear_x(k) @ scale(s)
    maps = np.zeros((n, 3, 3))
    maps[:, 0, 0] = cos * s
    maps[:, 0, 1] = (cos * k - sin) * s
    maps[:, 1, 0] = sin * s
    maps[:, 1, 1] = (sin * k + cos) * s
    maps[:, 0, 2] = size / 2 + tx
    maps[:, 1, 2] = size / 2 + ty
    maps[:, 2, 2] = 1.0
    return maps


def _render(outlines, fonts_of, labels, maps, widths, size):
    """Coverage in [0, 1] of each glyph drawn by Agg: (n, size, size) float32."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.transforms import Affine2D, Bbox

    n = labels.size
    out = np.empty((n, size, size), np.float32)
    for start in range(0, n, CHUNK):
        count = min(CHUNK, n - start)
        cols = int(np.ceil(np.sqrt(count)))
        rows = -(-count // cols)
        renderer = RendererAgg(cols * size, rows * size, 72)    # 72 dpi: 1 point = 1 pixel
        gc = renderer.new_gc()
        gc.set_joinstyle("round")
        gc.set_capstyle("round")
        for j in range(count):
            i = start + j
            row, col = divmod(j, cols)
            x0, y0 = col * size, (rows - 1 - row) * size            # display y points up
            m = maps[i].copy()
            m[0, 2] += x0
            m[1, 2] += y0
            gc.set_clip_rectangle(Bbox.from_bounds(x0, y0, size, size))
            gc.set_linewidth(widths[i])
            renderer.draw_path(gc, outlines[fonts_of[i]][labels[i]], Affine2D(m), (0, 0, 0, 1))
        alpha = np.asarray(renderer.buffer_rgba())[:, :, 3]         # coverage, 0..255
        cells = alpha.reshape(rows, size, cols, size).transpose(0, 2, 1, 3)
        out[start:start + count] = cells.reshape(rows * cols, size, size)[:count] / np.float32(255)
    return out


def make_glyphs(n, seed=0, size=28, *, chars=GLYPH_CHARS, fonts=None, jitter=True,
                rotation=10.0, scale=(0.85, 1.1), shear=0.2, shift=0.07, stroke=(0.0, 1.5),
                noise=0.08, contrast=(0.7, 1.0)):
    """``n`` glyph images and their labels: ((n, 1, size, size) float32 in [0, 1], (n,) int64).

    Args:
        n: number of images (any n >= 0; labels are balanced over ``chars``).
        seed: the images are a function of (seed, arguments, matplotlib version).
        size: side in pixels (28 like MNIST by default).
        chars: the characters to draw; label i is ``chars[i]``.
        fonts: font file paths (default: ``glyph_fonts()``); each image picks one.
        jitter: False turns off every distortion below (clean, centred glyphs).
        rotation: max rotation in degrees (uniform in +-rotation).
        scale: (min, max) size factor.
        shear: max horizontal shear (x += shear * y).
        shift: max shift as a fraction of ``size``, in x and in y.
        stroke: (min, max) extra pen width in pixels at size 28 (scaled with size).
        noise: max standard deviation of the additive Gaussian noise.
        contrast: (min, max) ink intensity.
    """
    n, size = int(n), int(size)
    if n < 0:
        raise GlyphError(f"make_glyphs: n must be >= 0, got {n}")
    if size < 8:
        raise GlyphError(f"make_glyphs: size must be at least 8 pixels, got {size}")
    chars = tuple(chars)
    if not chars or len(set(chars)) != len(chars):
        raise GlyphError(f"make_glyphs: chars must be distinct characters, got {chars!r}")
    fonts = tuple(str(f) for f in (glyph_fonts() if fonts is None else fonts))
    if not fonts:
        raise GlyphError("make_glyphs: fonts is empty")
    outlines = _outlines(fonts, chars)

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(chars)).astype(np.int64)
    fonts_of = rng.integers(0, len(fonts), n)
    maps = _random_maps(rng, n, size, jitter, rotation, scale, shear, shift)
    if jitter:
        widths = rng.uniform(stroke[0], stroke[1], n) * (size / 28)
    else:
        widths = np.zeros(n)
    images = _render(outlines, fonts_of, labels, maps, widths, size)
    if jitter:
        images *= rng.uniform(contrast[0], contrast[1], (n, 1, 1)).astype(np.float32)
        sigma = rng.uniform(0.0, noise, (n, 1, 1)).astype(np.float32)
        images += sigma * rng.standard_normal(images.shape, dtype=np.float32)
        np.clip(images, 0.0, 1.0, out=images)
    return images[:, None], labels


def save_grid_png(images, labels, path, *, names=GLYPH_CHARS, ncols=None, scale=2):
    """Write a grid preview of (n, 1|3, H, W) or (n, H, W) images to ``path``.

    Each tile is captioned with its label's name: ``names[label]`` (the glyph
    characters by default), or the number when ``names`` is None or too
    short; ``labels=None`` leaves the tiles uncaptioned. Uses a matplotlib ``Figure`` directly, not
    pyplot, so it works without a display and leaves no global state behind.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise GlyphError(f"save_grid_png: expected images (n, 1 or 3, H, W) with n > 0, got "
                         f"{images.shape}")
    n, c, h, w = images.shape
    ncols = int(ncols or min(n, int(np.ceil(np.sqrt(n * 1.5)))))
    nrows = -(-n // ncols)
    pixels = images.astype(np.float32)
    if images.dtype == np.uint8:
        pixels /= 255
    # tiles with a 2-pixel gutter, 12 pixels of room above each for its caption
    gap, top = 2, 14 if labels is not None else 0
    th, tw = h * scale + top + gap, w * scale + gap
    canvas = np.ones((nrows * th, ncols * tw, 3), np.float32)
    tiles = np.repeat(np.repeat(pixels, scale, axis=2), scale, axis=3).transpose(0, 2, 3, 1)
    for i in range(n):
        r, q = divmod(i, ncols)
        y, x = r * th + top, q * tw
        canvas[y:y + h * scale, x:x + w * scale] = 1.0 - tiles[i] if c == 1 else tiles[i]
    dpi = 100
    fig = Figure(figsize=(canvas.shape[1] / dpi, canvas.shape[0] / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    if labels is not None:
        for i, label in enumerate(np.asarray(labels).tolist()):
            r, q = divmod(i, ncols)
            text = str(names[label]) if names is not None and label < len(names) else str(label)
            ax.text(q * tw + w * scale / 2, r * th + top - 2, text, ha="center", va="bottom",
                    fontsize=8, color="tab:blue")
    # through fileio: a fresh temporary file renamed over ``path``, never written through
    # a symlink planted there; the format follows the suffix, as savefig(path) would
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    with fileio.atomic_write(path, "wb") as f:
        fig.savefig(f, dpi=dpi, format=fmt)
    return Path(path)
