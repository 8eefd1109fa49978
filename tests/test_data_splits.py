"""Splits: official counts, seed splits, determinism, no overlap, files on disk, split files."""

import json
from pathlib import Path

import pytest

from lesionbench.data.layouts import Sample
from lesionbench.data.splits import load_or_create, make_split
from lesionbench.errors import LesionBenchError


def _samples(prefix: str, n: int, start: int = 0) -> list[Sample]:
    return [Sample(f"{prefix}{i:05d}", Path(f"/x/{prefix}{i}.jpg"), ()) for i in range(start, start + n)]


def _sizes(split: dict[str, list[str]]) -> tuple[int, int, int]:
    return len(split["train"]), len(split["val"]), len(split["test"])


def test_kvasir_official_is_880_60_60() -> None:
    pool = {"all": _samples("k", 1000)}
    s = make_split("kvasir-seg", "official", pool)
    assert _sizes(s) == (880, 60, 60)
    assert s == make_split("kvasir-seg", "paper002", pool)
    assert _sizes(make_split("kvasir-seg", "paper002", {"all": _samples("k", 160)})) == (140, 10, 10)


def test_isic_splits_counts() -> None:
    i16 = {"train": _samples("a", 900), "test": _samples("t", 379, 5000)}
    assert _sizes(make_split("isic2016", "official", i16)) == (810, 90, 379)
    assert _sizes(make_split("isic2016", "paper001", i16)) == (810, 90, 379)
    i18 = {"train": _samples("a", 2594), "val": _samples("v", 100, 3000), "test": _samples("t", 1000, 4000)}
    assert _sizes(make_split("isic2018", "official", i18)) == (2594, 100, 1000)
    s0 = make_split("isic2018", "paper000", i18)
    assert _sizes(s0) == (1816, 389, 389)
    assert set(s0["test"]) <= {x.id for x in i18["train"]}  # carved from the training set only


@pytest.mark.parametrize("name", ["official", "paper000", "paper001", "paper002"])
def test_deterministic_disjoint_order_independent(name: str) -> None:
    pool = {"train": _samples("a", 200), "test": _samples("t", 50, 900)}
    a = make_split("isic2016", name, pool)
    b = make_split("isic2016", name, {"train": pool["train"][::-1], "test": pool["test"]})
    assert a == b
    assert not (set(a["train"]) & set(a["val"])) and not (set(a["train"]) & set(a["test"]))
    assert not (set(a["val"]) & set(a["test"]))
    assert sum(_sizes(a)) == 250 if name in ("official", "paper001") else sum(_sizes(a)) == 200


def test_written_once_and_reused(tmp_path: Path) -> None:
    pool = {"all": _samples("k", 50)}
    s = load_or_create("kvasir-seg", "paper002", pool, tmp_path)
    f = tmp_path / "kvasir-seg__paper002.json"
    data = json.loads(f.read_text())
    assert data["train"] == s["train"] and data["seed"] == 42
    data["train"], data["val"] = data["train"][1:], data["val"] + data["train"][:1]  # hand-edited split is kept
    f.write_text(json.dumps(data))
    assert load_or_create("kvasir-seg", "paper002", pool, tmp_path)["val"] == data["val"]


def test_split_file_paths(tmp_path: Path) -> None:
    pool = {"all": _samples("k", 6)}
    txt = tmp_path / "my.txt"
    txt.write_text("# custom\ntrain k00000\ntrain k00001\nval k00002\ntest k00003\n")
    assert load_or_create("kvasir-seg", str(txt), pool, tmp_path) == {
        "train": ["k00000", "k00001"], "val": ["k00002"], "test": ["k00003"]}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": ["k00000", "k00001"], "test": ["k00001"]}))
    with pytest.raises(LesionBenchError, match="bad.json: 1 id.*train and test.*k00001"):
        load_or_create("kvasir-seg", str(bad), pool, tmp_path)
    ghost = tmp_path / "ghost.json"
    ghost.write_text(json.dumps({"train": ["nope"], "test": ["k00001"]}))
    with pytest.raises(LesionBenchError, match="ghost.json: 1 id.*not found.*nope"):
        load_or_create("kvasir-seg", str(ghost), pool, tmp_path)
    with pytest.raises(LesionBenchError, match="unknown split 'seed999'"):
        make_split("kvasir-seg", "seed999", pool)


@pytest.mark.parametrize("garbage", [b"\x00\xff\xfe garbage", b"[1, 2, 3]", b'{"train": 5}', b'{"train": ['])
def test_corrupt_written_split_is_rebuilt(tmp_path: Path, garbage: bytes) -> None:
    """Issue 18.14: our own split file, damaged, is recomputed (it is derived from the files)."""
    pool = {"all": _samples("k", 50)}
    first = load_or_create("kvasir-seg", "paper002", pool, tmp_path)
    f = tmp_path / "kvasir-seg__paper002.json"
    f.write_bytes(garbage)
    assert load_or_create("kvasir-seg", "paper002", pool, tmp_path) == first
    assert json.loads(f.read_text())["train"] == first["train"]


@pytest.mark.parametrize("garbage", [b"\x00\xff\xfe garbage", b"[1, 2, 3]", b'{"train": 5}', b'{"train": ['])
def test_corrupt_user_split_file_is_named(tmp_path: Path, garbage: bytes) -> None:
    """A user's split file cannot be rebuilt: one line naming it and the fix."""
    pool = {"all": _samples("k", 6)}
    f = tmp_path / "mine.json"
    f.write_bytes(garbage)
    with pytest.raises(LesionBenchError, match=r"mine\.json: .*(fix or re-create it|write it again)") as err:
        load_or_create("kvasir-seg", str(f), pool, tmp_path)
    assert "\n" not in str(err.value)


def test_split_file_follows_umask(tmp_path: Path) -> None:
    import os
    import stat
    before = os.umask(0o002)
    try:
        load_or_create("kvasir-seg", "paper002", {"all": _samples("k", 20)}, tmp_path)
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "kvasir-seg__paper002.json").stat().st_mode) == 0o664
