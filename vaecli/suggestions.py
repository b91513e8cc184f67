"""What a dataset suggests when the user did not say: the ``folder`` dataset's image size and
channels, read from its files, and a likelihood that suits the images (``--likelihood auto``)."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops

#: The likelihood ``auto`` gives a dataset that suggests none (MNIST's binarised digits, plugins).
DEFAULT_LIKELIHOOD = "bernoulli"
#: An inferred size keeps the images' aspect ratio with its longer side at most this many pixels.
MAX_INFERRED_SIDE = 64
#: RGB files are looked at pixel by pixel (up to this many) to tell colour from grey saved as RGB.
COLOUR_PROBES = 64
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


@dataclass
class Suggestion:
    """Dataset options to add (never replacing given ones) and the likelihood for ``auto``, each
    with the line that tells the user what was chosen and how to choose otherwise."""

    options: dict[str, Any] = field(default_factory=dict)
    likelihood: str = DEFAULT_LIKELIHOOD
    options_note: str | None = None
    likelihood_note: str | None = None


def suggest_folder(path: str = "", size: Any = None, channels: Any = None, **_: Any) -> Suggestion:
    """Channels and size of a folder of images from its files (headers, and the pixels of a few
    RGB files), when not given; gaussian (dequantised 8-bit values) for colour images, bernoulli
    (binarised) for grey ones."""
    from vaecli.imagefiles import find_images

    if size is not None and channels is not None:  # (nothing to read the files for)
        colour = str(channels).strip() == "3"
        return Suggestion(likelihood="gaussian" if colour else DEFAULT_LIKELIHOOD,
                          likelihood_note=_likelihood_note(colour))  # fmt: skip
    files = list(find_images([Path(path)])) if Path(path).is_dir() else []
    looked = [(file, look) for file, look in zip(files, map(_look, files), strict=True) if look is not None]
    if not looked:
        return Suggestion()  # (the dataset itself says there are no readable images)
    looks = [look for _, look in looked]
    colour = _any_colour(looked) if channels is None else str(channels).strip() == "3"
    options: dict[str, Any] = {}
    inferred = []
    if channels is None:
        options["channels"] = 3 if colour else 1
        inferred.append("colour" if colour else "grey")
    if size is None:
        height, width = _common_size(looks)
        options["size"] = f"{height}x{width}"
        inferred.append(f"{height}x{width}")
    told = (
        f"folder {path}: {len(looks)} images, taken as {' '.join(inferred)} (from the files; "
        "--data-opt channels=1|3 and --data-opt size=HxW choose otherwise)"
    )
    likelihood = "gaussian" if colour else DEFAULT_LIKELIHOOD
    return Suggestion(options, likelihood, told if inferred else None, _likelihood_note(colour))


def suggest_colour(**_: Any) -> Suggestion:
    """What a dataset of 8-bit colour images suggests: the gaussian likelihood."""
    return Suggestion(likelihood="gaussian", likelihood_note=_likelihood_note(True))


def _likelihood_note(colour: bool) -> str:
    if colour:
        return "likelihood gaussian, for 8-bit colour images, dequantised (--likelihood chooses another)"
    return f"likelihood {DEFAULT_LIKELIHOOD}, for grey images, binarised (--likelihood chooses another)"


def _look(file: Path) -> tuple[str, int, int] | None:
    """(mode, height, width) from a file's header, or None for a file that is not an image."""
    try:
        with Image.open(file) as image:
            mode = image.mode
            if mode == "P":
                palette = image.getpalette() or []
                triples = zip(palette[0::3], palette[1::3], palette[2::3], strict=False)
                mode = "L" if all(r == g == b for r, g, b in triples) else "RGB"
            return mode, image.height, image.width
    except Exception:  # (unreadable files are reported, and skipped, when the dataset reads them)
        return None


def _any_colour(looked: list[tuple[Path, tuple[str, int, int]]]) -> bool:
    """Whether any file holds colour: a colour mode that is not grey saved as RGB (checked on the
    pixels of up to COLOUR_PROBES such files; past those, a colour mode is taken at its word)."""
    coloured = [file for file, (mode, _, _) in looked if mode not in GREY_MODES]
    for file in coloured[:COLOUR_PROBES]:
        try:
            with Image.open(file) as image:
                r, g, b = image.convert("RGB").split()
            if ImageChops.difference(r, g).getbbox() or ImageChops.difference(r, b).getbbox():
                return True
        except Exception:
            continue
    return len(coloured) > COLOUR_PROBES


def _common_size(looks: list[tuple[str, int, int]]) -> tuple[int, int]:
    """The most common image size, scaled to at most MAX_INFERRED_SIDE on its longer side."""
    (height, width), _ = collections.Counter((h, w) for _, h, w in looks).most_common(1)[0]
    longer = max(height, width)
    if longer <= MAX_INFERRED_SIDE:
        return height, width
    scale = MAX_INFERRED_SIDE / longer
    return max(4, round(height * scale)), max(4, round(width * scale))
