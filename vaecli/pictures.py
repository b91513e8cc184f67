"""Pictures of a trained model: reconstructions, interpolations, latent traversals, latent
maps and a learned prior's components. Inputs are image files or dataset items, prepared
exactly as the model's training data."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vaecli.config import TrainConfig
from vaecli.datasets import model_data_dir
from vaecli.encoding import ALL_GROUPS, code_group
from vaecli.errors import UsageError, VaeError
from vaecli.evaluation import kl_per_dimension
from vaecli.images import check_grid, grid_png
from vaecli.modelfile import recorded_part
from vaecli.models import LatentVariableModel
from vaecli.priors.mixture import MixturePrior

DEFAULT_TRAVERSE_ROWS = 10


@dataclass
class DataChoice:
    """Which dataset to take images from: ``name`` (None: the model's own), where, and options."""

    name: str | None = None
    data_dir: str | None = None
    options: dict[str, Any] | None = None


@dataclass
class Inputs:
    """Images as given (uint8 (N, C, H, W)), the same prepared as the model's data, and labels."""

    images: torch.Tensor
    x: torch.Tensor
    labels: torch.Tensor | None = None


# --- where images come from -------------------------------------------------------------------


def _dataset_config(header: dict[str, Any], choice: DataChoice) -> TrainConfig:
    """Training options naming the chosen dataset (the model's own options where it is its own)."""
    trained = header.get("data") if isinstance(header.get("data"), dict) else {}
    own_name = trained.get("name")
    own_options = trained.get("options") if isinstance(trained.get("options"), dict) else {}
    given = dict(choice.options or {})
    if choice.name is None:
        if not isinstance(own_name, str):
            raise UsageError("the model does not record its dataset; name one with --data")
        name, options = recorded_part(header, "dataset", own_name, "the model"), {**own_options, **given}
    else:
        name, options = choice.name, given
        config = TrainConfig(data=name, data_options=options)
        if config.data == own_name:  # the model's own dataset: its options (e.g. size) by default
            options = {**own_options, **config.data_options}
    return TrainConfig(data=name, data_dir=model_data_dir(header, choice.data_dir), data_options=options)


def load_test_split(model: LatentVariableModel, header: dict[str, Any], choice: DataChoice) -> Inputs:
    """The test split of the chosen dataset, prepared once with training's fixed seed (so a
    binarised test set is the very one training reported on)."""
    from vaecli.evaluation import TEST_PREPARE_SEED, prepare_fixed
    from vaecli.training.run import load_split

    config = _dataset_config(header, choice)
    data = load_split(config, "test", model.input_shape)
    if data.shape != tuple(model.spec.input_shape if model.spec else data.shape):
        raise VaeError(
            f"dataset '{config.data}' has images of shape {data.shape}, but the model takes "
            f"{tuple(model.spec.input_shape) if model.spec else '?'}"
        )
    device = _device_of(model)
    images = data.images.to(device)
    x = prepare_fixed(model.likelihood, images, TEST_PREPARE_SEED)
    return Inputs(images=images, x=x, labels=data.labels)


def _fit_of(header: dict[str, Any]) -> str:
    trained = header.get("data") if isinstance(header.get("data"), dict) else {}
    options = trained.get("options") if isinstance(trained.get("options"), dict) else {}
    fit = options.get("fit", "stretch")
    return fit if isinstance(fit, str) else "stretch"


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) of an image file."""
    try:
        with Image.open(path) as opened:
            return opened.height, opened.width
    except (OSError, ValueError, SyntaxError) as exc:
        raise VaeError(f"cannot read {path}: {str(exc).strip() or type(exc).__name__}") from None


def read_files(
    model: LatentVariableModel, header: dict[str, Any], paths: Sequence[str | os.PathLike[str]], seed: int
) -> Inputs:
    """Image files (folders searched recursively) fitted to the model's shape as its dataset was,
    then prepared as its data (e.g. binarised) with ``seed``."""
    from vaecli.evaluation import prepare_fixed
    from vaecli.imagefiles import UnreadableImage, find_images, read_image

    files = list(find_images(paths))
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise VaeError(f"no such image file: {missing[0]}")
    if not files:
        raise VaeError(f"no image files in {', '.join(str(p) for p in paths)}")
    shape = tuple(model.spec.input_shape) if model.spec else None
    if shape is None:
        raise VaeError("the model has no recorded input shape")
    fit = _fit_of(header)
    images = []
    for file in files:
        try:
            images.append(read_image(file, shape, fit))
        except UnreadableImage as exc:
            raise VaeError(f"cannot read {file}: {exc}") from None
    stacked = torch.stack(images).to(_device_of(model))
    return Inputs(images=stacked, x=prepare_fixed(model.likelihood, stacked, seed))


_INDEX = re.compile(r"^(?:(?P<data>.+):)?(?P<index>-?\d+)$")


def resolve_reference(
    text: str, model: LatentVariableModel, header: dict[str, Any], choice: DataChoice, seed: int, what: str
) -> tuple[Inputs, tuple[int, int]]:
    """One image named by ``text``: an image file, ``DATA:INDEX`` or ``INDEX`` (into the test
    split of --data, else of the model's own dataset). Returns it and its size as given."""
    if Path(text).is_file():
        return read_files(model, header, [text], seed), image_size(text)
    match = _INDEX.match(text)
    if match is None and (Path(text).suffix or "/" in text):  # meant as a file
        folder = " (it is a folder)" if Path(text).is_dir() else ""
        raise VaeError(f"{what}: no such image file: {text}{folder}")
    if match is None:
        raise UsageError(
            f"{what} '{text}' is neither an image file nor a dataset index (like mnist:3, or 3 with --data)"
        )
    index = int(match["index"])
    data = DataChoice(match["data"], choice.data_dir, None) if match["data"] else choice
    split = load_test_split(model, header, data)
    count = split.images.shape[0]
    if not 0 <= index < count:
        raise UsageError(f"{what} '{text}': index {index} is outside the test set (0 to {count - 1})")
    item = Inputs(split.images[index : index + 1], split.x[index : index + 1])
    return item, tuple(split.images.shape[2:])  # type: ignore[return-value]


# --- the pictures ------------------------------------------------------------------------------


def _device_of(model: LatentVariableModel) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def decode_images(
    model: LatentVariableModel, z: torch.Tensor, mode: str = "mean", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Images in [0, 1] (N, C, H, W) on the CPU decoded from codes ``z`` in ``mode``."""
    model.likelihood.check_mode(mode)
    device = _device_of(model)
    parts = [
        model.likelihood.image(model.decode(chunk.to(device)), mode, generator) for chunk in z.split(1024)
    ]
    return torch.cat(parts).float().cpu()


@torch.no_grad()
def latent_means(model: LatentVariableModel, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The encoder means mu(x) (N, latent_dim) on the CPU."""
    return torch.cat([model.encode(chunk)[0] for chunk in x.split(batch_size)]).float().cpu()


def pixel_generator(model: LatentVariableModel, seed: int) -> torch.Generator:
    """The generator for drawn pixels (``--mode sample``), on the model's device."""
    return torch.Generator(device=_device_of(model)).manual_seed(seed)


def reconstructions(
    model: LatentVariableModel, inputs: Inputs, mode: str = "mean", seed: int = 0
) -> torch.Tensor:
    """decode(mu(x)) for each input: the model's reconstruction from its most likely code."""
    was_training = model.training
    model.eval()
    try:
        return decode_images(model, latent_means(model, inputs.x), mode, pixel_generator(model, seed))
    finally:
        model.train(was_training)


def reconstruction_grid(originals: torch.Tensor, reconstructed: torch.Tensor) -> bytes:
    """A PNG with one row per image: the original on the left, its reconstruction on the right."""
    originals = originals.float().cpu() / 255.0 if not originals.is_floating_point() else originals.cpu()
    pairs = torch.stack([originals, reconstructed.cpu()], dim=1).flatten(0, 1)
    return grid_png(pairs, nrow=2)


def interpolation_codes(a: torch.Tensor, b: torch.Tensor, steps: int, slerp: bool = False) -> torch.Tensor:
    """``steps`` codes from ``a`` to ``b`` (both ends included): on the straight line, or with
    ``slerp`` turning at a constant rate along the great circle from a's direction to b's while
    the length changes linearly from |a| to |b| (straight line if either is 0 or they are opposite)."""
    if steps < 2:
        raise UsageError(f"--steps must be at least 2, got {steps}")
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float64).unsqueeze(1)
    a64, b64 = a.double().flatten(), b.double().flatten()
    codes = (1 - t) * a64 + t * b64
    norm_a, norm_b = a64.norm(), b64.norm()
    if slerp and norm_a > 0 and norm_b > 0:
        unit_a, unit_b = a64 / norm_a, b64 / norm_b
        omega = torch.arccos(torch.clamp(unit_a @ unit_b, -1.0, 1.0))
        if 1e-6 < omega < math.pi - 1e-6:
            direction = (torch.sin((1 - t) * omega) * unit_a + torch.sin(t * omega) * unit_b) / torch.sin(
                omega
            )
            codes = ((1 - t) * norm_a + t * norm_b) * direction
    codes[0], codes[-1] = a64, b64
    return codes.to(a.dtype)


def traversal_codes(
    latent_dim: int, dims: Sequence[int], value_range: float, steps: int,
    centre: torch.Tensor | None = None, scale: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """For each of ``dims``, ``steps`` codes sweeping that dimension d over centre_d + scale_d *
    [-range, range] with every other dimension at its centre: (len(dims) * steps, latent_dim),
    row by row. The centre and scale (latent_dim,) are the prior's mean and standard deviation
    (0 and 1 unless given: N(0, I)'s)."""
    check_dims(dims, latent_dim)
    check_traversal(value_range, steps)
    centre = torch.zeros(latent_dim) if centre is None else centre.float().cpu()
    scale = torch.ones(latent_dim) if scale is None else scale.float().cpu()
    values = torch.linspace(-value_range, value_range, steps)
    codes = centre.repeat(len(dims), steps, 1)
    for row, dim in enumerate(dims):
        codes[row, :, dim] = centre[dim] + scale[dim] * values
    return codes.flatten(0, 1)


MAX_RANGE = 1e6  # far past any code a Gaussian prior gives; float32 decoders overflow long before 1e38


def check_traversal(value_range: float, steps: int) -> None:
    """--range and --steps, checked without allocating anything."""
    if steps < 2:
        raise UsageError(f"--steps must be at least 2, got {steps}")
    if not (math.isfinite(value_range) and value_range > 0):
        raise UsageError(f"--range must be a positive number, got {value_range}")
    if value_range > MAX_RANGE:
        raise UsageError(f"--range must be at most {MAX_RANGE:g}, got {value_range}")


def check_dims(dims: Sequence[int], latent_dim: int) -> None:
    if not dims:
        raise UsageError("--dims names no dimension")
    for dim in dims:
        if not 0 <= dim < latent_dim:
            raise UsageError(f"no latent dimension {dim}: the model has dimensions 0 to {latent_dim - 1}")


def parse_dims(text: str) -> list[int]:
    """``0,3,5`` to [0, 3, 5]."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(
            f"--dims wants comma-separated dimension numbers, e.g. 0,1,5; got '{text}'"
        ) from None


def top_kl_dims(
    model: LatentVariableModel, x: torch.Tensor, count: int, columns: slice | None = None
) -> tuple[list[int], torch.Tensor, str]:
    """The ``count`` dimensions (of the code's ``columns``, numbered from their first) with the
    highest mean KL on ``x`` (highest first), all their KLs and "KL"; for a model without a KL per
    dimension (a mixture prior, a hierarchy), by their activity Cov_x(E_q[z_d]) instead, and "Cov"."""
    columns = columns or slice(0, model.latent_dim)
    kl = kl_per_dimension(model, x)
    if kl is not None:
        score, what = kl[columns], "KL"
    else:
        score, what = latent_means(model, x)[:, columns].double().var(0, correction=0), "Cov"
    order = torch.argsort(score, descending=True, stable=True)
    return order[: min(count, score.shape[0])].tolist(), score, what


def project_2d(mu: torch.Tensor) -> tuple[torch.Tensor, tuple[str, str]]:
    """2-D points for latent means (N, D): the codes themselves when D = 2, else their projection
    on the first two principal components (exact SVD of the centred means; each axis signed so
    its largest loading is positive, so the picture does not flip between runs)."""
    if mu.shape[1] < 2:
        raise VaeError(f"a latent map needs at least 2 latent dimensions; the model has {mu.shape[1]}")
    if mu.shape[1] == 2:
        return mu.clone(), ("z0", "z1")
    centred = mu.double() - mu.double().mean(0)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    axes = torch.cat([vh[:2], vh.new_zeros(max(0, 2 - vh.shape[0]), vh.shape[1])])  # (one point: one axis)
    variance = torch.cat([singular, singular.new_zeros(2)]).pow(2)
    signs = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    axes = axes * signs
    share = (variance[:2] / variance.sum().clamp_min(1e-300) * 100).tolist()
    names = (f"PC1 ({share[0]:.0f}% of variance)", f"PC2 ({share[1]:.0f}% of variance)")
    return (centred @ axes.T).float(), names


# --- whole pictures, as the commands draw them ------------------------------------------------


@dataclass
class Picture:
    """A PNG and one line saying what it shows."""

    png: bytes
    note: str


def load(
    model_or_run: str | os.PathLike[str], device: str = "auto"
) -> tuple[LatentVariableModel, dict[str, Any]]:
    """The model (in eval mode, on the chosen device) and its header."""
    from vaecli.devices import choose_device
    from vaecli.modelfile import load_model

    return load_model(model_or_run, choose_device(device))


def reconstruct(
    model_or_run: str | os.PathLike[str],
    paths: Sequence[str | os.PathLike[str]] = (),
    data: DataChoice | None = None,
    n: int = 16,
    mode: str = "mean",
    seed: int = 0,
    device: str = "auto",
) -> Picture:
    """Image files (or the first ``n`` test images of a dataset) beside their reconstructions."""
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    model, header = load(model_or_run, device)
    model.likelihood.check_mode(mode)
    check_grid(2 * (len(paths) or n), model.input_shape, "--n" if not paths else "the image files", nrow=2)
    if paths:
        inputs = read_files(model, header, paths, seed)
    else:
        split = load_test_split(model, header, data or DataChoice())
        inputs = Inputs(split.images[:n], split.x[:n])
    grid = reconstruction_grid(inputs.images, reconstructions(model, inputs, mode, seed))
    return Picture(grid, f"{inputs.images.shape[0]} images (left) and their reconstructions (right)")


def interpolate(
    model_or_run: str | os.PathLike[str],
    a: str,
    b: str,
    steps: int = 10,
    slerp: bool = False,
    data: DataChoice | None = None,
    mode: str = "mean",
    seed: int = 0,
    device: str = "auto",
) -> Picture:
    """One row: decode along the line (or great circle) from mu(A) to mu(B)."""
    if steps < 2:
        raise UsageError(f"--steps must be at least 2, got {steps}")
    model, header = load(model_or_run, device)
    model.likelihood.check_mode(mode)
    check_grid(steps, model.input_shape, f"--steps {steps}", nrow=steps)
    choice = data or DataChoice()
    first, size_a = resolve_reference(a, model, header, choice, seed, "A")
    second, size_b = resolve_reference(b, model, header, choice, seed, "B")
    if size_a != size_b:
        raise UsageError(
            f"A is {size_a[1]}x{size_a[0]} pixels but B is {size_b[1]}x{size_b[0]}: "
            "interpolate between images of one size"
        )
    codes = interpolation_codes(
        latent_means(model, first.x)[0], latent_means(model, second.x)[0], steps, slerp
    )
    images = decode_images(model, codes, mode, pixel_generator(model, seed))
    how = "slerp" if slerp else "linear"
    return Picture(grid_png(images, nrow=steps), f"{steps} steps from {a} to {b} ({how})")


def traverse(
    model_or_run: str | os.PathLike[str],
    dims: Sequence[int] | None = None,
    value_range: float = 3.0,
    steps: int = 11,
    count: int = DEFAULT_TRAVERSE_ROWS,
    data: DataChoice | None = None,
    mode: str = "mean",
    seed: int = 0,
    device: str = "auto",
    group: str | None = None,
) -> Picture:
    """One row per latent dimension (by default the ``count`` with the highest KL on the test
    set): that dimension swept over [-range, range] prior standard deviations around the prior's
    mean, every other one at the mean. With ``group`` (a hierarchy's z1, z2, ...), the dimensions
    are that group's, numbered from 0, and the groups below it take their prior means given it."""
    check_traversal(value_range, steps)  # before any work
    if dims is None and count < 1:
        raise UsageError(f"--count must be at least 1, got {count}")
    model, header = load(model_or_run, device)
    model.likelihood.check_mode(mode)
    chosen, columns = code_group(model, group if group is not None else ALL_GROUPS)
    size = columns.stop - columns.start
    rows_asked = len(dims) if dims is not None else min(count, size)
    check_grid(rows_asked * steps, model.input_shape, f"--steps {steps}", nrow=steps)
    name = (lambda d: f"z{d}") if chosen == ALL_GROUPS else (lambda d: f"{chosen}[{d}]")  # noqa: E731
    if dims is None:
        split = load_test_split(model, header, data or DataChoice())
        dims, score, what = top_kl_dims(model, split.x, count, columns)
        rows = ", ".join(f"{name(d)} ({what} {score[d]:.2f})" for d in dims)
    else:
        check_dims(dims, size)
        rows = ", ".join(name(d) for d in dims)
    # The groups above the chosen one sit at their centres, those below take their prior means
    # given it (decode of the top groups' values): a row shows what one number of the group does.
    centre, scale = (t[: columns.stop] for t in model.code_moments())
    codes = traversal_codes(
        columns.stop, [columns.start + d for d in dims], value_range, steps, centre, scale
    )
    images = decode_images(model, codes, mode, pixel_generator(model, seed))
    return Picture(grid_png(images, nrow=steps), f"rows, top to bottom: {rows}")


def prior_components(
    model_or_run: str | os.PathLike[str],
    n: int = 32,
    mode: str = "mean",
    seed: int = 0,
    device: str = "auto",
) -> Picture:
    """A learned mixture prior's components, heaviest first (equal weights: in their order), as
    decode(mu_k) of each component's mean code (a hierarchy's top group: the groups below take
    their prior means); where the components are made from images (the VampPrior's
    pseudo-inputs, shown clipped to [0, 1]), each image on the left of its decoding."""
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    model, header = load(model_or_run, device)
    model.likelihood.check_mode(mode)
    name = header.get("model", {}).get("prior", "normal")
    if not isinstance(model.prior, MixturePrior):
        raise VaeError(
            f"the model's prior '{name}' is not a mixture: vae prior shows the components of a "
            "learned mixture prior (vamp, mog); vae sample draws from any prior"
        )
    with torch.no_grad():  # (the model is loaded in eval mode)
        log_weights, means, _ = model.prior.components()
        inputs = model.prior.component_inputs()
    log_weights = log_weights.float().cpu()
    order = torch.sort(log_weights, descending=True, stable=True).indices[:n]
    count, per_component = order.numel(), 2 if inputs is not None else 1
    columns = (math.isqrt(count - 1) + 1) * per_component
    check_grid(count * per_component, model.input_shape, f"--n {n}", nrow=columns)
    decoded = decode_images(model, means[order.to(means.device)], mode, pixel_generator(model, seed))
    which = "first" if bool((log_weights == log_weights[0]).all()) else "heaviest"
    note = f"the {which} {count} of the {log_weights.numel()} components of the {name} prior"
    if inputs is None:
        return Picture(grid_png(decoded, nrow=columns), f"{note}: the decoded mean of each")
    shown = inputs[order.to(inputs.device)].float().cpu()
    pairs = torch.stack([shown, decoded], dim=1).flatten(0, 1)
    return Picture(grid_png(pairs, nrow=columns), f"{note}: each image (left) beside its decoded mean")


def latent_map(
    model_or_run: str | os.PathLike[str],
    data: DataChoice | None = None,
    n: int | None = None,
    seed: int = 0,
    device: str = "auto",
) -> Picture:
    """The test set's latent means in 2-D (PCA past two dimensions), coloured by label."""
    from vaecli.plots import scatter_png

    if n is not None and n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    model, header = load(model_or_run, device)
    if model.latent_dim < 2:
        raise VaeError(f"a latent map needs at least 2 latent dimensions; the model has {model.latent_dim}")
    choice = data or DataChoice()
    split = load_test_split(model, header, choice)
    count = split.x.shape[0]
    chosen = torch.arange(count)
    if n is not None and n < count:  # a seeded random subset, kept in dataset order
        chosen = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    points, (xlabel, ylabel) = project_2d(latent_means(model, split.x[chosen.to(split.x.device)]))
    labels = None if split.labels is None else split.labels.cpu()[chosen].tolist()
    name = _dataset_config(header, choice).data
    png = scatter_png(
        points.tolist(), labels, f"{name} test set: latent means of {len(chosen)} images", xlabel, ylabel
    )
    return Picture(png, f"{len(chosen)} test images of {name} on {xlabel} and {ylabel}")
