"""Scoring a model on a set of prepared images: the ELBO and its terms, the importance-sampled
estimate of log p(x), and the diagnostics of the latent space.

Since log p(x) = ELBO(x) + KL(q(z|x) || p(z|x)), the ELBO alone under-states a model by an
unknown gap. With z_1..z_k ~ q(z|x),

    log p(x) ~ logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k

is a lower bound on log p(x) that tightens as k grows (Burda et al. 2015, the IWAE bound) and
equals the ELBO in expectation at k = 1. :func:`evaluate` computes it in chunks of images x
samples, each one vectorised computation, so memory stays bounded for any k.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vaecli.datasets import load_dataset, model_data_dir
from vaecli.devices import choose_device
from vaecli.errors import UsageError, VaeError
from vaecli.fileio import strict_json, write_text_atomic
from vaecli.likelihoods import Likelihood
from vaecli.modelfile import load_model, model_path, recorded_part
from vaecli.models import LatentVariableModel
from vaecli.runs import EVAL_FOLDER

if TYPE_CHECKING:
    from vaecli.config import EvalConfig

EVAL_SEED = 1234  # the noise of test-set evaluation is fixed, so numbers compare across runs
TEST_PREPARE_SEED = 0  # the test set is prepared (e.g. binarised) once, the same in every run
ACTIVE_THRESHOLD = 0.01  # a latent dimension is active when Cov_x(E_q[z_d]) exceeds this
CHUNK_BYTES = 256 << 20  # the working memory of one chunk of decoded samples
MAX_CHUNK_SAMPLES = 8192  # more decoded samples at once gains no speed
#: A run folder's evaluations: one file per setting, so a quick look never replaces a long one.

Progress = Callable[[int, int], None]  # (images done, images in all)


def bits_per_dim(nats: float, dims: int) -> float:
    """Nats per image to bits per dimension: nats / (D ln 2)."""
    return nats / (dims * math.log(2.0))


@torch.no_grad()
def prepare_fixed(likelihood: Likelihood, images: torch.Tensor, seed: int) -> torch.Tensor:
    """Prepare a whole uint8 set once with a fixed seed (e.g. the binarised test set)."""
    generator = torch.Generator(device=images.device).manual_seed(seed)
    return torch.cat([likelihood.prepare(chunk, generator) for chunk in images.split(4096)])


@torch.no_grad()
def mean_elbo(
    model: LatentVariableModel, data: torch.Tensor, batch_size: int = 1000, seed: int = EVAL_SEED
) -> dict[str, Any]:
    """-ELBO, reconstruction (-E_q log p(x|z)) and KL, averaged over ``data``, in nats/image; for a
    model of several latent groups also the KL of each (``kl_z1``, ``kl_z2``, ...)."""
    generator = torch.Generator(device=data.device).manual_seed(seed)
    groups = model.kl_groups()
    totals = torch.zeros(3 + len(groups), dtype=torch.float64, device=data.device)
    with model.evaluating():
        for start in range(0, data.shape[0], batch_size):
            x = data[start : start + batch_size]
            eps = torch.randn(
                (x.shape[0], model.noise_dim()), generator=generator, device=x.device, dtype=x.dtype
            )
            terms = model(x, eps)
            elbo = terms.elbo()
            per_group = model.kl_by_group(terms.kl).double().sum(0)
            sums = torch.stack([-elbo.elbo.sum(), -elbo.reconstruction.sum(), elbo.kl.sum()]).double()
            totals += torch.cat([sums, per_group])
    neg_elbo, reconstruction, kl, *kls = (totals / data.shape[0]).tolist()
    result = {"neg_elbo": neg_elbo, "reconstruction": reconstruction, "kl": kl}
    if len(groups) > 1:
        result.update({f"kl_{name}": value for name, value in zip(groups, kls, strict=True)})
    if model.likelihood.reports_bits_per_dim:
        result["bits_per_dim"] = bits_per_dim(neg_elbo, math.prod(data.shape[1:]))
    return result


@torch.no_grad()
def kl_per_dimension(
    model: LatentVariableModel, data: torch.Tensor, batch_size: int = 1000
) -> torch.Tensor | None:
    """KL(q(z_d|x) || p(z_d)) for each latent dimension d, averaged over ``data``: a float64
    tensor (latent_dim,) in nats/image on the CPU whose entries sum to the mean KL term; None
    when the model's prior has no closed-form KL per dimension (a mixture)."""
    if not model.kl_exact:
        return None
    totals = torch.zeros(model.latent_dim, dtype=torch.float64, device=data.device)
    with model.evaluating():
        for start in range(0, data.shape[0], batch_size):
            totals += model.kl_per_dimension(data[start : start + batch_size]).double().sum(0)
    return (totals / max(data.shape[0], 1)).cpu()


