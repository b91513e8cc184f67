"""Image files to 8-bit tensors: finding them, reading any PNG/JPEG/... mode, and fitting them
to a model's channels and size. Used by the folder dataset (and anything reading image files)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from vaecli.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
FITS = ("stretch", "crop", "pad")


class UnreadableImage(Exception):
    """A file that is not an image vaecli can read; the message says why."""


def find_images(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Image files among ``paths``: files as given, folders searched recursively in a stable
    order: each folder's files sorted by name, then each of its subfolders (sorted by name) in
    the same way; hidden files and folders skipped. (Not the order of ``sorted()`` on whole
    paths or ``find | sort``, where a folder's files and its subfolders' interleave.)"""
    for given in paths:
        path = Path(given)
        if path.is_dir():
            yield from map(Path, image_files_under(path))
        else:
            yield path


def image_files_under(folder: str | os.PathLike[str]) -> Iterator[str]:
    """The image files in ``folder``, recursively, in :func:`find_images`' order, as strings (no
    Path objects: listing 20,000 files then takes a tenth of the time, which a cached dataset's
    start is mostly made of)."""
    for where, subfolders, files in os.walk(folder):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                yield os.path.join(where, name)


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit grey scaled (not clipped) to 8 bits; palettes expanded."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        return image.convert("RGBA")
    return image


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Transparent pixels become black (as on MNIST's background)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return image


def _fit(image: Image.Image, height: int, width: int, fit: str) -> Image.Image:
    if image.size == (width, height):
        return image
    if fit == "crop":  # the largest centred box of the target's aspect ratio, then scale
        scale = max(width / image.width, height / image.height)
        w, h = round(width / scale), round(height / scale)
        left, top = (image.width - w) // 2, (image.height - h) // 2
        image = image.crop((left, top, left + w, top + h))
    elif fit == "pad":  # scale to fit inside, then pad with black
        scale = min(width / image.width, height / image.height)
        w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        canvas = Image.new(image.mode, (width, height))
        canvas.paste(image.resize((w, h), Image.Resampling.LANCZOS), ((width - w) // 2, (height - h) // 2))
        return canvas
    return image.resize((width, height), Image.Resampling.LANCZOS)


def read_image(
    path: str | os.PathLike[str], shape: tuple[int, int, int], fit: str = "stretch"
) -> torch.Tensor:
    """The image at ``path`` as uint8 (C, H, W) of ``shape``: grey (C = 1) or RGB (C = 3),
    turned upright by its EXIF orientation and resized by ``fit`` (stretch, crop or pad).
    Raises :class:`UnreadableImage` for anything that is not a readable image."""
    channels, height, width = shape
    if channels not in (1, 3):
        raise UsageError(f"images can be read as 1 (grey) or 3 (RGB) channels, not {channels}")
    if fit not in FITS:
        raise UsageError(f"unknown fit '{fit}' (use {', '.join(FITS)})")
    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened) if "exif" in opened.info else opened
            image = _flatten_alpha(_to_8bit(image))
            if image.mode != mode:
                image = image.convert(mode)
            pixels = bytearray(_fit(image, height, width, fit).tobytes())
    except UnidentifiedImageError:
        raise UnreadableImage("empty file" if _is_empty(path) else "not an image file") from None
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(f"too large to read safely ({exc})") from None
    except OSError as exc:  # truncated or corrupt data, an unreadable or missing file, a folder
        reason = exc.strerror if exc.filename is not None and exc.strerror else str(exc).strip()
        raise UnreadableImage(reason or type(exc).__name__) from None
    except Exception as exc:  # a decoder tripping over hostile bytes must not stop a whole run
        raise UnreadableImage(f"corrupt image data ({type(exc).__name__}: {exc})") from None
    image_hwc = torch.frombuffer(pixels, dtype=torch.uint8).view(height, width, channels)
    return image_hwc.permute(2, 0, 1).contiguous()


def _is_empty(path: str | os.PathLike[str]) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False
