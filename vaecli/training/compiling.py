"""``--compile``: torch.compile the training forward pass, and compile it before training starts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from vaecli.checkpoint import rng_states, set_rng_states
from vaecli.errors import VaeError

if TYPE_CHECKING:
    from vaecli.config import TrainConfig
    from vaecli.distributed import Ranks
    from vaecli.models import LatentVariableModel
    from vaecli.objectives import Objective
    from vaecli.precision import Precision
    from vaecli.training.feeding import DeviceFeed, StreamedFeed


def compile_mode(device: torch.device) -> str | None:
    """torch.compile's mode on ``device``: on CUDA ``reduce-overhead``, which also captures the
    compiled forward and backward as CUDA graphs (one launch replays the dozens of small kernels
    of a step at MNIST sizes, whose launch cost would otherwise outweigh their arithmetic);
    elsewhere the default."""
    return "reduce-overhead" if device.type == "cuda" else None


def compile_model(net: torch.nn.Module, device: torch.device | None = None) -> torch.nn.Module:
    """``torch.compile`` the training forward pass (fused kernels, less per-step overhead; CUDA
    graphs on CUDA, :func:`compile_mode`). Opt-in: on a CPU it saves about a tenth of a step,
    which repays a cold compilation (about 20 s) only over long runs."""
    mode = compile_mode(device) if device is not None else None
    return torch.compile(net, mode=mode)  # type: ignore[return-value]


def epoch_batch_sizes(images: int, batch_size: int) -> list[int]:
    """The batch sizes an epoch has, in the order training meets them: full, then the last one."""
    steps = -(-images // batch_size)
    return list(dict.fromkeys([min(batch_size, images), images - (steps - 1) * batch_size]))


def compile_now(
    net: torch.nn.Module,
    model: LatentVariableModel,
    objective: Objective,
    feed: DeviceFeed | StreamedFeed,
    config: TrainConfig,
    ranks: Ranks,
    device: torch.device,
    precision: Precision,
) -> None:
    """Run the compiled ``net`` forward and backward once per batch size an epoch has, on the
    first training images, so that compiling happens now: before the run folder is written or an
    old run replaced (a missing C++ compiler, or a layer the compiler cannot take, fails with one
    line and leaves nothing behind), and outside the epochs' timing. The model's weights, buffers
    and gradients and the random generators are left as they were."""
    from vaecli.training.step import forward_loss

    saved = {name: value.clone() for name, value in model.state_dict().items()}
    rng = rng_states(device)
    try:
        for size in epoch_batch_sizes(len(feed), config.batch_size):
            x = model.likelihood.prepare(feed.sample(size))
            loss, _ = forward_loss(net, objective, x, ranks, device, precision, model.noise_dim(), None)
            loss.sum().backward()
    except VaeError:  # (a plugin objective's own failure, named as such)
        raise
    except Exception as exc:
        what = str(exc).split("Set TORCHDYNAMO_VERBOSE")[0].strip()  # (torch's hints for its developers)
        raise VaeError(
            f"--compile: torch.compile cannot compile this model here ({type(exc).__name__}: {what}); "
            "train without --compile"
        ) from exc
    finally:
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
        set_rng_states(rng, device)
