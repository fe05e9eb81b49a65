"""DDP's gradient average is exact: two gloo ranks fed the *same* batches end with the same
parameters, bit for bit, as one process trained on those batches (the mean of two equal
gradients is the gradient), for every algorithm, including CQL's two critic passes before
one backward. That the gradients are shared at all is the CLI test's part
(tests/integration/test_train_cli.py: different batches per rank, identical parameters)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.helpers import free_port
from edgewarden.training.algos import ALGOS, make_algorithm
from edgewarden.training.distributed import close, end_worker, param_digest
from edgewarden.training.nets import Replay, obs_stats

SMALL = {"hidden": (16, 16), "batch_size": 32}


def _train(name: str, distributed: bool) -> str:
    from tests.unit.training.test_train_algorithms import _dataset

    ds = _dataset(4, 2)
    st = obs_stats(ds)
    algo = make_algorithm(name, 4, 2, st["mean"], st["std"], device="cpu", seed=0, overrides=SMALL)
    if distributed:
        algo.data_parallel()
    rep = Replay(ds, torch.device("cpu"), 0)  # the same stream on both ranks
    for _ in range(4):
        algo.update(rep.sample(SMALL["batch_size"]))
    return param_digest(algo.modules)


def _rank(rank: int, port: int, queue) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    clean = False
    try:
        out = {name: _train(name, True) for name in sorted(ALGOS)}
        clean = True
    finally:
        close(clean=clean)  # the trainer's own exit: ranks meet before gloo is torn down
    if rank == 0:
        queue.put(out)
        queue.close()
        queue.join_thread()  # delivered before the process ends without teardown
    end_worker()


def test_ddp_gradient_average_equals_one_process_on_equal_batches() -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(_rank, args=(free_port(), queue), nprocs=2, start_method="spawn", join=True)
    ddp = queue.get(timeout=60)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = {name: _train(name, False) for name in sorted(ALGOS)}
    finally:
        torch.set_num_threads(threads)
    assert ddp == single
