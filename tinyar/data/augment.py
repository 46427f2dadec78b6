"""Data augmentation for image batches (N, C, H, W), vectorised over the batch.

Each random transform draws its numbers from the ``rng`` it is given, or from
tinyar's generator (``tinyar.random.generator()``), so ``tinyar.manual_seed``
makes a run repeatable. Transforms keep the dtype (uint8 stays uint8) and
return new arrays.

* ``random_crop(x, padding)``: pad by ``padding`` pixels, cut a random
  H x W window: a random shift of up to ``padding`` pixels each way.
* ``rotate(x, degrees)`` / ``random_rotation(x, max_degrees)``: rotation about
  the image centre, bilinear, with ``fill`` where the source is outside.
* ``random_hflip(x, p)``: mirror left-right. Only for data whose classes
  survive a mirror (photos, clothes); never for digits and letters, where
  it turns a 'b' into a 'd': ``flip_allowed(name)`` says which sets allow it.
* ``normalize(x, mean, std)`` / ``denormalize``: per-channel standardisation
  and its inverse; ``channel_stats(x)`` measures mean and std on training data.
* ``Augment``: a pipeline of the above; ``Augment.for_dataset(name)`` picks
  the usual choice for a named set.
"""
import numpy as np

from ..errors import ShapeError, TinyarError
from ..random import generator

__all__ = ["random_crop", "rotate", "random_rotation", "random_hflip", "flip_allowed",
           "normalize", "denormalize", "channel_stats", "to_float", "Augment",
           "AugmentError", "FLIP_ALLOWED"]

# Does a left-right mirror keep the class? (Shoes and shirts stay shoes and
# shirts; a mirrored 'b' is a 'd', a mirrored '3' no digit at all.)
FLIP_ALLOWED = {"cifar10": True, "cifar100": True, "fashion-mnist": True, "mnist": False,
                "emnist": False, "glyphs": False}


class AugmentError(TinyarError, ValueError):
    """An augmentation that does not fit the data (a flip of digits, a bad mean/std...)."""


def _images(x, who):
    x = np.asarray(x)
    if x.ndim != 4:
        raise ShapeError(f"{who}: expected images (N, C, H, W), got shape {x.shape}")
    return x


def _rng(rng):
    return generator() if rng is None else rng


def flip_allowed(name):
    """Whether images of the named data set may be mirrored left-right."""
    key = str(name).lower().replace("_", "-")
    key = "emnist" if key.startswith("emnist") else key
    if key not in FLIP_ALLOWED:
        raise AugmentError(f"flip_allowed: unknown data set {name!r}; known: "
                           f"{', '.join(sorted(FLIP_ALLOWED))}")
    return FLIP_ALLOWED[key]


