"""Where a suite stands, read from its run folders alone (no scheduler, no database): what `status` and the
multi-worker progress view show."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from lesionbench.runfolder import RunFolderError, read_metrics, read_run_info
from lesionbench.studies.claim import read_claim
from lesionbench.studies.suite import PlannedRun

State = Literal["finished", "running", "stale", "failed", "waiting"]


class RunState(BaseModel):
    run: str
    state: State
    worker: str = ""
    host: str = ""
    detail: str = ""


def run_state(run: PlannedRun, run_dir: Path, timeout: float | None = None) -> RunState:
    """finished > running (a fresh claim) > stale (a claim without heartbeat) > failed > waiting."""
    from lesionbench.training.run import is_finished

    if is_finished(run_dir, run.config):
        dice = read_metrics(run_dir).per_image.get("dice")  # is_finished has validated it
        return RunState(run=run.name, state="finished", detail=f"test dice {dice:.4f}" if dice is not None else "")
    held = read_claim(run_dir, timeout)
    if held is not None:
        who = held.info
        return RunState(run=run.name, state="stale" if held.stale else "running", worker=who.worker if who else "?",
                        host=who.host if who else "?", detail=f"heartbeat {held.age:.0f}s ago")
    try:
        info = read_run_info(run_dir)
    except RunFolderError:  # not started, or killed before its first write: waiting
        info = None
    if info is not None and info.status == "failed":
        return RunState(run=run.name, state="failed", detail=info.error or "")
    resumable = any((run_dir / "checkpoints").glob("*/last.ckpt"))
    return RunState(run=run.name, state="waiting", detail="interrupted, resumes from last.ckpt" if resumable else "")


def suite_status(runs: list[PlannedRun], suite_dir: Path, timeout: float | None = None) -> list[RunState]:
    return [run_state(run, suite_dir / run.name, timeout) for run in runs]


def summary(states: list[RunState]) -> str:
    counts = Counter(s.state for s in states)
    return ", ".join(f"{counts[k]} {k}" for k in ("finished", "running", "stale", "failed", "waiting") if counts[k])
