import os
from pathlib import Path

import pytest

# The suite runs on pytest-xdist workers (pyproject's addopts: ``-n auto``), one per core, each
# on one torch thread: two one-thread processes do about 2.5x the toy work of one process on
# two threads (docs/performance.md section 6). Set before torch loads, so it holds for the
# subprocesses tests start too (CLI runs, accelerate launch), which inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.hookimpl(optionalhook=True)  # known only when pytest-xdist is loaded
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per usable core (xdist's own count may see one physical core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@pytest.fixture(scope="session", autouse=True)
def stage_cache(tmp_path_factory):
    """Every test's stage cache is one private directory: never the user's cache, and slow
    tests that build the same organism share it, as runs on one machine do. The xdist workers
    share it too (the stage cache locks a stage while one process computes it), so an organism
    is trained once per suite, whichever worker asks first."""
    mp = pytest.MonkeyPatch()
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the test session's directory, above each worker's own
    root = shared / "robustmo-cache"
    root.mkdir(exist_ok=True)
    mp.setenv("ROBUSTMO_CACHE", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="session")
def toy_base(tmp_path_factory):
    """Directory of a copy of the toy base that robustmo ships (toy:tiny): the same weights on
    every machine, so tests start from what users start from. A copy, so that no test can
    change the package's files."""
    import shutil

    from robustmo.plugins.toy_world.base import shipped_base

    shipped = shipped_base("tiny")
    assert shipped is not None, "robustmo ships no toy:tiny base built from today's recipe"
    return Path(shutil.copytree(shipped, tmp_path_factory.mktemp("base") / "tiny"))


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny preset's tokenizer (toy world 0, vocabulary 768), trained for real once per session."""
    from robustmo.plugins.toy_world.tokenizer import train_tokenizer
    from robustmo.plugins.toy_world.world import ToyWorld

    return train_tokenizer(ToyWorld(0).tokenizer_corpus(), 768)
