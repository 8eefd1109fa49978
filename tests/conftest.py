"""Shared fixtures: a tiny synthetic replica of every dataset, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

TINY_COUNTS = {
    "isic2016": {"train": 12, "test": 5},
    "isic2017": {"train": 12, "val": 4, "test": 5},
    "isic2018": {"train": 12, "val": 4, "test": 5},
    "kvasir-seg": {"all": 20},
}


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic replicas (all five layouts) with a handful of small images each."""
    from lesionbench.data.synthetic import write_all

    root = tmp_path_factory.mktemp("synthetic")
    write_all(root, seed=0, counts=TINY_COUNTS, size=(48, 72))
    return root


@pytest.fixture
def synthetic_env(tiny_synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every synthetic lookup (and split/cache folders) at the tiny replica."""
    monkeypatch.setenv("LESIONBENCH_SYNTHETIC", str(tiny_synthetic))
    monkeypatch.setenv("LESIONBENCH_WORKDIR", str(tmp_path / "work"))
    return tiny_synthetic


@pytest.fixture(scope="session")
def nnunet_straight_run(tiny_synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_nnunet.py's tiny nnU-Net run (1 epoch at 32 px, 6 images) trained straight through, once per session
    (about 2 min on 2 cores): the loader tests use it, and the determinism test compares it with the
    killed-and-resumed run. Layout: <tmp>/results/adhoc/nnunet_tiny__s0 beside its <tmp>/work."""
    from test_nnunet import TINY

    from lesionbench.config import parse_config
    from lesionbench.studies.train import train

    tmp = tmp_path_factory.mktemp("nnunet_straight")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LESIONBENCH_SYNTHETIC", str(tiny_synthetic))
        mp.setenv("LESIONBENCH_WORKDIR", str(tmp / "work"))
        result = train(parse_config(TINY), tmp / "results" / "adhoc" / "nnunet_tiny__s0", suite="adhoc")
    assert result.status == "finished", result
    return result.run_dir


# ---------------------------------------------------------------------------- the fast tier's rule
# A test that trains a model (Trainer.fit) or starts a process must be marked `slow`: the fast tier
# (`pytest -m "not slow"`) stays under two minutes on two cores. This guard enforces the rule: it
# watches the setup and call of every test not marked slow (module fixtures included, which set up
# inside the first test that uses them) and fails the test, naming what it did.
_DID: list[str] = []
_GUARD = os.environ.get("LESIONBENCH_TEST_GUARD", "on")  # "off": watch nothing (e.g. while bisecting)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests get a longer timeout than the fast tier's default unless they name their own."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(900))


def _watch(what: str, original):
    def watched(*args, **kwargs):
        _DID.append(what)
        return original(*args, **kwargs)
    return watched


def _watch_popen(original):
    """Every process start but the milliseconds-long queries of provenance: `git rev-parse` (the
    commit), `uname -p` (Python's platform module asks it for the processor) and `ldconfig -p`
    (ctypes.util.find_library, which a lazily imported library may call on first use)."""
    def watched(self, args, *rest, **kwargs):
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        program = Path(os.fsdecode(argv[0]).split()[0]).name if argv else "?"
        if program not in ("git", "uname", "ldconfig"):
            _DID.append(f"starts a process ({program})")
        return original(self, args, *rest, **kwargs)
    return watched


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    _DID.clear()
    with _fast_tier_watch(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with _fast_tier_watch(item):
        result = yield
    if _DID and item.get_closest_marker("slow") is None:
        what = ", ".join(sorted(set(_DID)))
        _DID.clear()
        pytest.fail(f"this test (or a fixture it sets up) {what} but is not marked @pytest.mark.slow", pytrace=False)
    return result


def _fast_tier_watch(item: pytest.Item):
    import contextlib
    import multiprocessing
    import subprocess
    from unittest import mock

    if item.get_closest_marker("slow") is not None or _GUARD == "off":
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch.object(subprocess.Popen, "__init__", _watch_popen(subprocess.Popen.__init__)))
    base = multiprocessing.process.BaseProcess  # every context's Process (fork, spawn, forkserver) starts here
    stack.enter_context(mock.patch.object(base, "start", _watch("starts a process", base.start)))
    from lightning.pytorch import Trainer

    stack.enter_context(mock.patch.object(Trainer, "fit", _watch("trains a model (Trainer.fit)", Trainer.fit)))
    return stack