@dataclass
class PerImage:
    """Per-image numbers in nats (float64, on the CPU), in the order of the data."""

    elbo: torch.Tensor
    log_px: torch.Tensor  # the importance-sampled estimate
    mu: torch.Tensor  # E_q[z] for each image, (N, latent_dim)


@dataclass
class EvalReport:
    """Per-image averages in nats (bits/dim where the likelihood models 8-bit data)."""

    images: int
    k: int
    seed: int
    neg_elbo: float
    neg_elbo_stderr: float | None
    reconstruction: float  # -E_q[log p(x|z)], from the k samples
    kl: float  # KL(q(z|x) || p(z)): closed form where the prior has one, else from the k samples
    neg_log_px: float  # -(importance-sampled estimate of log p(x))
    neg_log_px_stderr: float | None
    gap: float  # log p(x) estimate - ELBO: an estimate of KL(q(z|x) || p(z|x))
    gap_stderr: float | None
    kl_per_dim: list[float] | None  # None where the prior has no closed-form KL per dimension
    kl_per_group: dict[str, float]
    activity: list[float]  # Cov_x(E_q[z_d]) per latent dimension
    active_units: int
    bits_per_dim: dict[str, float] | None
    seconds: float
    per_image: PerImage = field(repr=False)
    active_threshold: float = ACTIVE_THRESHOLD
    #: Per latent group (name: size, top first), and the active units in each.
    groups: dict[str, int] = field(default_factory=dict)
    active_per_group: dict[str, int] = field(default_factory=dict)
    #: Where the numbers come from (model, data, split, ...), filled in by :func:`evaluate_model`.
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def latent_dim(self) -> int:
        return len(self.activity)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data (per-image tensors left out)."""
        return {
            **self.source,
            "images": self.images,
            "k": self.k,
            "seed": self.seed,
            "neg_elbo": self.neg_elbo,
            "neg_elbo_stderr": self.neg_elbo_stderr,
            "reconstruction": self.reconstruction,
            "kl": self.kl,
            "neg_log_px": self.neg_log_px,
            "neg_log_px_stderr": self.neg_log_px_stderr,
            "gap": self.gap,
            "gap_stderr": self.gap_stderr,
            **({"bits_per_dim": self.bits_per_dim} if self.bits_per_dim is not None else {}),
            "latent_dim": self.latent_dim,
            "active_units": self.active_units,
            "active_threshold": self.active_threshold,
            "kl_per_dim": self.kl_per_dim,
            "kl_per_group": self.kl_per_group,
            "groups": self.groups,
            "active_per_group": self.active_per_group,
            "activity": self.activity,
            "seconds": self.seconds,
            "images_per_s": self.images / self.seconds if self.seconds > 0 else None,
        }


def chunk_shape(k: int, samples_at_once: int) -> tuple[int, int]:
    """(images, samples per image) of one chunk holding at most ``samples_at_once`` samples:
    all k samples of as many images as fit, or, for large k, part of the samples of one image."""
    if k <= samples_at_once:
        return samples_at_once // k, k
    return 1, samples_at_once


def default_samples_at_once(model: LatentVariableModel, input_shape: tuple[int, ...]) -> int:
    """How many samples to decode at once so one chunk's tensors stay near ``CHUNK_BYTES``.

    The decoder and the likelihood's log p(x|z) are run on one z with hooks that add up the sizes
    of every module's output (an upper bound on their activations: an autoregressive
    likelihood's layers count too); the likelihood's own arithmetic adds a few image-sized
    tensors."""
    sizes: list[int] = []

    def record(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        sizes.append(output.numel() if isinstance(output, torch.Tensor) else 0)

    device = _device_of(model)
    hooks = [m.register_forward_hook(record) for m in model.modules()]  # (those decode runs record)
    try:
        with torch.no_grad():
            params = model.decode(torch.zeros(1, model.latent_dim, device=device))
            black = torch.zeros(1, *input_shape, dtype=torch.uint8, device=device)
            x = model.likelihood.prepare(black, torch.Generator(device).manual_seed(0))
            model.likelihood.log_prob(x, params)
    finally:
        for hook in hooks:
            hook.remove()
    floats = sum(sizes) + 3 * params.numel() + 4 * math.prod(input_shape)
    return max(1, min(MAX_CHUNK_SAMPLES, CHUNK_BYTES // (4 * floats)))


def _device_of(model: LatentVariableModel) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _dtype_of(model: LatentVariableModel) -> torch.dtype:
    parameter = next(model.parameters(), None)
    return parameter.dtype if parameter is not None else torch.float32


def _stderr(values: torch.Tensor) -> float | None:
    """The standard error of the mean of ``values`` (None for fewer than two)."""
    if values.numel() < 2:
        return None
    return (values.std() / math.sqrt(values.numel())).item()


@torch.no_grad()
def evaluate(
    model: LatentVariableModel,
    data: torch.Tensor,
    k: int = 1000,
    seed: int = 0,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    """Score ``model`` on prepared images ``data`` (N, C, H, W) with k importance samples each.

    ``batch_size`` is how many samples (images x samples per image) are decoded at once, which
    bounds memory whatever k is (default: what fits ``CHUNK_BYTES``). The samples are drawn on
    the model's device from a generator seeded with ``seed``: the same seed, ``batch_size`` and
    device give the same numbers (another batch size draws other samples; the estimates then
    differ by Monte Carlo noise only).
    """
    if k < 1:
        raise UsageError(f"k must be at least 1, got {k}")
    if data.shape[0] < 1:
        raise VaeError("no images to evaluate")
    started = time.perf_counter()
    device = _device_of(model)
    at_once = batch_size or default_samples_at_once(model, tuple(data.shape[1:]))
    images_per_chunk, samples_per_chunk = chunk_shape(k, at_once)
    generator = torch.Generator(device=device).manual_seed(seed)
    n, d = data.shape[0], model.latent_dim
    # Results are written into tensors made once: small tensors kept from every chunk would
    # sit between the chunks' large temporaries on the heap and let memory grow with n.
    elbo, log_px, recon = (torch.empty(n, dtype=torch.float64) for _ in range(3))
    mu_all = torch.empty(n, d, dtype=torch.float64)
    kl: torch.Tensor | None = None  # (n, the KL's parts), made at the first chunk
    with model.evaluating():  # (a VampPrior encodes its pseudo-inputs once, not once a chunk)
        for start in range(0, n, images_per_chunk):
            x = data[start : start + images_per_chunk].to(device)
            b, rows = x.shape[0], slice(start, start + x.shape[0])
            sums = _importance_sums(model, x, k, samples_per_chunk, generator)
            kl = torch.empty(n, sums.kl.shape[1], dtype=torch.float64) if kl is None else kl
            kl[rows], recon[rows], log_px[rows] = sums.kl.cpu(), sums.reconstruction.cpu(), sums.log_px.cpu()
            elbo[rows] = recon[rows] - kl[rows].sum(1)
            mu_all[rows] = model.encode(x)[0].double().cpu()
            if progress is not None:
                progress(start + b, n)
    return _report(model, data, k, seed, PerImage(elbo=elbo, log_px=log_px, mu=mu_all), recon, kl, started)


@dataclass
class ImportanceSums:
    """Per image, float64 on the model's device: log (1/k) sum_s w_s (the IS estimate of log p(x)),
    the mean of log p(x|z_s), and the KL's parts (closed form, or the mean of log q - log p)."""

    log_px: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


