"""Procedural textures and objects with injected defects and exact masks.

Used by tests and demos where the real benchmarks (MVTec-AD, VisA) are not
available. Every image is a pure function of ``(category, defect, size, seed)``:
the clean scene is drawn from one random stream and the defect from another,
so ``synthetic_image(c, None, s, seed)`` is exactly the defect-free version of
``synthetic_image(c, d, s, seed)``, and the returned mask is exactly the set of
pixels where the two differ.

>>> image, mask = synthetic_image("metal", "scratch", size=64, seed=3)
>>> image.shape, image.dtype, mask.shape, mask.dtype
((64, 64, 3), dtype('uint8'), (64, 64), dtype('bool'))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

#: Categories the generator can draw: three textures, a board and an object.
CATEGORIES = ("metal", "fabric", "pcb", "wood", "part")
#: All defect types; ``missing_part`` only exists for categories with removable parts.
DEFECTS = ("scratch", "stain", "hole", "crack", "missing_part")
#: The defect types that make sense for each category.
CATEGORY_DEFECTS = {
    "metal": ("scratch", "stain", "hole", "crack"),
    "fabric": ("scratch", "stain", "hole", "crack"),
    "pcb": ("scratch", "stain", "hole", "crack", "missing_part"),
    "wood": ("scratch", "stain", "hole", "crack"),
    "part": ("scratch", "stain", "hole", "crack", "missing_part"),
}

# Colours far from one another; defects take the one farthest from the local mean colour.
_DARK = np.array([18.0, 16.0, 14.0])
_BRIGHT = np.array([240.0, 238.0, 228.0])
_STAIN_COLOURS = np.array([[120.0, 45.0, 15.0], [25.0, 30.0, 70.0], [235.0, 205.0, 40.0]])


@dataclass
class _Scene:
    """A defect-free image plus what defects need to know about it.

    image: (H, W, 3) float64 in 0..255. allowed: (H, W) bool, where defects may
    be placed. underlay: the image without its removable parts (or None).
    parts: (H, W) int labels of removable parts, 0 = none (or None).
    """

    image: np.ndarray
    allowed: np.ndarray
    underlay: np.ndarray | None = None
    parts: np.ndarray | None = None


def _noise(rng: np.random.Generator, size: int, sigma) -> np.ndarray:
    """Gaussian-smoothed white noise of shape (size, size), zero mean, unit std."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:size, 0:size].astype(np.float64)


def _metal(rng: np.random.Generator, size: int) -> _Scene:
    """Brushed metal: grey with fine horizontal streaks and a soft gradient."""
    rows, cols = _grid(size)
    lum = 150 + 14 * _noise(rng, size, (0.6, size / 5)) + 3 * rng.standard_normal((size, size))
    lum += rng.uniform(-8, 8) * (cols / size - 0.5) + rng.uniform(-6, 6) * (rows / size - 0.5)
    image = lum[:, :, None] * np.array([0.97, 1.0, 1.05])
    return _Scene(image, np.ones((size, size), bool))


def _fabric(rng: np.random.Generator, size: int) -> _Scene:
    """Plain-woven fabric: alternating warp/weft threads in denim blue."""
    rows, cols = _grid(size)
    period = size / 16 * rng.uniform(0.95, 1.05)
    r, c = rows / period + rng.uniform(0, 1), cols / period + rng.uniform(0, 1)
    over = (np.floor(r) + np.floor(c)) % 2 == 0
    warp = 0.5 + 0.5 * np.cos(np.pi * (2 * c - 1)) ** 2
    weft = 0.5 + 0.5 * np.cos(np.pi * (2 * r - 1)) ** 2
    lum = np.where(over, warp, weft) + 0.06 * rng.standard_normal((size, size))
    image = (0.6 + 0.5 * lum)[:, :, None] * np.array([55.0, 75.0, 135.0])
    return _Scene(image, np.ones((size, size), bool))


