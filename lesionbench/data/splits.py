"""Official and seed splits, written once as JSON id lists and reused afterwards.

Why on disk: a split that is recomputed can silently change (new files, new numpy); a
written id list is what every later run, and every reader of a leaderboard, can check.
Carved parts are the first ``round(n * fraction)`` ids (at least 1 when n >= 3) in the order of
sha256("<salt>:<id>"): identical on every Python/numpy version, and independent of file order.
Kvasir-SEG's paper002 is the authors' official list (``experiments/splits/kvasir-seg``, see its
SOURCE.md): 880 training ids, the 120 validation ids halved into val and test by that hash
order. A pool without any official id (the synthetic replica) gets the same proportions
(880/60/60 of 1000 becomes 140/10/10 of 160).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from lesionbench.data.layouts import Sample
from lesionbench.errors import LesionBenchError
from lesionbench.io import atomic_write_json

log = logging.getLogger(__name__)

PARTS = ("train", "val", "test")
SPLIT_VERSION = 2  # 2: hash-ordered carving, official Kvasir-SEG lists (1: random.sample)
#: The dataset authors' official lists, shipped with the recipes (beside the package or in ./experiments).
OFFICIAL_LISTS = ("experiments/splits",)
SPLIT_SEED = 42  # fixed per split name, so every training seed sees the same split
# name -> (val fraction, test fraction) carved from the training pool; None = use official test
PAPER_SPLITS: dict[str, tuple[float, float | None]] = {
    "paper000": (0.15, 0.15),  # 000: 70/15/15 of the ISIC 2018 training set, seed 42
    "paper001": (0.10, None),  # 001: ISIC 2016 train minus a 10% val carve-out, official test
    "paper002": (0.06, 0.06),  # 002: Kvasir-SEG 880/60/60
}
#: Hash salts keep the names these splits had when first written ("seed000".."seed002"), so renaming
#: a split can never change which ids it holds.
SALT_NAMES = {"paper000": "seed000", "paper001": "seed001", "paper002": "seed002"}
OFFICIAL_VAL_FRACTION = 0.10  # for editions without an official validation set (ISIC 2016)

Split = dict[str, list[str]]


def hash_order(ids: list[str], salt: str) -> list[str]:
    """Ids sorted by sha256(salt:id): a shuffle that no library version can change."""
    return sorted(ids, key=lambda i: (hashlib.sha256(f"{salt}:{i}".encode()).hexdigest(), i))


def _carve(ids: list[str], frac: float, seed: int, salt: str) -> tuple[list[str], list[str]]:
    """(rest, carved): the first round(n*frac) ids in hash order (order-independent)."""
    pool = sorted(set(ids))
    k = round(len(pool) * frac)
    if len(pool) >= 3:
        k = max(1, k)
    carved = set(hash_order(pool, f"{seed}:{salt}")[:k])
    return [i for i in pool if i not in carved], sorted(carved)


def official_list_dir(dataset: str) -> Path:
    """``experiments/splits/<dataset>``: ./experiments first, else the one beside the package."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        for rel in OFFICIAL_LISTS:
            if (base / rel / dataset).is_dir():
                return base / rel / dataset
    raise LesionBenchError(f"{dataset}: official split lists not found (experiments/splits/{dataset}/ "
                           "with train.txt and val.txt); run from the repository root")


