"""Suites: expand a suite file into runs, run each through train(), survive interruptions."""

from __future__ import annotations

import copy
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lesionbench.config import (
    ConfigError, ExperimentConfig, apply_overrides, format_validation_error, parse_config, read_yaml,
)


def experiments_dir() -> Path:
    """$LESIONBENCH_EXPERIMENTS, else ./experiments, else the one beside the package."""
    env = os.environ.get("LESIONBENCH_EXPERIMENTS")
    for candidate in (Path(env) if env else None, Path.cwd() / "experiments",
                      Path(__file__).resolve().parents[2] / "experiments"):
        if candidate is not None and candidate.is_dir():
            return candidate
    raise ConfigError("no experiments/ folder found: run from the repository root or set LESIONBENCH_EXPERIMENTS")


class MatrixModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None


class Matrix(BaseModel):
    """models × datasets × seeds on one shared recipe: the fair comparison."""

    model_config = ConfigDict(extra="forbid")
    base: str = Field(..., description="Experiment file holding the shared recipe (budget, augmentation, ...)")
    models: list[MatrixModel | str]
    datasets: list[str]
    seeds: list[int] = Field(default_factory=lambda: [42])


class SuiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    experiments: list[str] = Field(default_factory=list, description="Experiment files, relative to experiments/")
    seeds: list[int] | None = Field(None, description="Run every experiment once per seed")
    set: list[str] = Field(default_factory=list, description="Overrides applied to every run")
    matrix: Matrix | None = None
    suites: list[str] = Field(default_factory=list, description="Other suites to include")


@dataclass
class PlannedRun:
    name: str
    config: ExperimentConfig


QUICK = {"image_size": 64, "subset": 16, "epochs": 1, "batch_size": 4}


def load_suite(name_or_path: str) -> SuiteConfig:
    path = Path(name_or_path)
    if not path.suffix:
        path = experiments_dir() / "suites" / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (experiments_dir() / "suites").glob("*.yaml"))
        raise ConfigError(f"unknown suite '{name_or_path}' (known: {', '.join(known)})")
    try:
        return SuiteConfig.model_validate(read_yaml(path))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path), SuiteConfig)) from None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def shrink(data: dict[str, Any]) -> dict[str, Any]:
    """--quick: small images, a subset, one epoch per phase, no pretrained download: a smoke run."""
    ds = data.setdefault("dataset", {})
    ds["image_size"] = min(int(ds.get("image_size", 224)), QUICK["image_size"])
    ds["subset"] = QUICK["subset"]
    ds["num_workers"] = 0
    tr = data.setdefault("trainer", {})
    tr["epochs"] = QUICK["epochs"]
    tr["batch_size"] = min(int(tr.get("batch_size", 8)), QUICK["batch_size"])
    options = data.setdefault("model", {}).setdefault("options", {})
    weights = options.get("weights")
    if weights not in (None, "none") and not Path(str(weights)).is_file():  # imagenet or an exact tag:
        options["weights"] = "none"  # a smoke run downloads nothing
    for phase in data.get("phases") or []:
        phase["epochs"] = QUICK["epochs"]
        if phase.get("early_stopping"):
            phase["early_stopping"]["patience"] = 1
    return data


def make_config(data: dict[str, Any], source: str, overrides: list[str], quick: bool, synthetic: bool) -> ExperimentConfig:
    data = apply_overrides(copy.deepcopy(data), overrides)  # never edit the caller's nested dicts
    if quick:
        data = shrink(data)
    if synthetic:
        from lesionbench.data.synthetic import default_root

        data.setdefault("dataset", {})["root"] = str(default_root())
    return parse_config(data, source)


def expand_experiment(path: str | Path, overrides: list[str], quick: bool, synthetic: bool,
                      seeds: list[int] | None = None) -> list[PlannedRun]:
    path = Path(path)
    if not path.is_file() and (experiments_dir() / path).is_file():
        path = experiments_dir() / path
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    runs = []
    for seed in seeds or [None]:
        extra = [f"trainer.seed={seed}"] if seed is not None else []
        cfg = make_config(data, str(path), [*overrides, *extra], quick, synthetic)
        runs.append(PlannedRun(f"{cfg.name}__s{cfg.trainer.seed}", cfg))
    return runs


