"""Where a suite stands, read from its run folders alone (no scheduler, no database): what `status` and the
multi-worker progress view show."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from lesionbench.bundled import find_suite
from lesionbench.config import safe_folder_name
from lesionbench.runfolder import RunFolderError, read_metrics, read_run_info
from lesionbench.studies.claim import read_claim
from lesionbench.studies.suite import PlannedRun, SuiteConfig, load_suite, suite_dir_name

State = Literal["finished", "running", "stale", "failed", "waiting"]


class RunState(BaseModel):
    run: str
    state: State
    worker: str = ""
    host: str = ""
    detail: str = ""


def run_state(run: PlannedRun, run_dir: Path, timeout: float | None = None) -> RunState:
    """finished > running (a fresh claim) > stale (a claim without heartbeat) > failed > waiting."""
    from lesionbench.lifecycle import is_finished

    if is_finished(run_dir, run.config):
        dice = read_metrics(run_dir).per_image.get("dice")  # is_finished has validated it
        return RunState(run=run.name, state="finished", detail=f"test dice {dice:.4f}" if dice is not None else "")
    held = read_claim(run_dir, timeout)
    if held is not None:
        who = held.info
        return RunState(run=run.name, state="stale" if held.stale else "running", worker=who.worker if who else "?",
                        host=who.host if who else "?", detail=f"heartbeat {held.age:.0f}s ago")
    other = _finished_otherwise(run, run_dir)
    if other is not None:
        return other
    try:
        info = read_run_info(run_dir)
    except RunFolderError:  # not started, or killed before its first write: waiting
        info = None
    if info is not None and info.status == "failed":
        return RunState(run=run.name, state="failed", detail=info.error or "")
    resumable = any((run_dir / "checkpoints").glob("*/last.ckpt"))
    return RunState(run=run.name, state="waiting", detail="interrupted, resumes from last.ckpt" if resumable else "")


def _finished_otherwise(run: PlannedRun, run_dir: Path) -> RunState | None:
    """A run folder finished under other settings than these (--set, a changed recipe): finished, saying so."""
    try:
        info, metrics = read_run_info(run_dir), read_metrics(run_dir)
    except RunFolderError:
        return None
    if info.status != "finished":
        return None
    dice = metrics.per_image.get("dice")
    score = f"test dice {dice:.4f}; " if dice is not None else ""
    return RunState(run=run.name, state="finished", detail=f"{score}made with other settings than these (--set or "
                                                           "the recipe differ): `run` with these would train it again")


def flag_failed(states: list[RunState], suite_dir: Path) -> list[RunState]:
    """Finished runs that the leaderboard names as failed trainings say so (reporting.seedplan.failed_runs)."""
    from lesionbench.reporting.seedplan import failed_runs

    if not any(s.state == "finished" for s in states):
        return states
    failed = failed_runs(suite_dir)
    return [s.model_copy(update={"detail": f"{s.detail}; FAILED TRAINING: {failed[s.run]}".lstrip("; ")})
            if s.state == "finished" and s.run in failed else s for s in states]


def suite_status(runs: list[PlannedRun], suite_dir: Path, timeout: float | None = None) -> list[RunState]:
    return [run_state(run, suite_dir / run.name, timeout) for run in runs]


def summary(states: list[RunState]) -> str:
    counts = Counter(s.state for s in states)
    return ", ".join(f"{counts[k]} {k}" for k in ("finished", "running", "stale", "failed", "waiting") if counts[k])


#: A suite built on the command line (`run --models`) is saved in its results folder, so that its name alone
#: finds it again (`status --suite NAME`, `run --workers`).
SUITE_FILE = "suite.yaml"


class SuiteFolder(BaseModel):
    """What a ``--suite`` value means: its definition (None for a bare results folder) and its results folder."""

    suite: SuiteConfig | None
    folder: Path
    quick: bool
    synthetic: bool
    note: str = ""


def suite_folder(value: str, out: Path, quick: bool = False, synthetic: bool = False) -> SuiteFolder:
    """One name for a suite everywhere: a bundled name or a suite file (as `run` takes it), a suite that `run
    --models` saved under ``out``, or a results folder's own name (``demo+synthetic``). Without --quick or
    --synthetic, a suite whose only results were made with them is read from that folder (``note`` says so)."""
    path = find_suite(value)
    suite = load_suite(str(path)) if path is not None else None
    name = suite.name if suite is not None else safe_folder_name(value, "--suite")
    q, s, note = quick, synthetic, ""
    variants = [(vq, vs) for vs, vq in ((True, False), (False, True), (True, True))
                if (out / suite_dir_name(name, vq, vs)).is_dir()]
    if not (out / suite_dir_name(name, q, s)).is_dir() and not (quick or synthetic) and variants:
        q, s = max(variants, key=lambda v: (out / suite_dir_name(name, *v)).stat().st_mtime)
        flags = " ".join(f for f, on in (("--synthetic", s), ("--quick", q)) if on)
        note = f"{out / name} does not exist: reading {out / suite_dir_name(name, q, s)} (the results of {flags})"
    folder = out / suite_dir_name(name, q, s)
    if suite is None and (folder / SUITE_FILE).is_file():
        suite = load_suite(str(folder / SUITE_FILE))
    return SuiteFolder(suite=suite, folder=folder, quick=q, synthetic=s, note=note)
