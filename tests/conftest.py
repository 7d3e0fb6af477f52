import pytest

# Steps for the shared reduced base: enough to learn the toy tasks well above chance,
# few enough to build in about a minute on 2 CPU cores.
TEST_BASE_STEPS = 300


@pytest.fixture(scope="session", autouse=True)
def stage_cache(tmp_path_factory):
    """Every test's stage cache is one private directory: never the user's cache, and slow
    tests that build the same organism share it, as runs on one machine do."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("robustmo-cache")
    mp.setenv("ROBUSTMO_CACHE", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="session")
def toy_base(tmp_path_factory):
    """Directory of a real, reduced-steps toy base model, built once per test session
    (``ROBUSTMO_TEST_CACHE=DIR`` keeps it between sessions: the build is deterministic and
    cached by recipe hash, so a kept one is the same model)."""
    import os

    from robustmo.plugins.toy_world.base import ensure_base

    mp = pytest.MonkeyPatch()
    mp.setenv("ROBUSTMO_CACHE", os.environ.get("ROBUSTMO_TEST_CACHE") or str(tmp_path_factory.mktemp("cache")))
    try:
        return ensure_base("tiny", steps=TEST_BASE_STEPS, progress=False)
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny preset's tokenizer (toy world 0, vocabulary 768), trained for real once per session."""
    from robustmo.plugins.toy_world.tokenizer import train_tokenizer
    from robustmo.plugins.toy_world.world import ToyWorld

    return train_tokenizer(ToyWorld(0).tokenizer_corpus(), 768)
