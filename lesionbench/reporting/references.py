"""Published numbers beside ours, each with its definition, and only where they compare.

Two sources, each stored once: the challenges' own reference scores (below, per dataset), and
each recipe's ``published:`` list in experiments/*.yaml. A recipe's scores are shown beside a
run only when the run is that recipe unchanged in what the scores depend on (model, split, image
size, weights, data subset, epochs); otherwise the cell names what changed.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from lesionbench.config import ConfigError, ExperimentConfig, PublishedScore, parse_config, read_yaml
from lesionbench.training.metrics import JACCARD_THRESHOLD

#: Challenge-level references per dataset: (source, metric, value or None, definition, split / note).
DATASET_REFERENCES: dict[str, list[tuple[str, str, float | None, str, str]]] = {
    "isic2017": [("ISIC 2017 Part 1 challenge winner", "jaccard", 0.765,
                  "mean per-image Jaccard index (the challenge ranking metric)", "official 600-image test set")],
    "isic2018": [("ISIC 2018 Task 1 challenge winner", "thresholded_jaccard", 0.802,
                  f"mean over test images of the Jaccard index, counted as 0 where below {JACCARD_THRESHOLD}",
                  "official 1000-image challenge test set")],
    "kvasir-seg": [("paper 002 ResNet-50 U-Net", "dice", None, "no test score reported", "880 / 60 / 60 split")],
}
NOT_COMPARABLE = {"synthetic": "generated replica data: published scores are not comparable"}


def _fields(cfg: ExperimentConfig) -> dict[str, Any]:
    """What a published score depends on, flattened to dotted keys."""
    out = {"model.name": cfg.model.name, "dataset.name": cfg.dataset.name, "dataset.split": cfg.dataset.split,
           "dataset.image_size": cfg.dataset.image_size, "dataset.subset": cfg.dataset.subset,
           "trainer.epochs": cfg.trainer.epochs}
    out.update({f"model.options.{k}": v for k, v in sorted(cfg.model.options.items())})
    out.update({f"phases.{p.name}.epochs": p.epochs for p in cfg.phases})
    return out


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


def recipe_published(run_dir: Path, experiment: str, recipes: Path | None) -> tuple[list[PublishedScore], str]:
    """(the recipe's published scores, "" when the run is the recipe unchanged, else why it is not)."""
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
    try:
        run = parse_config(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {},
                           str(run_dir / "config.yaml"))
    except Exception as err:  # noqa: BLE001 - an old or unreadable run config: say so in the cell
        return recipe.published, f"run config unreadable ({str(err).splitlines()[0]})"
    want, got = _fields(recipe), _fields(run)
    changed = [f"{k} {want.get(k)}→{got.get(k)}" for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
    return recipe.published, ("changed " + ", ".join(changed)) if changed else ""
