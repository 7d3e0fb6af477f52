"""What the rest of the code needs to know about ``accelerate launch``: which process this
is, how many there are, and how to wait for / share with the others. One process (plain
``robustmo run``) pays nothing: no process group is created.

On a CPU-only machine ``accelerate launch --multi_gpu --num_processes N`` starts N
processes that train on gloo (``accelerate launch --cpu`` starts one).
"""

from __future__ import annotations

import os


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _state():
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_launched_worker() -> bool:
    """A process of ``accelerate launch`` / ``torchrun`` other than the first (its ``RANK``)."""
    return int(os.environ.get("RANK", "0") or 0) != 0


def process_info() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside ``accelerate launch``."""
    if not _launched():
        return 0, 1
    state = _state()
    return state.process_index, state.num_processes


def is_main() -> bool:
    return process_info()[0] == 0


def barrier() -> None:
    if _launched():
        _state().wait_for_everyone()


def broadcast(value):
    """The main process's ``value`` on every process."""
    if not _launched():
        return value
    from accelerate.utils import broadcast_object_list

    _state()  # the process group must exist, or accelerate broadcasts nothing
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def gather_in_order(mine: list, total: int) -> list:
    """Every process passes the results for its interleaved shard ``items[rank::world]``;
    every process gets all ``total`` results back in the original order."""
    import torch.distributed as dist

    rank, world = process_info()
    shards: list = [None] * world
    dist.all_gather_object(shards, mine)
    out = [None] * total
    for r, shard in enumerate(shards):
        out[r::world] = shard
    return out
