"""An Optuna study's table: one row per trial (one configuration trained once), best first.

A study's trials differ in their parameters, so they are listed as trials, never aggregated as the seeds of one
model (no mean, SD, confidence interval or seed test across them); the suite leaderboard does that for seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lesionbench.io import atomic_write_json, atomic_write_text, read_json
from lesionbench.reporting.markdown import MISSING, esc, param, table

STUDY_FILE = "study.json"  # written by `tune` (studies/tune.py) beside its trial run folders


def ranked_trials(trials: list[dict[str, Any]], direction: str = "maximize") -> list[dict[str, Any]]:
    """Best first: trials with a value by it (``direction``), then those without, by number."""
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(trials, key=lambda t: (not isinstance(t.get("value"), (int, float)),
                                         sign * (t.get("value") or 0.0), t.get("number", 0)))


def _num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else MISSING


def _trials_section(trials: list[dict[str, Any]], metric: str, direction: str) -> list[str]:
    """One row per Optuna trial, best first: its parameters, validation and test scores, state."""
    names = sorted({k for t in trials for k in (t.get("params") or {})})
    rows = []
    for i, t in enumerate(ranked_trials(trials, direction), 1):
        params = t.get("params") or {}
        rows.append([str(i) if isinstance(t.get("value"), (int, float)) else MISSING, str(t.get("number", "?")),
                     *[param(params[k]) if k in params else MISSING for k in names], _num(t.get("value")),
                     _num(t.get("test")), str(t.get("state", "?")).split(".")[-1], esc(t.get("reason") or "")])
    header = ["Rank", "Trial", *names, metric, "Test dice", "State", "Note"]
    return ["## Optuna trials", "", f"Best first by {metric} ({direction}). Each row is one trial: one configuration "
            "trained once; trials are not seeds of one model, so no mean, SD or confidence interval is taken across "
            "them.", ""] + table(rows, header)


def write_study_board(study: Path) -> Path:
    """leaderboard.md of an Optuna study folder, from its study.json: the trials, best first."""
    data = read_json(study / STUDY_FILE)
    trials = data.get("trials") or []
    metric, direction = data.get("metric", "val/dice"), data.get("direction", "maximize")
    lines = [f"# LesionBench study `{data.get('study', study.name)}`: {len(trials)} trial(s)", "",
             "<!-- GENERATED FILE: do not edit by hand; regenerate it instead. -->",
             f"> Generated from {STUDY_FILE} by `lesionbench leaderboard --suite {study.name}`; each trial's run "
             "folder is `trial-<number>/`, the best trial's config is `best.yaml`.", "",
             *_trials_section(trials, metric, direction), ""]
    notes = data.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {esc(n)}" for n in notes] + [""]
    return atomic_write_text(study / "leaderboard.md", "\n".join(lines))


def write_trials_table(study_dir: str | Path, trials: list[dict[str, Any]], metric: str = "val/dice",
                       direction: str = "maximize") -> Path:
    """Save the Optuna trials as ``trials.md`` (best first) and regenerate the study's leaderboard.md.

    Each trial: {"number", "state", "params": {name: value}, "value", "test", "reason"}; returns leaderboard.md.
    The study's ``study.json`` (written first by `tune`) is what the leaderboard reads.
    """
    study = Path(study_dir)
    text = "\n".join(_trials_section(trials, metric, direction))
    atomic_write_text(study / "trials.md", text + "\n")
    if not (study / STUDY_FILE).is_file():  # called without a study file: the leaderboard reads this one
        atomic_write_json(study / STUDY_FILE, {"study": study.name, "metric": metric, "direction": direction,
                                               "trials": trials})
    return write_study_board(study)
