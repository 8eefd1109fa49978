"""Published numbers beside ours, each with its definition, and only where they compare.

Two sources, each stored once: the challenges' own reference scores (below, per dataset), and
each recipe's ``published:`` list in experiments/*.yaml. A recipe's scores are shown beside a
run only when the run is that recipe unchanged in everything that affects its numbers (every
field the config hash covers, the seed aside) and never when it ran on the synthetic replica;
otherwise the cell names what changed. A value the source gives as approximate keeps its "~".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from lesionbench.config import (
    HASH_DEFAULTS,
    HASH_EXCLUDED,
    ConfigError,
    ExperimentConfig,
    PublishedScore,
    parse_config,
    read_yaml,
)
from lesionbench.metrics.scores import JACCARD_THRESHOLD

#: Challenge-level references per dataset: (source, metric, value or None, definition, split / note).
DATASET_REFERENCES: dict[str, list[tuple[str, str, float | None, str, str]]] = {
    "isic2017": [("ISIC 2017 Part 1 challenge winner", "jaccard", 0.765,
                  "mean per-image Jaccard index (the challenge ranking metric)", "official 600-image test set")],
    "isic2018": [("ISIC 2018 Task 1 challenge winner", "thresholded_jaccard", 0.802,
                  f"mean over test images of the Jaccard index, counted as 0 where below {JACCARD_THRESHOLD}",
                  "official 1000-image challenge test set")],
    "kvasir-seg": [
        ("Jha et al., Kvasir-SEG: A Segmented Polyp Dataset, MMM 2020 (the dataset paper)",
         "dice", None, "reports the Dice coefficient and mIoU of its baselines and names no ranking metric; "
         "LesionBench ranks by mean per-image Dice, the metric paper 002 selects by",
         "no challenge of its own: the Medico 2020 task (MediaEval) ranked by mIoU (Jaccard) on a separate test set"),
        ("paper 002 ResNet-50 U-Net", "dice", None, "no test score reported", "880 / 60 / 60 split"),
    ],
}
NOT_COMPARABLE = {"synthetic": "generated replica data: published scores are not comparable"}
#: The one hashed field a run may change with the recipe's published scores still shown beside it.
SEED = "trainer.seed"


@dataclass(frozen=True)
class ShownScore:
    """A published score as printed: the value a number, or text keeping the source's "~"."""

    metric: str
    value: float | str
    source: str
    note: str = ""


def shown(p: PublishedScore) -> ShownScore:
    """``p`` as the leaderboard prints it: an approximate value keeps its "~" (``~0.90``)."""
    value: float | str = p.value
    if p.approximate:
        value = f"~{p.value:.2f}" if round(p.value, 2) == p.value else f"~{p.value:.4g}"
    return ShownScore(p.metric, value, p.source, p.note)


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        return {k: v for key, val in data.items() for k, v in _flat(val, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): data}


def _fields(cfg: ExperimentConfig) -> dict[str, Any]:
    """What a published score depends on, flattened to dotted keys: every field the config hash
    covers (HASH_EXCLUDED left out, a later field at its default left out), the seed aside."""
    data = _flat(cfg.model_dump(mode="json"))
    skip = [*HASH_EXCLUDED, SEED] + (["engine", "nnunet"] if cfg.engine == "lightning" else [])
    out = {k: v for k, v in data.items() if not any(k == s or k.startswith(s + ".") for s in skip)}
    return {k: v for k, v in out.items() if not (k in HASH_DEFAULTS and v == HASH_DEFAULTS[k])}


def synthetic_data(run_dir: Path, cfg: ExperimentConfig) -> str:
    """Why the run's data is the synthetic replica ("" when it is not): the dataset, a root that is
    the keyword ``synthetic``, holds the replica's marker or is the replica's folder, or a
    ``+synthetic`` suite folder (``lesionbench run --synthetic`` writes there)."""
    from lesionbench.data.synthetic import MARKER
    from lesionbench.settings import settings

    if cfg.dataset.name == "synthetic":
        return "synthetic replica data"
    if cfg.dataset.root and cfg.dataset.root.strip() == "synthetic":  # the keyword for the replica
        return "synthetic replica data (dataset.root: synthetic)"
    if cfg.dataset.root:
        root = Path(cfg.dataset.root).expanduser()
        try:
            replica = settings().synthetic_root().resolve()
        except Exception:  # noqa: BLE001 - a malformed environment: the marker still decides
            replica = None
        if (root / MARKER).is_file() or root.resolve() == replica:
            return f"synthetic replica data (dataset.root {root})"
    if any("+synthetic" in part for part in (run_dir.parent.name, run_dir.name)):
        return "synthetic replica data (a --synthetic run)"
    return ""


@cache
def _recipes(folder: Path) -> dict[str, Path]:
    """Experiment name -> recipe YAML (``name:`` inside, else the file stem), for every YAML in ``folder``."""
    out: dict[str, Path] = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            name = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("name", path.stem)
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        out.setdefault(str(name), path)
    return out


def recipe_published(run_dir: Path, experiment: str, recipes: Path | None) -> tuple[list[ShownScore], str]:
    """(the recipe's published scores, "" when the run is the recipe unchanged, else why it is not).

    Unchanged = every field that affects results equals the recipe's (the fields of the config
    hash, the seed aside), on real data: a ``--synthetic`` run is never comparable."""
    path = _recipes(recipes.resolve()).get(experiment) if recipes and recipes.is_dir() else None
    if path is None:
        return [], ""
    try:
        data = read_yaml(path)
        data.setdefault("name", path.stem)
        recipe = parse_config(data, str(path))
    except ConfigError as err:  # the leaderboard still builds; the cell says why no score is shown
        return [], f"recipe unreadable ({str(err).splitlines()[0]})"
    if not recipe.published:
        return [], ""
    scores = [shown(p) for p in recipe.published]
    try:
        run = parse_config(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {},
                           str(run_dir / "config.yaml"))
    except Exception as err:  # noqa: BLE001 - an old or unreadable run config: say so in the cell
        return scores, f"run config unreadable ({str(err).splitlines()[0]})"
    synthetic = synthetic_data(run_dir, run)
    if synthetic:
        return scores, synthetic
    want, got = _fields(recipe), _fields(run)
    changed = [f"{k} {want.get(k)}→{got.get(k)}" for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
    reseeded = run.model_copy(update={"trainer": run.trainer.model_copy(update={"seed": recipe.trainer.seed})})
    if not changed and reseeded.config_hash() != recipe.config_hash():  # a difference the field list missed
        changed = [f"config hash {recipe.config_hash()}→{reseeded.config_hash()} (seed aside)"]
    return scores, ("changed " + ", ".join(changed)) if changed else ""
