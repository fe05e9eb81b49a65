"""Data-parallel training: one process per replica, DistributedDataParallel, gradients averaged.

Two ways in, one code path (``edgewarden.training.fit``):

* ``edgewarden train fit ... --nproc N`` spawns N processes on this machine and joins
  them over a rendezvous file in a private temporary directory;
* under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
  ``MASTER_PORT`` set) each process joins the group torchrun describes (``env://``)
  instead of spawning, e.g. ``torchrun --nproc-per-node 2 -m edgewarden.gateway.cli train fit ...``
  or across machines with ``--nnodes``.

Backend: gloo on CPU, nccl on CUDA (process ``LOCAL_RANK`` uses ``cuda:LOCAL_RANK``).
Every rank builds the same networks from the same seed (DDP also broadcasts rank 0's
weights when it wraps them), then samples its *own* seeded stream of batches and noise;
DDP averages the gradients in ``backward``, so the optimisers step identically and the
replicas stay equal (checked at the end of every run: ranks compare a SHA-256 of their
parameters). ``batch_size`` is per process: N processes train on N x batch_size
transitions per step. Rank 0 alone writes checkpoints, metrics and the progress bar; a
checkpoint holds every rank's random streams, so a resumed run continues each of them.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist

from edgewarden.gateway.errors import GatewayError

__all__ = ["World", "all_gather", "mean_over_ranks", "param_digest", "rank_seed", "resolve_device",
           "torchrun_world"]

# Per-rank stream offset: rank 0 keeps the single-process seed, so --nproc 1 is unchanged.
_RANK_STRIDE = 100_003


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_seed(seed: int, rank: int) -> int:
    return seed + _RANK_STRIDE * rank


def torchrun_world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when launched by torchrun (or any env:// launcher)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise GatewayError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None
    return rank, size, local


def resolve_device(device: str, nproc: int, local_rank: int) -> torch.device:
    """The device of one rank; refuses combinations that cannot work, with the reason."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if nproc == 1:
        if have == 0:
            raise GatewayError(f"--device {device}: torch {torch.__version__} sees no CUDA device here")
        return dev
    if dev.index is not None:
        raise GatewayError(f"--device {device} with {nproc} processes: pass --device cuda "
                           "(process i uses cuda:i)")
    if have < nproc:
        raise GatewayError(f"{nproc} processes with --device cuda need {nproc} GPUs (one per process); "
                           f"this machine has {have}. Use fewer processes, or --device cpu (gloo)")
    return torch.device("cuda", local_rank)


def init(rank: int, size: int, local_rank: int, device: torch.device, init_method: str) -> World:
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=size,
                            timeout=timedelta(minutes=30))
    return World(rank=rank, size=size, local_rank=local_rank, backend=backend)


def close(*, clean: bool) -> None:
    """Leave the group. After a clean run, all ranks meet first: a rank that tears gloo down
    while its peer still talks to it can abort the peer (SIGABRT, "terminate called
    without an active exception"), seen in about one run in three on 2 vCPUs."""
    if dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def end_worker() -> NoReturn:
    """End a spawned worker after a clean run without the interpreter's teardown. gloo's
    threads live in C++ objects that teardown destroys in no set order; one destroyed
    while its thread is joinable aborts the process ("terminate called without an
    active exception", SIGABRT), seen in CI after runs that had finished and left the
    group. Everything the worker wrote is closed by then."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def all_gather(obj: object, world: World) -> list[object]:
    out: list[object] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(values: dict[str, float], world: World, device: torch.device) -> dict[str, float]:
    """The mean of each logged number over all ranks (one all_reduce)."""
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / world.size for k, v in zip(keys, t.tolist(), strict=True)}


def param_digest(modules: dict[str, torch.nn.Module]) -> str:
    """SHA-256 over every parameter and buffer of ``modules``, in a fixed order."""
    h = hashlib.sha256()
    for name in sorted(modules):
        for key, t in sorted(modules[name].state_dict().items()):
            h.update(f"{name}.{key}".encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