def _read_ids(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def kvasir_official(pool: list[str], seed: int = SPLIT_SEED) -> Split | None:
    """880 official training ids; the 120 official validation ids halved (hash order) into val/test.

    None when the pool holds no official id (the synthetic replica); an error when it holds some
    but not all (an incomplete or renamed Kvasir-SEG folder would silently shift the split).
    """
    folder = official_list_dir("kvasir-seg")
    train, held = _read_ids(folder / "train.txt"), _read_ids(folder / "val.txt")
    have = set(pool)
    missing = [i for i in train + held if i not in have]
    if len(missing) == len(train) + len(held):
        return None
    if missing:
        raise LesionBenchError(
            f"kvasir-seg: {len(missing)} of the {len(train) + len(held)} ids of the official split "
            f"({folder}) are not among the images, e.g. {missing[0]}; restore the full Kvasir-SEG "
            "folder (`lesionbench data verify kvasir-seg`) or give split: a .json/.txt file")
    ordered = hash_order(held, f"{seed}:kvasir-seg:{SALT_NAMES['paper002']}:val")
    half = len(ordered) // 2
    return {"train": sorted(train), "val": sorted(ordered[:half]), "test": sorted(ordered[half:])}


def make_split(dataset: str, name: str, official: dict[str, list[Sample]], seed: int = SPLIT_SEED) -> Split:
    """Compute a split from the scanned official parts (no disk access)."""
    ids = {part: sorted(s.id for s in samples) for part, samples in official.items()}
    if dataset == "kvasir-seg" and name == "official":
        name = "paper002"  # Kvasir-SEG has no official split; the 880/60/60 convention stands in
    if name == "official":
        if "train" not in ids or "test" not in ids:
            raise LesionBenchError(f"{dataset}: the official split needs the training and test archives")
        if "val" in ids:
            return {"train": ids["train"], "val": ids["val"], "test": ids["test"]}
        train, val = _carve(ids["train"], OFFICIAL_VAL_FRACTION, seed, f"{dataset}:official:val")
        return {"train": train, "val": val, "test": ids["test"]}
    if name not in PAPER_SPLITS:
        raise LesionBenchError(
            f"unknown split '{name}' (use official, {', '.join(PAPER_SPLITS)} or a path to a split .json/.txt file)")
    val_frac, test_frac = PAPER_SPLITS[name]
    salt = SALT_NAMES[name]
    pool = ids.get("train") or ids.get("all") or []
    if dataset == "kvasir-seg" and name == "paper002":
        official_split = kvasir_official(pool, seed)
        if official_split is not None:
            return official_split
        log.info("kvasir-seg: no official Kvasir-SEG id among %d images (synthetic replica?): "
                 "paper002 carves 6%%/6%% by hash order instead", len(pool))
    if test_frac is None:
        if "test" not in ids:
            raise LesionBenchError(f"{dataset}: split {name} uses the official test set, which is not present")
        train, val = _carve(pool, val_frac, seed, f"{dataset}:{salt}:val")
        return {"train": train, "val": val, "test": ids["test"]}
    rest, test = _carve(pool, test_frac, seed, f"{dataset}:{salt}:test")
    train, val = _carve(rest, val_frac * len(pool) / max(1, len(rest)), seed, f"{dataset}:{salt}:val")
    return {"train": train, "val": val, "test": test}


def check_disjoint(split: Split, source: str) -> None:
    """No id may be in two parts (train/test leakage), nor twice in one (it would weigh double)."""
    for part in PARTS:
        ids = split.get(part, [])
        if len(set(ids)) < len(ids):
            twice = next(i for n, i in enumerate(ids) if i in ids[:n])
            raise LesionBenchError(f"{source}: id {twice} is listed twice in {part}; list each image once")
    for i, a in enumerate(PARTS):
        for b in PARTS[i + 1:]:
            shared = set(split.get(a, [])) & set(split.get(b, []))
            if shared:
                raise LesionBenchError(f"{source}: {len(shared)} id(s) in both {a} and {b}, e.g. {sorted(shared)[0]}")


def read_split_file(path: Path) -> Split:
    """JSON {"train": [...], "val": [...], "test": [...]} or TXT lines '<part> <id>' ('#' comments)."""
    if not path.is_file():
        raise LesionBenchError(f"{path}: split file not found (give official, paper000..paper002 or an existing file)")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise LesionBenchError(f"{path}: not a text split file (binary or damaged); write it again as JSON "
                               '{"train": [...], "val": [...], "test": [...]} or as lines \'<part> <id>\'') from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise LesionBenchError(f"{path}: not valid JSON ({err.msg}, line {err.lineno}); fix or re-create it") from None
        if not isinstance(data, dict) or not all(isinstance(data.get(p, []), list) for p in PARTS):
            raise LesionBenchError(f"{path}: expected an object of id lists {{\"train\": [...], \"val\": [...], "
                                   f"\"test\": [...]}}, got {type(data).__name__}; fix or re-create it")
        split = {p: [str(i) for i in data.get(p, [])] for p in PARTS}
    else:
        split = {p: [] for p in PARTS}
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#")[0].strip()
            if not line:
                continue
            part, _, iid = line.partition(" ")
            if part not in split or not iid.strip():
                raise LesionBenchError(f"{path}:{n}: expected '<train|val|test> <id>', got {line!r}")
            split[part].append(iid.strip())
    if not split["train"] or not split["test"]:
        raise LesionBenchError(f"{path}: a split needs at least 'train' and 'test' ids")
    check_disjoint(split, str(path))
    return split


def _pool_hash(official: dict[str, list[Sample]]) -> str:
    """Hash of the ids and the split algorithm's version (a new algorithm rewrites old splits)."""
    text = json.dumps({"version": SPLIT_VERSION, **{k: sorted(s.id for s in v) for k, v in sorted(official.items())}})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def split_path(split_dir: Path, dataset: str, name: str) -> Path:
    return split_dir / f"{dataset}__{name}.json"


def _read_written(path: Path, pool: str) -> Split | None:
    """A split written earlier for this pool of files; None when absent, for other files, or
    corrupt (a corrupt one is only our own cache of ``make_split``: it is rebuilt, with a warning)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        split = {p: [str(i) for i in data[p]] for p in PARTS}
        if not all(isinstance(data[p], list) for p in PARTS):
            raise TypeError("parts are not id lists")
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # JSONDecodeError, UnicodeDecodeError
        log.warning("%s: corrupt split file (%s: %s); rebuilding it", path, type(err).__name__, err)
        return None
    return split if data.get("pool_hash") == pool else None


def _write(path: Path, payload: dict) -> None:
    try:
        atomic_write_json(path, payload)
    except PermissionError as err:
        raise LesionBenchError(f"{path.parent}: cannot write the split there ({err.strerror}); set "
                               "$LESIONBENCH_WORKDIR to a writable folder") from None


def load_or_create(dataset: str, name: str, official: dict[str, list[Sample]], split_dir: Path) -> Split:
    """A path -> read it; a name -> reuse ``<split_dir>/<dataset>__<name>.json`` if it was made
    from the same files, else compute and write it. Every id must exist among the samples."""
    known = {s.id for samples in official.values() for s in samples}
    if name.endswith((".json", ".txt")) or "/" in name or Path(name).is_file():
        split, source = read_split_file(Path(name)), name
    else:
        path, pool = split_path(split_dir, dataset, name), _pool_hash(official)
        split = _read_written(path, pool)
        if split is None:
            split = make_split(dataset, name, official)
            _write(path, {"dataset": dataset, "split": name, "seed": SPLIT_SEED, "pool_hash": pool, **split})
        source = str(path)
    check_disjoint(split, source)
    unknown = [i for p in PARTS for i in split[p] if i not in known]
    if unknown:
        raise LesionBenchError(f"{source}: {len(unknown)} id(s) not found in the {dataset} files, e.g. {unknown[0]}")
    return split
