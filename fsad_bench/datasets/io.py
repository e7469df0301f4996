"""Decoding images and masks into tensors, with one-line errors for files that cannot be read.

Every image becomes float32 RGB in [0, 1] whatever its mode: grayscale is repeated over
three channels, palette images go through their palette, 16-bit images are scaled by
65535 (not clipped at 255), and transparency is composited onto black so that hidden
colour under transparent pixels never reaches a method. EXIF orientation is applied to
images and masks alike, so a mask drawn on the displayed image lines up with it.

Resizing squashes to ``size x size`` (no crop, so masks stay aligned) with antialiased
bilinear interpolation (``torch.nn.functional.interpolate(antialias=True)``, the same as
torchvision's ``resize`` on tensors and close to PIL's BILINEAR). It works on the float
image, so 16-bit precision survives, and unlike bicubic it never overshoots [0, 1].
Masks are binarised at full resolution and resized with nearest neighbour.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from fsad_bench.datasets.base import Category
from fsad_bench.errors import DatasetError

# What Pillow raises for empty, truncated or corrupt files, depending on the format plugin.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error,
                  Image.DecompressionBombError)  # fmt: skip
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}
# EXIF orientations 5-8 rotate by 90 degrees, so the stored width is the displayed height.
_TRANSPOSED = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TestSet:
    """A decoded test set; ``masks`` is None when the category has image-level labels only."""

    images: torch.Tensor  # (N, 3, S, S) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64, 1 = anomalous
    masks: torch.Tensor | None  # (N, S, S) bool
    paths: tuple[str, ...]  # relative to the category's data root, POSIX style
    defects: tuple[str, ...] = ()  # each image's defect kind ("good" for normal images)


def decode_error(path: Path, exc: BaseException) -> DatasetError:
    """The one message for a file that exists but cannot be decoded."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return DatasetError(f"{path}: cannot decode image ({reason}); re-extract or delete this file")


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DatasetError(
            f"{path}: image file not found; check --data-root and that the dataset is complete"
        )
    if path.stat().st_size == 0:
        raise decode_error(path, OSError("empty file, 0 bytes"))


def _header_orientation(img: Image.Image) -> int:
    # PNG's getexif() decodes the pixels to look for an eXIf chunk after them; only the
    # chunk already met in the header counts here (such late chunks are vanishingly rare).
    if img.format == "PNG":
        raw = img.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return exif.get(_EXIF_ORIENTATION, 1)
    return img.getexif().get(_EXIF_ORIENTATION, 1)


def image_size_of(path: Path) -> tuple[int, int]:
    """(height, width) as displayed, from the header only: no pixel data is decoded."""
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = _header_orientation(img)
    except _DECODE_ERRORS as exc:
        raise decode_error(path, exc) from exc
    return (width, height) if orientation in _TRANSPOSED else (height, width)


def _to_float_rgb(img: Image.Image) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from any common Pillow mode."""
    if img.mode in _SIXTEEN_BIT:
        # Mode "I" is how Pillow may open 16-bit PNG/TIFF; values are taken as 0..65535.
        gray = np.asarray(img).astype(np.float32) / 65535.0
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=2)
    if img.mode in _ALPHA or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        return rgba[..., :3] * rgba[..., 3:]  # composite onto black
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _decode(path: Path) -> np.ndarray:
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "F":
                raise DatasetError(
                    f"{path}: 32-bit float images are not supported; save it as 8- or 16-bit PNG"
                )
            return _to_float_rgb(ImageOps.exif_transpose(img))
    except DatasetError:
        raise
    except _DECODE_ERRORS as exc:
        raise decode_error(path, exc) from exc


def _resize_image(array: np.ndarray, size: int) -> torch.Tensor:
    image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    if tuple(image.shape[1:]) != (size, size):
        image = F.interpolate(
            image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0]
    return image.clamp_(0.0, 1.0).contiguous()


def load_image(path: Path, size: int) -> torch.Tensor:
    """(3, size, size) float32 in [0, 1]."""
    return _resize_image(_decode(path), size)


def load_mask(path: Path, size: int, expected_hw: tuple[int, int]) -> torch.Tensor:
    """(size, size) bool; a pixel is anomalous when its brightest channel is >= half the range.

    Half the range (128 of 255, 32768 of 65535) keeps anti-aliased edges of 0/255 masks on
    the side they are closest to. A mask whose brightest pixel is below half the range is a
    label map (0/1, as many tools save them) and every non-zero pixel is anomalous: read
    with the half-range rule it would be empty and the pixel metrics silently wrong.
    ``expected_hw`` is the image's original (height, width).
    """
    array = _decode(path)
    height, width = array.shape[:2]
    if (height, width) != tuple(expected_hw):
        eh, ew = expected_hw
        raise DatasetError(
            f"{path}: mask is {height}x{width} (HxW) but its image is {eh}x{ew}; "
            "re-export the mask at the image's size"
        )
    brightest = array.max(axis=2)
    label_map = brightest.max() < 0.5
    binary = torch.from_numpy(brightest > 0 if label_map else brightest >= 0.5)
    if (height, width) == (size, size):
        return binary
    resized = F.interpolate(binary[None, None].float(), size=(size, size), mode="nearest-exact")
    return resized[0, 0] > 0.5


def load_category_tensors(
    category: Category, size: int, progress: Progress | None = None
) -> TestSet:
    """Decode the whole test set; good images get all-zero masks. ``progress(done, total)``."""
    total = len(category.test)
    if total == 0:
        raise DatasetError(f"{category.root}: category {category.name!r} has no test images")
    images = torch.empty((total, 3, size, size), dtype=torch.float32)
    masks = torch.zeros((total, size, size), dtype=torch.bool) if category.has_masks else None
    for index, item in enumerate(category.test):
        array = _decode(item.path)
        images[index] = _resize_image(array, size)
        if masks is not None and item.mask is not None:
            masks[index] = load_mask(item.mask, size, array.shape[:2])
        elif masks is not None and item.label == 1:
            raise DatasetError(
                f"{item.path}: anomalous test image without a mask in category "
                f"{category.name!r}, which declares masks; add the mask or drop the image"
            )
        if progress is not None:
            progress(index + 1, total)
    labels = torch.tensor([item.label for item in category.test], dtype=torch.int64)
    paths = tuple(category.relpath(item.path) for item in category.test)
    return TestSet(images, labels, masks, paths, tuple(item.defect for item in category.test))
