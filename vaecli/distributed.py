"""Data-parallel training across processes started by ``torchrun`` (DDP: NCCL on CUDA, gloo on CPU).

Every rank holds the whole dataset and draws the same random numbers (the same seed and the same
calls), so each step's global batch, its binarisation and its reparameterisation noise are the
same on every rank; a rank computes the loss on its slice of the batch only. DDP averages the
gradients over ranks, so the update equals a single process's on the whole batch.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vaecli.errors import UsageError, VaeError

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: rank ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 prints, writes files and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Ranks:
        """The ranks torchrun gives in RANK, WORLD_SIZE and LOCAL_RANK (one process when unset)."""
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env:
            return cls()
        try:
            ranks = cls(int(env.get("RANK", "0")), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))
        except ValueError:
            raise UsageError(
                "RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers, as torchrun sets"
            ) from None
        if not (ranks.world_size >= 1 and 0 <= ranks.rank < ranks.world_size and ranks.local_rank >= 0):
            raise UsageError(f"inconsistent torchrun environment: rank {ranks.rank} of {ranks.world_size}")
        return ranks

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of a batch of ``n`` (parts differ in size by at most one)."""
        return slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def device(self, device: torch.device, cuda_count: int | None = None) -> torch.device:
        """The device this rank trains on: with CUDA, GPU ``local_rank``; otherwise ``device``.
        ``cuda_count`` is the node's GPU count (read from torch unless given)."""
        if not self.distributed:
            return device
        if device.type == "cuda":
            gpus = torch.cuda.device_count() if cuda_count is None else cuda_count
            if self.local_rank >= gpus:
                raise VaeError(
                    f"local rank {self.local_rank} has no GPU (this node has {gpus}): "
                    "start at most one process per GPU"
                )
            return torch.device("cuda", self.local_rank)
        if device.type != "cpu":
            raise UsageError(f"distributed training runs on cuda or cpu, not {device.type}")
        return device


def start(ranks: Ranks, device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU); nothing for a single process."""
    if not ranks.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    with printed_to_stderr():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


@contextmanager
def printed_to_stderr() -> Iterator[None]:
    """What C++ code prints on file descriptor 1 goes to 2 while inside: stdout carries results only,
    and the gloo of torch 2.8 prints "[Gloo] Rank 0 is connected to 1 peer ranks..." there."""
    sys.stdout.flush()
    saved = _stdout_moved_to_stderr()
    try:
        yield
    finally:
        if saved is not None:
            _flush_c_stdio()
            os.dup2(saved, 1)
            os.close(saved)


def _stdout_moved_to_stderr() -> int | None:
    """Point file descriptor 1 at 2; a copy of the old 1, or None when either is closed."""
    try:
        saved = os.dup(1)
    except OSError:
        return None
    try:
        os.dup2(2, 1)
    except OSError:
        os.close(saved)
        return None
    return saved


def _flush_c_stdio() -> None:
    """Flush C's stdio buffers (std::cout goes through them), so nothing printed inside comes out later."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # (no C library to ask, as on Windows)
        pass


def stop(ranks: Ranks) -> None:
    """Leave the process group. DDP sits in a reference cycle, so it is collected first: left to
    interpreter shutdown, its gloo state aborts the process ("terminate called without an active
    exception"), which torchrun reports as a failed run."""
    if ranks.distributed and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def all_sum(ranks: Ranks, tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all ranks (``tensor`` itself for one process)."""
    if ranks.distributed:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def any_signal(ranks: Ranks, signum: int | None, device: torch.device) -> int | None:
    """The signal any rank received (so that every rank stops at the same step), else None."""
    return _all_max(ranks, signum or 0, device) or None


def any_rank(ranks: Ranks, flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is set on any rank (every rank gets the same answer)."""
    return bool(_all_max(ranks, int(flag), device))


def _all_max(ranks: Ranks, value: int, device: torch.device) -> int:
    """The largest of the ranks' ``value``s."""
    if not ranks.distributed:
        return value
    flag = torch.tensor([value], device=device)  # NCCL reduces only GPU tensors
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag)


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """The command that runs ``vae ARGV`` as ``nproc`` processes on this machine through torchrun."""
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, got {nproc}")
    # torchrun itself is `python -m torch.distributed.run`: this interpreter's, not the first on PATH.
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return [*launcher, "-m", "vaecli", *argv]