def _importance_sums(
    model: LatentVariableModel, x: torch.Tensor, k: int, samples_per_chunk: int, generator: torch.Generator
) -> ImportanceSums:
    """The k draws' sums for images x, ``samples_per_chunk`` draws at a time, each drawn through
    the model's own forward pass (which knows its prior and its latent groups)."""
    b, noise = x.shape[0], model.noise_dim()
    log_sum_w = torch.full((b,), -math.inf, dtype=torch.float64, device=x.device)
    recon_sum = torch.zeros(b, dtype=torch.float64, device=x.device)
    kl_sum: torch.Tensor | float = 0.0
    for first in range(0, k, samples_per_chunk):
        s = min(samples_per_chunk, k - first)
        eps = torch.randn((b, s, noise), generator=generator, device=x.device, dtype=_dtype_of(model))
        terms = model(x, eps, weights=True)
        log_sum_w = torch.logaddexp(log_sum_w, torch.logsumexp(terms.log_weight.double(), dim=1))
        recon_sum += terms.reconstruction.double().sum(1)
        # (a closed-form KL is the same for every draw: taken as it is, not averaged)
        kl_sum = terms.kl.double() if model.kl_exact else kl_sum + terms.kl.double() * s
    kl = kl_sum if model.kl_exact else kl_sum / k
    return ImportanceSums(log_sum_w - math.log(k), recon_sum / k, kl)


