"""Worker processes for an audit's runs on a CPU machine: each battery method (and the LR check)
is a run of its own, so on a CPU they can run side by side, one per core, each on its own
threads.

Why: on a CPU, a small model's training steps and generations are made of many tiny matrix
products, and torch's threads spend much of each waiting for one another (robustmo makes them
sleep while they wait: docs/performance.md section 6). A toy pirate run took 28-29 s on 2
sleeping threads and 22 s on one thread; two one-thread runs side by side took 22 s each.
One worker per core gets the cores' work without the waits and without two processes
fighting over one core.

``plan_workers`` decides how many (``--workers``; auto: one per usable core, as many as there
are runs to do, bounded by memory, and 1 on a GPU machine or under ``accelerate launch``);
``WorkerPool`` runs the jobs in spawned processes, forwards their log lines, and on Ctrl-C or a
failure interrupts the runs still going (each stops cleanly at a checkpoint, resumable).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from robustmo.core.errors import RobustmoError

MEMORY_SHARE = 0.5  # auto: workers whose estimated memory fits in this share of the available memory
STOP = signal.SIGUSR1  # the driver to a worker: stop the job you are running (a worker ignores SIGINT)


def usable_cpus() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plan_workers(requested: int | None, jobs: int, per_worker_bytes: int | None = None) -> tuple[int, int | None]:
    """(workers, torch threads per worker) for ``jobs`` runs. ``requested``: ``--workers`` (None:
    auto). One worker means "in this process, as before" (threads unchanged: None). Auto is 1
    when a GPU is there (the runs share it one after another) and otherwise one per usable core,
    at most ``jobs``, and only as many as fit in half the available memory at
    ``per_worker_bytes`` each."""
    from robustmo.core.distributed import process_info

    if process_info()[1] > 1:  # --workers was checked against that first (check_workers)
        return 1, None
    cpus = usable_cpus()
    if requested is None:
        if _accelerator_available():
            return 1, None
        workers = cpus
        if per_worker_bytes:
            workers = min(workers, max(1, int(_available_memory() * MEMORY_SHARE // per_worker_bytes)))
    else:
        workers = requested
    workers = max(1, min(workers, jobs))
    return (1, None) if workers == 1 else (workers, max(1, cpus // workers))


def check_workers(requested: int | None) -> None:
    """``--workers`` in one line, before anything is written: 1 or more, and only 1 under
    ``accelerate launch`` (there every process takes part in each run)."""
    from robustmo.core.distributed import process_info

    if requested is None:
        return
    if requested < 1:
        raise RobustmoError(f"--workers {requested}: give 1 or more (1: one run after another in this process)")
    if requested > 1 and process_info()[1] > 1:
        raise RobustmoError(f"--workers {requested}: under accelerate launch every process takes part in each run; "
                            "leave --workers out (or give 1)")


def _accelerator_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available())


def _available_memory() -> int:
    import psutil  # accelerate's dependency

    return psutil.virtual_memory().available


def process_memory() -> int:
    """This process's resident memory, in bytes: what a worker that loads the same model holds
    before it trains (auto workers count twice as much for each)."""
    import psutil

    return psutil.Process().memory_info().rss


@dataclass
class Job:
    """One run for a worker: ``function(*args)`` (a module-level function, so it pickles by name),
    ``label`` starting every line it logs."""

    label: str
    function: Callable
    args: tuple
    start: str = ""  # logged when a worker starts it


# --------------------------------------------------------------------------- in a worker
_QUEUE = None
_LABEL = ""


def _start_worker(threads: int, queue) -> None:
    """A spawned worker: its torch threads and its log queue. It ignores Ctrl-C (the terminal
    sends it to every process of the audit): the driver alone decides, and asks a running job
    to stop with ``STOP`` (``_call``), once, so no job is interrupted twice while it saves."""
    global _QUEUE
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(STOP, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # before torch loads in this process, if it has not yet
    import torch

    torch.set_num_threads(threads)
    _QUEUE = queue
    from robustmo.core import progress

    progress.PLAIN = True  # progress as plain lines, through worker_log to the driver


def worker_log(message: str) -> None:
    """The log of a job in a worker: its lines go to the driver, labelled."""
    _QUEUE.put(f"{_LABEL}: {message}")


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # the run stops at its next checkpoint, as on Ctrl-C


def _call(label: str, function: Callable, args: tuple, start: str) -> Any:
    global _LABEL
    _LABEL = label
    signal.signal(STOP, _interrupt)
    try:
        if start:
            _QUEUE.put(start)
        began = time.perf_counter()
        result = function(*args)
        _QUEUE.put(f"{label}: done in {time.perf_counter() - began:.1f} s")
        return result
    finally:
        signal.signal(STOP, signal.SIG_IGN)


# --------------------------------------------------------------------------- in the driver
class WorkerPool:
    """``WorkerPool(workers, threads, log).run(jobs)``: every job in one of ``workers`` spawned
    processes (``threads`` torch threads each), in the order given as workers free up; their
    log lines reach ``log``. Returns the jobs' results in order. The first failure (or Ctrl-C)
    asks the jobs still running to stop (each at its next checkpoint, resumable), cancels the
    rest, waits for them and raises it (a worker that died: one line)."""

    def __init__(self, workers: int, threads: int, log: Callable[[str], None]):
        self.workers, self.threads, self.log = workers, threads, log
        self.stopped = False

    def run(self, jobs: Sequence[Job]) -> list:
        import multiprocessing
        from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch threads
        queue = context.Queue()
        reader = threading.Thread(target=self._forward, args=(queue,), daemon=True)
        reader.start()
        pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_start_worker,
                                   initargs=(self.threads, queue))
        futures = []
        try:
            futures = [pool.submit(_call, job.label, job.function, job.args, job.start) for job in jobs]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f in done and f.exception() is not None), None)
            if failed is not None:
                self._stop(pool, futures)
                if isinstance(failed.exception(), BrokenProcessPool):
                    label = jobs[futures.index(failed)].label
                    raise RobustmoError(f"{label}: its worker process died (killed, or out of memory?); every "
                                        "finished run is kept: resume with fewer workers (--workers 1)") from None
                raise failed.exception()
            return [f.result() for f in futures]
        except KeyboardInterrupt:
            self._stop(pool, futures)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            queue.put(None)
            reader.join(timeout=10)

    def _stop(self, pool, futures) -> None:
        """Cancel the jobs not started; ask the running ones to stop (Ctrl-C: each stops at a
        checkpoint and stays resumable) and wait for them."""
        from concurrent.futures import wait

        for f in futures:
            f.cancel()
        for process in [] if self.stopped else list(getattr(pool, "_processes", {}).values()):  # live workers
            try:
                os.kill(process.pid, STOP)  # once: a second would cut short the first one's checkpoint
            except (OSError, ValueError):
                pass
        self.stopped = True
        while True:
            try:
                wait([f for f in futures if not f.cancelled()])
                return
            except KeyboardInterrupt:  # a second Ctrl-C while they stop: keep waiting, they are writing
                continue

    def _forward(self, queue) -> None:
        while (line := queue.get()) is not None:
            try:
                self.log(line)
            except Exception:  # a log that fails must not stop the others' lines
                pass
