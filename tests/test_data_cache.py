"""Cache robustness (issues 18.9, 18.14, 18.17): corrupt files rebuilt, full disk, leftovers, umask."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lesionbench.data import cache
from lesionbench.data.layouts import scan
from lesionbench.data.synthetic import write_all
from lesionbench.errors import LesionBenchError


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list:
    root = write_all(tmp_path_factory.mktemp("syn"), seed=6, counts={"isic2018": {"train": 4, "val": 1, "test": 1}},
                     size=(40, 56), datasets=("isic2018",))
    return scan("isic2018", root / "isic2018")["train"]


def _build(samples: list, where: Path) -> cache.CachedArrays:
    return cache.build_cache(samples, 16, 0, where, "t")


@pytest.mark.parametrize("victim", ["ids.json", "images.npy", "masks.npy", "truncate masks.npy"])
def test_corrupt_cache_file_is_rebuilt(samples: list, tmp_path: Path, victim: str) -> None:
    good = _build(samples, tmp_path)
    ref_images, ref_masks = np.array(good.images), np.array(good.masks)
    name = victim.split()[-1]
    path = good.path / name
    if victim.startswith("truncate"):
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(b"\x00garbage\xff" * 7)
    again = _build(samples, tmp_path)
    assert again.ids == [s.id for s in samples]
    assert np.array_equal(again.images, ref_images) and np.array_equal(again.masks, ref_masks)


def test_full_disk_removes_temp_and_names_space(samples: list, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def full(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)

    real = cache.load_pair
    monkeypatch.setattr(cache, "load_pair", full)
    with pytest.raises(LesionBenchError) as err:
        _build(samples, tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path}: not enough disk space") and "MB needed" in msg
    assert list(tmp_path.iterdir()) == []  # the temp folder is gone
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda p: type("U", (), {"free": 10})())
    with pytest.raises(LesionBenchError, match=r"0\.0 MB free.*LESIONBENCH_WORKDIR"):
        _build(samples, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_leftover_temp_folders_are_cleaned(samples: list, tmp_path: Path) -> None:
    import socket
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    for name, owner in ((".t-dead", f"{host} {dead.pid}"), (".t-live", f"{host} {os.getpid()}"),
                        (".t-foreign-old", "elsewhere 1"), (".t-foreign-new", "elsewhere 1")):
        (tmp_path / name).mkdir()
        (tmp_path / name / cache.OWNER).write_text(owner)
    old = time.time() - 2 * cache.STALE_AFTER_S
    for p in ((tmp_path / ".t-foreign-old"), tmp_path / ".t-foreign-old" / cache.OWNER):
        os.utime(p, (old, old))
    _build(samples, tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert left == [".t-foreign-new", ".t-live"]


def test_temp_folder_renamed_into_place_mid_scan_is_not_an_error(samples: list, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """CI caught this between two workers: one listed the other's finished temp folder, which was
    renamed into place before it could stat its files (FileNotFoundError on ``.<tag>-XXXX/ids.json``)."""
    tmp = tmp_path / ".t-busy"
    tmp.mkdir()
    (tmp / "ids.json").write_text("[]")
    listing = Path.iterdir

    def renamed_while_listing(self: Path):
        entries = list(listing(self))
        if self == tmp:
            os.replace(tmp, tmp_path / "t-16px-done")  # the owner finishes between listing and stat
        return iter(entries)

    monkeypatch.setattr(Path, "iterdir", renamed_while_listing)
    assert cache.clean_leftovers(tmp_path) == []
    assert (tmp_path / "t-16px-done" / "ids.json").is_file()


_BUILD = """
import sys
from pathlib import Path
from lesionbench.data import cache
from lesionbench.data.layouts import scan
samples = scan("isic2018", Path(sys.argv[1]))["train"]
for size in (8, 12, 16, 20):
    arrays = cache.build_cache(samples, size, 0, Path(sys.argv[2]), "t")
    assert arrays.images.shape[1:3] == (size, size), arrays.images.shape
"""


@pytest.mark.slow
def test_processes_building_the_same_cache_at_once_all_succeed(samples: list, tmp_path: Path) -> None:
    root = samples[0].image.parent.parent
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD, str(root), str(tmp_path)], stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    assert sorted(p.name.split("-")[1] for p in tmp_path.iterdir()) == ["12px", "16px", "20px", "8px"]


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_cache_respects_umask(samples: list, tmp_path: Path, umask: int) -> None:
    before = os.umask(umask)
    try:
        built = _build(samples, tmp_path)
    finally:
        os.umask(before)
    assert stat.S_IMODE(built.path.stat().st_mode) == 0o777 & ~umask
    for f in built.path.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f.name


def test_unwritable_cache_folder_is_one_line(samples: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*a, **k):  # what a read-only folder answers (chmod does not stop root, who runs CI here)
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cache.tempfile, "mkdtemp", denied)
    with pytest.raises(LesionBenchError, match=r"cannot write the cache there \(Permission denied\).*LESIONBENCH_WORKDIR"):
        _build(samples, tmp_path / "cache")