def _report(model: LatentVariableModel, data: torch.Tensor, k: int, seed: int, per_image: PerImage,
            recon: torch.Tensor, kl: torch.Tensor, started: float) -> EvalReport:  # fmt: skip
    """The report from the per-image numbers; a non-finite one is an error naming the first image."""
    elbo, log_px, n = per_image.elbo, per_image.log_px, per_image.elbo.shape[0]
    bad = ~torch.isfinite(log_px) | ~torch.isfinite(elbo)
    if bad.any():
        raise VaeError(
            f"the model gives a non-finite log-likelihood for {int(bad.sum())} of {n} images "
            f"(the first is image {int(bad.nonzero()[0])})"
        )
    activity = per_image.mu.var(dim=0, correction=0)
    groups = model.kl_groups()
    active = activity > ACTIVE_THRESHOLD
    per_group = {
        name: int(part.sum()) for name, part in zip(groups, active.split(list(groups.values())), strict=True)
    }
    gap = log_px - elbo
    neg_elbo, neg_log_px = -elbo.mean().item(), -log_px.mean().item()
    bpd = None
    if model.likelihood.reports_bits_per_dim:
        dims = math.prod(data.shape[1:])
        bpd = {"neg_elbo": bits_per_dim(neg_elbo, dims), "neg_log_px": bits_per_dim(neg_log_px, dims)}
    return EvalReport(
        images=n, k=k, seed=seed,
        neg_elbo=neg_elbo, neg_elbo_stderr=_stderr(elbo),
        reconstruction=-recon.mean().item(), kl=kl.sum(1).mean().item(),
        neg_log_px=neg_log_px, neg_log_px_stderr=_stderr(log_px),
        gap=gap.mean().item(), gap_stderr=_stderr(gap),
        kl_per_dim=kl.mean(0).tolist() if model.kl_exact else None,
        kl_per_group=dict(zip(model.kl_groups(), model.kl_by_group(kl).mean(0).tolist(), strict=True)),
        activity=activity.tolist(),
        active_units=int(active.sum()), groups=dict(groups), active_per_group=per_group, bits_per_dim=bpd,
        seconds=time.perf_counter() - started, per_image=per_image,
    )  # fmt: skip


def evaluate_model(config: EvalConfig, progress: Progress | None = None) -> EvalReport:
    """``vae eval``: load the model, its dataset (or the one asked for) prepared as training
    prepared its test set, evaluate, and save the report in the run folder if given one, as
    ``eval/`` + :func:`eval_file_name`."""
    config.validate()
    device = choose_device(config.device)
    path = model_path(config.model)
    model, header = load_model(path, device)
    data_name, data_options = _dataset_of(config.data, config.data_options, header, path)
    shape = tuple(model.spec.input_shape) if model.spec is not None else None
    data_dir = model_data_dir(header, config.data_dir)
    data = load_dataset(data_name, config.split, data_options, data_dir, config.limit, shape)
    wanted = tuple(model.spec.input_shape) if model.spec is not None else data.shape
    if data.shape != wanted:
        raise VaeError(
            f"dataset '{data_name}' has images of shape {data.shape} (channels, height, width) but the "
            f"model takes {wanted}"
        )
    x = prepare_fixed(model.likelihood, data.images.to(device), TEST_PREPARE_SEED)
    report = evaluate(model, x, k=config.k, seed=config.seed, batch_size=config.batch_size, progress=progress)
    report.source = {
        "model": str(path),
        "data": data_name,
        "data_options": data_options,
        "split": config.split,
        "limit": config.limit,
        "device": str(device),
    }
    if Path(config.model).is_dir():
        own = (data_name, data_options) == _dataset_of(None, {}, header, path)
        saved = Path(config.model) / EVAL_FOLDER / eval_file_name(config, None if own else data_options)
        saved.parent.mkdir(exist_ok=True)
        write_text_atomic(saved, strict_json(report.to_dict(), indent=2) + "\n")
    return report


def _dataset_of(
    data: str | None, options: dict[str, Any], header: dict[str, Any], path: Path
) -> tuple[str, dict[str, Any]]:
    """The dataset asked for, else the model's own with its recorded options (``options`` on top)."""
    if data is not None:
        return data, options
    recorded = header.get("data") if isinstance(header.get("data"), dict) else {}
    name = recorded.get("name")
    if not isinstance(name, str):
        raise UsageError(f"{path} does not record the dataset it was trained on; pass --data NAME")
    recorded_options = recorded.get("options") if isinstance(recorded.get("options"), dict) else {}
    return recorded_part(header, "dataset", name, str(path)), {**recorded_options, **options}


def eval_file_name(config: EvalConfig, other_data: dict[str, Any] | None = None) -> str:
    """The setting an evaluation was made with, as a file name: ``test-k5000.json``, with
    ``-first200`` for ``--limit 200``, ``-seed3`` for another seed, and the dataset's name and a
    hash of its options (``other_data``) when not the model's own were asked for. The same setting
    again replaces its own file only."""
    parts = [config.split, f"k{config.k}"]
    if config.limit is not None:
        parts.append(f"first{config.limit}")
    if config.seed:
        parts.append(f"seed{config.seed}")
    if other_data is not None:
        name = config.data or "data"
        digest = hashlib.sha256(json.dumps(other_data, sort_keys=True, default=str).encode()).hexdigest()
        parts.append("".join(c if c.isalnum() or c in "._" else "_" for c in name)[:40] + "_" + digest[:8])
    return "-".join(parts) + ".json"
