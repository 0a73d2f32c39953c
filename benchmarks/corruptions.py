"""MNIST-C-style corruptions (after Mu & Gilmer 2019), made deterministically here from uint8
images (N, 28, 28), plus blank and constant images. Nothing is downloaded or committed:
`corrupt(images, name)` rebuilds a corruption from the MNIST test set and a fixed seed.

Written from the paper's list and descriptions, with numpy and scipy.ndimage; severities are
this module's own choices. "edges" stands in for MNIST-C's Canny edges: a Sobel gradient
magnitude thresholded at a fraction of its maximum (thin outlines, no hysteresis).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

SEED = 2019


def _f(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float64) / 255.0


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _per_image(fn: Callable[[np.ndarray, np.random.Generator], np.ndarray]):
    def run(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.stack([fn(im, rng) for im in _f(images)])

    return run


def shot_noise(images, rng):
    return _u8(rng.poisson(_f(images) * 60.0) / 60.0)


def impulse_noise(images, rng):
    x = _f(images)
    hit = rng.random(x.shape) < 0.07
    x[hit] = rng.integers(0, 2, hit.sum())
    return _u8(x)


def gaussian_blur(images, rng):
    return _u8(ndimage.gaussian_filter(_f(images), sigma=(0, 1.5, 1.5)))


def motion_blur(images, rng):
    def one(im, rng):
        length, angle = 7, rng.uniform(-45, 45)
        kernel = np.zeros((length, length))
        kernel[length // 2, :] = 1.0
        kernel = ndimage.rotate(kernel, angle, reshape=False, order=1)
        return ndimage.convolve(im, kernel / kernel.sum(), mode="constant")

    return _u8(_per_image(one)(images, rng))


def rotate(images, rng):
    def one(im, rng):
        angle = rng.choice([-1, 1]) * rng.uniform(30, 60)
        return ndimage.rotate(im, angle, reshape=False, order=1)

    return _u8(_per_image(one)(images, rng))


def _affine(im: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    centre = (np.array(im.shape) - 1) / 2
    offset = centre - matrix @ centre
    return ndimage.affine_transform(im, matrix, offset=offset, order=1)


def shear(images, rng):
    def one(im, rng):
        s = rng.choice([-1, 1]) * rng.uniform(0.4, 0.7)
        return _affine(im, np.array([[1.0, s], [0.0, 1.0]]))

    return _u8(_per_image(one)(images, rng))


def scale(images, rng):
    def one(im, rng):
        factor = rng.choice([0.5, 1.6])  # shrunk or grown past the frame
        return _affine(im, np.eye(2) / factor)

    return _u8(_per_image(one)(images, rng))


def translate(images, rng):
    def one(im, rng):
        return ndimage.shift(im, rng.choice([-1, 1], 2) * rng.integers(5, 8, 2), order=0)

    return _u8(_per_image(one)(images, rng))


def brightness(images, rng):
    return _u8(_f(images) * 0.6 + 0.4)


def contrast(images, rng):
    x = _f(images)
    return _u8((x - 0.5) * 0.3 + 0.5)


def inverse(images, rng):
    return 255 - images


def stripe(images, rng):
    x = _f(images)
    x[:, :, 12:16] = 1.0 - x[:, :, 12:16]
    return _u8(x)


def zigzag(images, rng):
    out = _f(images)
    for im in out:
        y0 = rng.integers(4, 24)
        cols = np.arange(28)
        rows = (y0 + 4 * np.abs(((cols / 4.0) % 2) - 1)).astype(int).clip(0, 27)
        im[rows, cols] = 1.0
        im[(rows + 1).clip(0, 27), cols] = 1.0
    return _u8(out)


def dotted_line(images, rng):
    out = _f(images)
    for im in out:
        r = rng.integers(3, 25)
        im[r, ::3] = 1.0
        c = rng.integers(3, 25)
        im[::3, c] = 1.0
    return _u8(out)


def fog(images, rng):
    n = len(images)
    coarse = rng.random((n, 7, 7))
    haze = ndimage.zoom(coarse, (1, 4, 4), order=1)
    return _u8(np.maximum(_f(images), 0.5 * haze))


def spatter(images, rng):
    out = _f(images)
    for im in out:
        blobs = ndimage.gaussian_filter(rng.random((28, 28)), 1.2)
        im[blobs > np.quantile(blobs, 0.9)] = 0.8
    return _u8(out)


def edges(images, rng):
    x = ndimage.gaussian_filter(_f(images), sigma=(0, 0.7, 0.7))
    mag = np.hypot(ndimage.sobel(x, axis=1), ndimage.sobel(x, axis=2))
    top = mag.reshape(len(x), -1).max(1)[:, None, None] + 1e-12
    return _u8((mag / top > 0.35).astype(np.float64))


def blank(images, rng):
    return np.zeros_like(images)


def constant(images, rng):
    levels = rng.integers(1, 256, len(images), dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None], images.shape).copy()


CORRUPTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "shot noise": shot_noise,
    "impulse noise": impulse_noise,
    "gaussian blur": gaussian_blur,
    "motion blur": motion_blur,
    "rotate": rotate,
    "shear": shear,
    "scale": scale,
    "translate": translate,
    "brightness": brightness,
    "contrast": contrast,
    "inverse": inverse,
    "stripe": stripe,
    "zigzag": zigzag,
    "dotted line": dotted_line,
    "fog": fog,
    "spatter": spatter,
    "edges": edges,
    "blank": blank,
    "constant": constant,
}


def corrupt(images: np.ndarray, name: str, seed: int = SEED) -> np.ndarray:
    """The corruption `name` of uint8 images (N, 28, 28): the same bytes on every call."""
    if images.ndim == 4:
        return corrupt(images[:, 0], name, seed)[:, None]
    rng = np.random.default_rng([seed, sorted(CORRUPTIONS).index(name)])
    return np.ascontiguousarray(CORRUPTIONS[name](images, rng), dtype=np.uint8)