def expand_suite(suite: SuiteConfig, overrides: list[str] = (), quick: bool = False,
                 synthetic: bool = False, _seen: set[str] | None = None) -> list[PlannedRun]:
    """Every run of a suite, in order, with unique names (included suites are flattened)."""
    seen = _seen if _seen is not None else set()
    runs: list[PlannedRun] = []
    extra = [*suite.set, *overrides]
    for sub in suite.suites:
        if sub not in seen:
            seen.add(sub)
            runs += expand_suite(load_suite(sub), overrides, quick, synthetic, seen)
    for exp in suite.experiments:
        runs += expand_experiment(exp, extra, quick, synthetic, suite.seeds)
    if suite.matrix:
        m = suite.matrix
        base_path = experiments_dir() / m.base
        base = read_yaml(base_path)
        for dataset in m.datasets:
            for entry in m.models:
                model = MatrixModel(name=entry) if isinstance(entry, str) else entry
                label = model.label or _slug(model.name.replace("smp:", "smp-").replace("/", "-"))
                for seed in m.seeds:
                    data = {**base, "name": f"{dataset}_{label}", "model": {"name": model.name, "options": model.options},
                            "dataset": {**base.get("dataset", {}), "name": dataset},
                            "trainer": {**base.get("trainer", {}), "seed": seed}}
                    cfg = make_config(data, f"{base_path} [{dataset} × {model.name}]", extra, quick, synthetic)
                    runs.append(PlannedRun(f"{cfg.name}__s{seed}", cfg))
    unique: dict[str, PlannedRun] = {}
    for run in runs:
        unique.setdefault(run.name, run)
    return list(unique.values())


def suite_dir_name(name: str, quick: bool, synthetic: bool) -> str:
    """Smoke and synthetic runs live apart from real results, so they never overwrite them."""
    return name + ("+synthetic" if synthetic else "") + ("+quick" if quick else "")


def run_all(runs: list[PlannedRun], out_dir: Path, suite: str,
            on_update: Callable[[str, str, dict[str, Any]], None] | None = None,
            progress: bool = False) -> dict[str, str]:
    """Run each planned run; skip finished ones, resume interrupted ones, record failures."""
    from lesionbench.training.run import is_finished, record_failure, train

    statuses: dict[str, str] = {}
    notify = on_update or (lambda *a: None)
    for run in runs:
        run_dir = out_dir / run.name
        if is_finished(run_dir, run.config):
            statuses[run.name] = "skipped"
            notify(run.name, "skipped (finished)", {})
            continue
        notify(run.name, "running", {})
        start = time.perf_counter()
        try:
            result = train(run.config, run_dir, suite=suite, progress=progress)
        except KeyboardInterrupt:
            notify(run.name, "interrupted", {})
            raise
        except Exception as err:  # noqa: BLE001 - one failed run must not stop the suite
            record_failure(run_dir, run.config, suite, err)
            statuses[run.name] = "failed"
            notify(run.name, "failed", {"error": str(err).splitlines()[0] if str(err) else type(err).__name__})
            continue
        _visual_report(run_dir)
        statuses[run.name] = "finished"
        notify(run.name, "finished", {"dice": result.metrics.get("per_image", {}).get("dice"),
                                      "seconds": time.perf_counter() - start})
    return statuses


def _visual_report(run_dir: Path) -> None:
    """Pictures of what the model does, beside its numbers; a drawing failure loses no result."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0 or not (run_dir / "metrics.json").is_file():
        return
    from lesionbench.reporting.visual import write_run_report

    try:
        write_run_report(run_dir)
    except Exception as err:  # noqa: BLE001
        (run_dir / "report").mkdir(exist_ok=True)
        (run_dir / "report" / "error.txt").write_text(f"{type(err).__name__}: {err}\n")