def to_float(x):
    """uint8 images as float32 in [0, 1]; float images unchanged."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255)
    if not np.issubdtype(x.dtype, np.floating):
        raise AugmentError(f"to_float: expected uint8 or float images, got {x.dtype}")
    return x


# ---------------------------------------------------------------- geometry
def random_crop(x, padding=4, rng=None, fill=0):
    """Each image shifted by a random (dy, dx) in [-padding, padding]^2, ``fill`` coming in.

    Equivalently: zero-pad by ``padding`` and cut a random H x W window, the
    standard CIFAR augmentation.
    """
    x = _images(x, "random_crop")
    padding = int(padding)
    if padding < 0:
        raise AugmentError(f"random_crop: padding must be >= 0, got {padding}")
    n, c, h, w = x.shape
    offsets = _rng(rng).integers(0, 2 * padding + 1, size=(2, n))
    if padding == 0:
        return x.copy()
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                    constant_values=fill)
    rows = offsets[0][:, None] + np.arange(h)                  # (n, h)
    cols = offsets[1][:, None] + np.arange(w)                  # (n, w)
    return padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def rotate(x, degrees, fill=0):
    """Rotate each image counter-clockwise by ``degrees`` (a number or one per image).

    Inverse mapping: output pixel p takes the bilinear value of the input at
    R(-angle) (p - centre) + centre, with ``fill`` outside the image.
    """
    x = _images(x, "rotate")
    n, c, h, w = x.shape
    angle = np.deg2rad(np.broadcast_to(np.asarray(degrees, np.float64), (n,)))
    cy, cx = (h - 1) / 2, (w - 1) / 2
    ys, xs = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    # rows grow downwards, so on screen a counter-clockwise turn by a maps the
    # source offset (y, x) to (cos a y - sin a x, sin a y + cos a x); the
    # source of an output offset is the inverse turn:
    sy = cos * ys + sin * xs + cy
    sx = -sin * ys + cos * xs + cx
    work = x.astype(np.float32, copy=False) if x.dtype != np.float64 else x
    # a one-pixel border of fill: source points just outside blend into it
    padded = np.pad(work, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=fill)
    padded = padded.transpose(0, 2, 3, 1)                     # (n, h+2, w+2, c)
    sy = np.clip(sy + 1, 0, h + 1)
    sx = np.clip(sx + 1, 0, w + 1)
    y0 = np.minimum(np.floor(sy).astype(np.intp), h)
    x0 = np.minimum(np.floor(sx).astype(np.intp), w)
    fy = (sy - y0)[..., None].astype(work.dtype)
    fx = (sx - x0)[..., None].astype(work.dtype)
    i = np.arange(n)[:, None, None]
    top = padded[i, y0, x0] * (1 - fx) + padded[i, y0, x0 + 1] * fx
    bottom = padded[i, y0 + 1, x0] * (1 - fx) + padded[i, y0 + 1, x0 + 1] * fx
    out = (top * (1 - fy) + bottom * fy).transpose(0, 3, 1, 2)
    if x.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out, dtype=x.dtype)


def random_rotation(x, max_degrees=10.0, rng=None, fill=0):
    """Rotate each image by an angle drawn uniformly from [-max_degrees, max_degrees]."""
    x = _images(x, "random_rotation")
    return rotate(x, _rng(rng).uniform(-max_degrees, max_degrees, x.shape[0]), fill)


def random_hflip(x, p=0.5, rng=None):
    """Mirror each image left-right with probability ``p`` (see ``flip_allowed``)."""
    x = _images(x, "random_hflip")
    flip = _rng(rng).random(x.shape[0]) < p
    out = x.copy()
    out[flip] = x[flip, :, :, ::-1]
    return out


# ---------------------------------------------------------- normalisation
def channel_stats(x):
    """Per-channel mean and standard deviation (float64, (C,)) of images in [0, 1] units."""
    x = _images(x, "channel_stats")
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64) / scale
    sq = np.square(x, dtype=np.float64).mean(axis=(0, 2, 3)) / scale ** 2
    return mean, np.sqrt(np.maximum(sq - mean ** 2, 0.0))


def _stats(x, mean, std, who):
    c = x.shape[1]
    mean = np.asarray(mean, np.float64).reshape(-1)
    std = np.asarray(std, np.float64).reshape(-1)
    if mean.size not in (1, c) or std.size not in (1, c):
        raise AugmentError(f"{who}: images have {c} channels, got {mean.size} means and "
                           f"{std.size} stds")
    if (std <= 0).any():
        raise AugmentError(f"{who}: std must be positive, got {std.tolist()}")
    shape = (1, -1, 1, 1)
    return mean.reshape(shape), std.reshape(shape)


def normalize(x, mean, std, dtype=np.float32):
    """(x - mean[c]) / std[c] per channel; uint8 images are first scaled to [0, 1]."""
    x = _images(x, "normalize")
    mean, std = _stats(x, mean, std, "normalize")
    x = to_float(x)
    return ((x - mean.astype(dtype)) / std.astype(dtype)).astype(dtype, copy=False)


def denormalize(x, mean, std):
    """The inverse of ``normalize``: x * std[c] + mean[c] (in [0, 1] units)."""
    x = _images(x, "denormalize")
    mean, std = _stats(x, mean, std, "denormalize")
    return (x * std.astype(x.dtype) + mean.astype(x.dtype)).astype(x.dtype, copy=False)


# ----------------------------------------------------------------- pipeline
class Augment:
    """Random crop, rotation and flip in that order: ``batch = Augment(padding=4)(batch)``.

    ``data`` names the data set, so that asking to flip digits or letters is
    an error instead of a silent bug.
    """

    def __init__(self, padding=0, max_degrees=0.0, hflip=False, fill=0, rng=None, data=None):
        if hflip and data is not None and not flip_allowed(data):
            raise AugmentError(f"Augment: {data} must not be flipped left-right (a mirrored "
                               f"digit or letter is another class or none)")
        self.padding, self.max_degrees, self.hflip = int(padding), float(max_degrees), bool(hflip)
        self.fill, self.rng, self.data = fill, rng, data

    @classmethod
    def for_dataset(cls, name, rng=None):
        """The usual augmentation: CIFAR pad 4 + flip; clothes pad 2 + flip; characters pad 2 +
        rotation up to 10 degrees, no flip."""
        allowed = flip_allowed(name)
        key = str(name).lower()
        if key.startswith("cifar"):
            return cls(padding=4, hflip=True, rng=rng, data=name)
        if allowed:
            return cls(padding=2, hflip=True, rng=rng, data=name)
        return cls(padding=2, max_degrees=10.0, rng=rng, data=name)

    def __call__(self, x):
        x = _images(x, "Augment")
        if self.padding:
            x = random_crop(x, self.padding, self.rng, self.fill)
        if self.max_degrees:
            x = random_rotation(x, self.max_degrees, self.rng, self.fill)
        if self.hflip:
            x = random_hflip(x, 0.5, self.rng)
        return x

    def __repr__(self):
        return (f"Augment(padding={self.padding}, max_degrees={self.max_degrees}, "
                f"hflip={self.hflip})")
