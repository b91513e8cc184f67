"""The training step's forward pass, and ``--compile``: torch.compile it (with the batch's gather,
binarisation and noise, and CUDA graphs, on CUDA), and compile it before training starts."""

from __future__ import annotations

import logging
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


class _NoCudaRuntimeNote(logging.Filter):
    """Drops torch's "No CUDA runtime is found" warning, which its compiler logs on building CPU
    kernels where torch has CUDA libraries but the machine no GPU: nothing a CPU run can act on,
    and a line on the stderr of ``vae train -q --compile``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No CUDA runtime is found" not in record.getMessage()


#: Whether torch's compiler takes DReG's gradient hook (models/vae.py): torch 2.11's builds a broken
#: graph (UnboundLocalError), or outside it a backward whose gradient is None; 2.14's is right.
DREG_COMPILES = torch.__version__ >= "2.14"


def batch_in_graph(device: torch.device, ranks: Ranks) -> bool:
    """Whether a compiled step holds its batch's gather, binarisation and noise in its graph, with
    the forward pass: on CUDA, where the graph is captured and replayed in one launch (what stayed
    outside would be launched kernel by kernel), unless the run is distributed (DDP's gradient
    hooks split the graph, and only the model inside DDP is compiled). On other devices there is
    no launch to save, and a CPU's exact binarisation draws again only the few 255s it finds: a
    shape that depends on the data, which no graph holds."""
    return device.type == "cuda" and not ranks.distributed


def compile_options(device: torch.device) -> dict[str, bool]:
    """torch.compile's (inductor's) options. Random numbers are drawn by torch's own kernels, in
    the order the code draws them (no reordering for peak memory, which may swap two draws), so a
    compiled step draws what an eager one does and resumes from the same generator states. On
    CUDA the graphs are captured as CUDA graphs (``mode="reduce-overhead"``'s one option): one
    launch replays the dozens of small kernels of a step at MNIST sizes, whose launch cost would
    otherwise outweigh their arithmetic."""
    options = {"fallback_random": True, "reorder_for_peak_memory": False}
    if device.type == "cuda":
        options["triton.cudagraphs"] = True
    return options


def make_forward(
    net: torch.nn.Module,
    model: LatentVariableModel,
    objective: Objective,
    ranks: Ranks,
    precision: Precision,
    device: torch.device,
    compiled: bool,
) -> torch.nn.Module:
    """The step's forward pass, a :class:`BatchForward` around ``net`` (the model, or the model
    in DDP). With ``--compile``, compiled whole where :func:`batch_in_graph` says so, else with
    ``net`` inside it compiled. One graph per batch size (``dynamic=False``): an epoch has two,
    both compiled before it starts (:func:`compile_now`). Opt-in: on a CPU it saves about a tenth
    of a step, which repays a cold compilation (about 20 s) only over long runs."""
    from vaecli.training.step import BatchForward

    if not compiled:
        return BatchForward(net, model, objective, ranks, precision)
    if objective.dreg and not DREG_COMPILES:
        raise VaeError(
            f"--compile: torch {torch.__version__} cannot compile DReG's gradients (torch 2.14 can); "
            "train without --compile, or with --objective-opt dreg=false"
        )
    cpp_extension_log = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _NoCudaRuntimeNote) for f in cpp_extension_log.filters):
        cpp_extension_log.addFilter(_NoCudaRuntimeNote())
    options = compile_options(device)
    if batch_in_graph(device, ranks):
        return torch.compile(BatchForward(net, model, objective, ranks, precision), dynamic=False,
                             options=options)  # type: ignore[return-value]  # fmt: skip
    compiled_net = torch.compile(net, dynamic=False, options=options)
    return BatchForward(compiled_net, model, objective, ranks, precision)  # type: ignore[arg-type]


def epoch_batch_sizes(images: int, batch_size: int) -> list[int]:
    """The batch sizes an epoch has, in the order training meets them: full, then the last one."""
    steps = -(-images // batch_size)
    return list(dict.fromkeys([min(batch_size, images), images - (steps - 1) * batch_size]))


def compile_now(
    forward: torch.nn.Module,
    model: LatentVariableModel,
    objective: Objective,
    feed: DeviceFeed | StreamedFeed,
    config: TrainConfig,
    ranks: Ranks,
    device: torch.device,
) -> None:
    """Run the compiled ``forward`` and its backward once per batch size an epoch has, on the
    first training images, so that compiling happens now: before the run folder is written or an
    old run replaced (a missing C++ compiler, or a layer the compiler cannot take, fails with one
    line and leaves nothing behind), and outside the epochs' timing. The model's weights, buffers
    and gradients and the random generators are left as they were."""
    from vaecli.training.feeding import DeviceFeed
    from vaecli.training.step import forward_loss

    if batch_in_graph(device, ranks) and isinstance(feed, DeviceFeed):
        # The images the graph gathers from are a fixed input, as weights are: CUDA graphs copy
        # any other input into their own buffers at every replay (MNIST's 47 MB a step).
        torch._dynamo.mark_static_address(feed.images)
    saved = {name: value.clone() for name, value in model.state_dict().items()}
    rng = rng_states(device)
    try:
        for size in epoch_batch_sizes(len(feed), config.batch_size):
            loss, _ = forward_loss(forward, objective, feed.first_batch(size), None)
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
