"""DRAEM's anomaly-source textures, from disk: scikit-image's sample photos or a DTD folder.

anomalib downloads the Describable Textures Dataset when its folder is missing. The bridge
never does: ``textures="skimage"`` (the default) takes sample photos that install with
scikit-image (sources and licences: the ``skimage.data`` docstrings), leaving out brick,
grass and gravel, from which fsad-bench's synthetic dataset is made (a texture that is the
category itself would make the synthetic anomalies invisible); any other value is a folder
of images, e.g. DTD's ``dtd/images``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fsad_bench.errors import DatasetError

SKIMAGE_TEXTURES = (
    "astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
    "hubble_deep_field.jpg", "ihc.png", "moon.png", "retina.jpg", "rocket.jpg", "text.png",
)  # fmt: skip
# page.png is left out: its colour profile makes libpng warn on every read
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class TextureSource:
    folder: Path  # what anomalib's DRAEM is given (it must exist, or anomalib downloads)
    files: tuple[Path, ...]  # sorted: a drawn index means the same image on every machine
    description: str


def skimage_folder() -> Path:
    import skimage.data

    return Path(skimage.data.data_dir)


def resolve_textures(textures: str) -> TextureSource:
    if textures == "skimage":
        import skimage

        folder = skimage_folder()
        files = tuple(folder / name for name in SKIMAGE_TEXTURES if (folder / name).is_file())
        if len(files) != len(SKIMAGE_TEXTURES):
            raise DatasetError(
                f"scikit-image's sample photos are incomplete in {folder}; reinstall "
                "scikit-image or pass --param anomalib.textures=DTD_FOLDER"
            )
        names = ", ".join(f.name for f in files)
        return TextureSource(folder, files, f"scikit-image {skimage.__version__} photos: {names}")
    folder = Path(textures).expanduser()
    if not folder.is_dir():
        raise DatasetError(
            f"texture folder {folder} does not exist; pass a folder of images (e.g. DTD's "
            "dtd/images) or 'skimage' for scikit-image's sample photos"
        )
    files = tuple(sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
    if not files:
        raise DatasetError(f"texture folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return TextureSource(folder.resolve(), files, f"{len(files)} images under {folder.resolve()}")