def _wood(rng: np.random.Generator, size: int) -> _Scene:
    """Wood grain: distorted growth rings around a centre outside the image."""
    rows, cols = _grid(size)
    centre = np.array([rng.uniform(-0.5, 1.5), rng.uniform(-1.6, -1.2)]) * size
    radius = np.hypot(rows - centre[0], cols - centre[1])
    rings = np.sin(2 * np.pi * radius / (size / 10) + 1.5 * _noise(rng, size, size / 12))
    grain = _noise(rng, size, (size / 20, 0.7))
    t = np.clip(0.5 + 0.4 * rings + 0.12 * grain, 0, 1)[:, :, None]
    image = (1 - t) * np.array([150.0, 95.0, 55.0]) + t * np.array([205.0, 155.0, 100.0])
    return _Scene(image, np.ones((size, size), bool))


def _pcb(rng: np.random.Generator, size: int) -> _Scene:
    """Circuit board: green board, copper traces and pads, two black chips (removable)."""
    board = np.array([20.0, 105.0, 50.0]) + 5 * rng.standard_normal((size, size, 1))
    copper = np.array([195.0, 150.0, 70.0])
    width = max(1, size // 64)
    for _ in range(rng.integers(3, 6)):  # horizontal then vertical traces
        row, start, stop = rng.integers(0, size - width), *sorted(rng.integers(0, size, 2))
        board[row:row + width, start:stop + 1] = copper
        board[max(row - width, 0):row + 2 * width, start:start + 3 * width] = copper  # pad
    for _ in range(rng.integers(3, 6)):
        col, start, stop = rng.integers(0, size - width), *sorted(rng.integers(0, size, 2))
        board[start:stop + 1, col:col + width] = copper
        board[start:start + 3 * width, max(col - width, 0):col + 2 * width] = copper
    image, parts = board.copy(), np.zeros((size, size), int)
    cell, pin = size // 3, max(2, size // 48)
    for label, index in enumerate(rng.choice(9, size=2, replace=False), start=1):
        top = (index // 3) * cell + rng.integers(cell // 8, cell // 4)
        left = (index % 3) * cell + rng.integers(cell // 8, cell // 4)
        height, length = cell // 2, int(cell * 0.6)
        body = np.zeros((size, size), bool)
        body[top + pin:top + height - pin, left:left + length] = True
        pins = np.zeros((size, size), bool)
        pins[top:top + height, left:left + length] = True
        pins[top + pin:top + height - pin] = False  # pins along the top and bottom edges only
        pins[:, left + 2::3] = False  # with a one-pixel gap every third column
        image[body], image[pins] = [28.0, 28.0, 32.0], [165.0, 165.0, 170.0]
        parts[body | pins] = label
    return _Scene(image, np.ones((size, size), bool), underlay=board, parts=parts)


def _part(rng: np.random.Generator, size: int) -> _Scene:
    """A shaded metal disk with a bright inner ring on a light background (removable rim)."""
    rows, cols = _grid(size)
    background = np.array([205.0, 205.0, 195.0]) + 4 * rng.standard_normal((size, size, 1))
    centre = size / 2 + rng.uniform(-0.04, 0.04, 2) * size
    big = size * 0.34 * rng.uniform(0.97, 1.03)
    radius = np.hypot(rows - centre[0], cols - centre[1])
    disk = radius <= big
    lum = 85 + 45 * (1 - radius / big) + 25 * ((radius > 0.45 * big) & (radius < 0.55 * big))
    lum += 3 * rng.standard_normal((size, size))
    image = np.where(disk[:, :, None], lum[:, :, None] * np.array([1.0, 1.0, 1.04]), background)
    allowed = ndimage.binary_erosion(disk, iterations=max(2, size // 32))
    return _Scene(image, allowed, underlay=background, parts=disk.astype(int))


_SCENES = {"metal": _metal, "fabric": _fabric, "pcb": _pcb, "wood": _wood, "part": _part}


def _farthest(colours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return colours[np.argmax(np.linalg.norm(colours - reference, axis=1))]


def _random_point(rng: np.random.Generator, allowed: np.ndarray, margin: int) -> np.ndarray:
    inner = allowed.copy()
    inner[:margin], inner[-margin:], inner[:, :margin], inner[:, -margin:] = False, False, False, False
    candidates = np.argwhere(inner if inner.any() else allowed)
    return candidates[rng.integers(len(candidates))].astype(float)


def _rasterise(points: np.ndarray, size: int, thickness: int) -> np.ndarray:
    """Boolean (size, size) image of a dense polyline given as (K, 2) row/col points."""
    out = np.zeros((size, size), bool)
    idx = np.round(points).astype(int)
    idx = idx[(idx >= 0).all(1) & (idx < size).all(1)]
    out[idx[:, 0], idx[:, 1]] = True
    if thickness > 1:
        out = ndimage.binary_dilation(out, np.ones((thickness, thickness), bool))
    return out


def _walk(rng, start, angle, length, wiggle) -> np.ndarray:
    """Points of a random walk with unit steps; ``wiggle`` is the std of the turn per step."""
    angles = angle + np.cumsum(rng.normal(0, wiggle, int(length)))
    steps = np.stack([np.sin(angles), np.cos(angles)], axis=1)
    return start + np.cumsum(steps, axis=0)


def _defect_region(defect: str, scene: _Scene, rng: np.random.Generator, size: int) -> np.ndarray:
    """Boolean (size, size) region a defect will repaint, clipped to where it is allowed."""
    rows, cols = _grid(size)
    centre = _random_point(rng, scene.allowed, margin=size // 6)
    if defect == "scratch":
        angle, length = rng.uniform(0, np.pi), rng.uniform(0.35, 0.6) * size
        t = np.linspace(-0.5, 0.5, int(4 * length))[:, None]
        bend = rng.uniform(-0.08, 0.08) * size * (1 - 4 * t**2)
        direction, normal = np.array([np.sin(angle), np.cos(angle)]), np.array([np.cos(angle), -np.sin(angle)])
        region = _rasterise(centre + t * length * direction + bend * normal, size, max(2, size // 64))
    elif defect == "stain":
        radii, angle = rng.uniform(0.07, 0.13, 2) * size, rng.uniform(0, np.pi)
        dr, dc = rows - centre[0], cols - centre[1]
        u, v = dr * np.cos(angle) + dc * np.sin(angle), -dr * np.sin(angle) + dc * np.cos(angle)
        region = (u / radii[0]) ** 2 + (v / radii[1]) ** 2 + 0.3 * _noise(rng, size, size / 24) < 1
    elif defect == "hole":
        region = np.hypot(rows - centre[0], cols - centre[1]) <= rng.uniform(0.04, 0.08) * size
    elif defect == "crack":
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.45) * size
        trunk = _walk(rng, centre, angle, length, 0.3)
        branch = _walk(rng, trunk[len(trunk) // 2], angle + rng.choice([-1, 1]) * 0.8, length / 2, 0.3)
        region = _rasterise(np.concatenate([trunk, branch]), size, max(2, size // 64))
    elif defect == "missing_part":
        if scene.parts is None:
            raise ValueError("this category has no removable part")
        labels = np.unique(scene.parts[scene.parts > 0])
        if len(labels) > 1:  # a whole component goes missing
            region = scene.parts == rng.choice(labels)
        else:  # a notch is cut out of the rim
            rim = np.argwhere(scene.parts > 0)
            top, bottom = rim.min(0), rim.max(0)
            centre_part = (top + bottom) / 2
            angle = rng.uniform(0, 2 * np.pi)
            notch = centre_part + (bottom - top) / 2 * np.array([np.sin(angle), np.cos(angle)])
            region = (scene.parts > 0) & (np.hypot(rows - notch[0], cols - notch[1]) <= 0.12 * size)
        return region
    else:
        raise ValueError(f"unknown defect {defect!r}")
    return region & scene.allowed


def _apply_defect(defect: str, scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Return the defective image (float, 0..255) for ``scene``."""
    size = scene.image.shape[0]
    region = _defect_region(defect, scene, rng, size)
    if not region.any():  # a degenerate draw (should not happen): fall back to a small hole
        region = np.zeros((size, size), bool)
        centre = np.argwhere(scene.allowed)[0]
        region[centre[0]:centre[0] + 3, centre[1]:centre[1] + 3] = True
    clean = scene.image
    mean = clean[scene.allowed].mean(axis=0)
    out = clean.copy()
    if defect == "missing_part":
        out[region] = scene.underlay[region]
    elif defect == "stain":
        colour = _farthest(_STAIN_COLOURS, mean)
        out[region] = 0.3 * clean[region] + 0.7 * colour
    else:  # scratch, hole, crack: the darkest or brightest colour, keeping a trace of texture
        colour = _farthest(np.stack([_DARK, _BRIGHT]), mean)
        keep = 0.1 if defect == "hole" else 0.2
        out[region] = keep * clean[region] + (1 - keep) * colour
    out = np.clip(np.round(out), 0, 255)
    if defect != "missing_part":  # every pixel of a painted region must change
        same = region & (out == np.clip(np.round(clean), 0, 255)).all(axis=-1)
        out[same] = 255 - out[same]
    return out


def synthetic_image(
    category: str, defect: str | None = None, size: int = 128, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic image and its exact defect mask.

    Args:
        category: one of :data:`CATEGORIES`.
        defect: ``None`` (or ``"good"``) for a normal image, otherwise one of
            ``CATEGORY_DEFECTS[category]``.
        size: side length in pixels (square images; at least 32).
        seed: the scene and the defect are both functions of this seed; the
            scene does not depend on ``defect``.

    Returns:
        ``(image, mask)``: ``(size, size, 3) uint8`` RGB and ``(size, size) bool``,
        True exactly where the defect changed the clean image (all False when normal).
    """
    if category not in _SCENES:
        raise ValueError(f"Unknown category {category!r}; choose from {', '.join(CATEGORIES)}.")
    if defect not in (None, "good") and defect not in CATEGORY_DEFECTS[category]:
        raise ValueError(
            f"Defect {defect!r} is not available for {category!r}; "
            f"choose from {', '.join(CATEGORY_DEFECTS[category])}."
        )
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}.")
    scene = _SCENES[category](np.random.default_rng([seed, 0]), size)
    clean = np.clip(np.round(scene.image), 0, 255).astype(np.uint8)
    if defect in (None, "good"):
        return clean, np.zeros((size, size), bool)
    image = _apply_defect(defect, scene, np.random.default_rng([seed, 1])).astype(np.uint8)
    return image, (image != clean).any(axis=-1)


def _image_seed(seed: int, category: str, split: str, defect: str, index: int) -> int:
    """A stable per-image seed derived from the dataset seed and the image's identity."""
    kinds = ("good",) + DEFECTS
    key = [seed, CATEGORIES.index(category), ("train", "test").index(split), kinds.index(defect), index]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def make_synthetic_dataset(
    root: str | Path,
    categories: tuple[str, ...] = ("metal", "fabric", "pcb"),
    n_train_good: int = 8,
    n_test_good: int = 5,
    n_test_defect: int = 3,
    image_size: int = 128,
    seed: int = 0,
    defects: tuple[str, ...] | None = None,
) -> Path:
    """Write a synthetic dataset in the exact MVTec-AD layout and return its root.

    Layout: ``<root>/<category>/train/good/000.png``, ``<root>/<category>/test/<defect>/000.png``
    (``good`` included) and ``<root>/<category>/ground_truth/<defect>/000_mask.png``
    (single channel, 0/255). The same arguments always give byte-identical files.

    Args:
        root: output folder (created; existing files with the same names are overwritten).
        categories: subset of :data:`CATEGORIES`.
        n_train_good, n_test_good: normal images per category in train/test.
        n_test_defect: anomalous test images per category **and defect type**.
        image_size: side length in pixels.
        seed: dataset seed.
        defects: defect types to draw (default: all that apply to each category).
    """
    import imageio.v3 as iio

    root = Path(root)
    for category in categories:
        if category not in CATEGORIES:
            raise ValueError(f"Unknown category {category!r}; choose from {', '.join(CATEGORIES)}.")
        folder = root / category
        kinds = [("train", "good", n_train_good), ("test", "good", n_test_good)]
        allowed = CATEGORY_DEFECTS[category]
        kinds += [("test", d, n_test_defect) for d in (defects or allowed) if d in allowed]
        for split, defect, count in kinds:
            (folder / split / defect).mkdir(parents=True, exist_ok=True)
            if defect != "good":
                (folder / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                image_seed = _image_seed(seed, category, split, defect, index)
                image, mask = synthetic_image(category, defect, image_size, image_seed)
                iio.imwrite(folder / split / defect / f"{index:03d}.png", image)
                if defect != "good":
                    mask_path = folder / "ground_truth" / defect / f"{index:03d}_mask.png"
                    iio.imwrite(mask_path, mask.astype(np.uint8) * 255)
    return root
