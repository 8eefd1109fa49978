"""Read run folders (results/<suite>/<run>/) into records the leaderboard can trust.

One broken folder must never hide the others: every problem becomes a record with
status "broken" and a one-line error instead of an exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import TypeAdapter, ValidationError

from lesionbench.errors import LesionBenchError
from lesionbench.reporting.schema import Metrics, PerImageRow, RunInfo, first_error

#: Folders under a suite that are not runs (written by the reporting layer itself).
NOT_RUNS = {"plots"}
RUN_FILES = ("run.json", "metrics.json", "config.yaml")


@dataclass
class RunRecord:
    """Everything the leaderboard needs from one run folder."""

    path: Path
    run: str
    status: str  # finished | failed | running | broken
    error: str | None = None
    experiment: str | None = None
    dataset: str | None = None
    model: str | None = None
    seed: int | None = None
    image_size: int | None = None  # the recipe's resolution (FLOPs are counted at it)
    info: dict[str, Any] = field(default_factory=dict)  # run.json
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics.json
    per_image: pd.DataFrame | None = None  # per_image.csv, indexed by image id
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "finished"


def error_line(text: Any, limit: int = 300) -> str:
    """The informative line of an error: the last line of a traceback, else the first line."""
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    if not lines:
        return "no error message recorded"
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path.name}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: expected a JSON object, got {type(data).__name__}")
    return data


def _config_fields(run_dir: Path) -> dict[str, Any]:
    """Best-effort experiment/dataset/model from config.yaml (for failed runs without metrics)."""
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        return {"experiment": cfg.get("name"), "dataset": (cfg.get("dataset") or {}).get("name"),
                "model": (cfg.get("model") or {}).get("name"), "seed": (cfg.get("trainer") or {}).get("seed"),
                "image_size": (cfg.get("dataset") or {}).get("image_size")}
    except Exception:
        return {}


def _read_per_image(path: Path, n_test: int | None) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"id": str})
    missing = {"id", "dice"} - set(df.columns)
    if missing:
        raise ValueError(f"per_image.csv: missing column(s) {sorted(missing)}")
    try:
        TypeAdapter(list[PerImageRow]).validate_python(df[["id", "dice"]].to_dict("records"))
    except ValidationError as err:
        raise ValueError(first_error(err, "per_image.csv (key: row.column)")) from None
    if df["id"].duplicated().any():
        raise ValueError("per_image.csv: duplicated image ids")
    if n_test is not None and len(df) != n_test:
        raise ValueError(f"per_image.csv: {len(df)} rows but metrics.json says n_test={n_test} "
                         "(a truncated copy? copy the run folder again or re-run it)")
    return df.set_index("id")


def read_run(run_dir: Path) -> RunRecord:
    """One run folder -> RunRecord; raises ValueError (one line) for the caller to record as broken."""
    run_dir = Path(run_dir)
    rec = RunRecord(path=run_dir, run=run_dir.name, status="broken")
    for k, v in _config_fields(run_dir).items():
        setattr(rec, k, v)
    if not (run_dir / "run.json").is_file():
        raise ValueError("run.json missing (the run never started or the folder was copied partially)")
    rec.info = _read_json(run_dir / "run.json")
    try:
        info = RunInfo.model_validate(rec.info)
    except ValidationError as err:
        raise ValueError(first_error(err, "run.json")) from None
    rec.status = info.status
    rec.seed = info.seed if info.seed is not None else rec.seed
    if rec.status != "finished":
        rec.error = error_line(info.error) if rec.status == "failed" else f"status: {rec.status}"
        return rec
    if not (run_dir / "metrics.json").is_file():
        raise ValueError("metrics.json missing although run.json says finished")
    m = _read_json(run_dir / "metrics.json")
    try:
        checked = Metrics.model_validate(m)
    except ValidationError as err:
        raise ValueError(first_error(err, "metrics.json")) from None
    for key, kind in (("cost", dict), ("challenge", dict), ("published", list)):
        if m.get(key) is not None and not isinstance(m[key], kind):
            rec.warnings.append(f"{run_dir.name}: metrics.json '{key}' is not a {kind.__name__}, ignored")
            m[key] = kind()
    rec.metrics = m
    rec.experiment = checked.experiment or rec.experiment or rec.run
    rec.dataset = checked.dataset or rec.dataset
    if not rec.dataset:
        raise ValueError("metrics.json: key 'dataset' missing (and config.yaml has none)")
    rec.model = checked.model or rec.model
    rec.seed = checked.seed if checked.seed is not None else rec.seed
    csv = run_dir / "per_image.csv"
    if csv.is_file():
        rec.per_image = _read_per_image(csv, checked.n_test)  # a bad file skips the run: it would shift the CI
    else:
        rec.warnings.append(f"{rec.run}: per_image.csv missing (no CI/significance from this run)")
    return rec


def collect_runs(suite_dir: str | Path) -> list[RunRecord]:
    """Every run folder under ``suite_dir``, sorted by name; problems become "broken" records.

    Sub-folders holding none of run.json / metrics.json / config.yaml (and plots/) are not runs.
    """
    suite = Path(suite_dir)
    if not suite.is_dir():
        raise LesionBenchError(f"{suite}: no such suite folder (run `lesionbench run --suite NAME` first)")
    records = []
    for d in sorted(p for p in suite.iterdir() if p.is_dir()):
        if d.name in NOT_RUNS or d.name.startswith("."):  # a run may be named "_x"; hidden folders are not runs
            continue
        if not any((d / f).exists() for f in RUN_FILES):
            continue
        try:
            records.append(read_run(d))
        except Exception as err:
            fields = _config_fields(d)
            records.append(RunRecord(path=d, run=d.name, status="broken", error=error_line(err),
                                     **{k: v for k, v in fields.items() if k in ("experiment", "dataset", "model")}))
    return records
