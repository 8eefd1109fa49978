"""Pieces of a study beside its loop: storage, pruning callback, plots, config keys, grid bookkeeping."""

from __future__ import annotations

import itertools
import os
import socket
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from optuna_integration import PyTorchLightningPruningCallback

from lesionbench.config import ConfigError, SearchParam
from lesionbench.errors import LesionBenchError

try:  # Optuna >= 4.9 names the retry callback after what it retries
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

    RETRY_ARG = "heartbeat_stale_trial_callback"
except ImportError:  # pragma: no cover - older Optuna
    from optuna.storages import RetryFailedTrialCallback as Retry

    RETRY_ARG = "failed_trial_callback"

#: Seconds between a running trial's heartbeats (Optuna's heartbeat thread); a trial silent for
#: GRACE_FACTOR heartbeats counts as dead (its worker was killed or its machine crashed): the next
#: worker to look fails it and Optuna's retry callback queues its parameters again.
HEARTBEAT_S, GRACE_FACTOR, MAX_RETRY = 30, 4, 3
#: Trial states that hold a grid point (a FAIL frees it for a retry).
TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def build_storage(url: str, heartbeat: int = HEARTBEAT_S) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: RDB (sqlite/postgresql/mysql) with heartbeats and retries of
    dead workers' trials, or journal:///file (no heartbeat: a killed worker's trial stays RUNNING)."""
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.split(":", 1)[0].split("+")[0] not in ("sqlite", "postgresql", "postgres", "mysql"):
        raise ConfigError(f"--storage {url!r}: expected sqlite:///path.db, postgresql://user@host/db, "
                          "mysql://... or journal:///path.log")
    url = _postgres_driver(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 120}  # several workers on one file wait for the lock
    last: Exception | None = None
    for attempt in range(6):  # workers starting together race to create the schema: retry
        try:
            with warnings.catch_warnings():  # the heartbeat is an experimental argument: say so once, not per open
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat,
                                                  grace_period=heartbeat * GRACE_FACTOR,
                                                  **{RETRY_ARG: Retry(max_retry=MAX_RETRY)})
        except ImportError as err:
            raise LesionBenchError(f"--storage {url}: no database driver ({err}); pip install psycopg2-binary "
                                   "(PostgreSQL) or PyMySQL (MySQL)") from None
        except Exception as err:  # noqa: BLE001 - sqlalchemy errors of every driver
            last = err
            time.sleep(0.5 + attempt)
    raise LesionBenchError(f"--storage {url}: cannot open the study storage ({str(last).splitlines()[0]})")


def _postgres_driver(url: str) -> str:
    """SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; use psycopg2 (our dependency) when that is absent."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
    return f"postgresql+{driver}{sep}{rest}"


class EpochPruning(PyTorchLightningPruningCallback):
    """Optuna's Lightning pruning callback, reporting val/dice per epoch counted across phases.

    Each phase is a new ``fit`` whose epochs restart at 0; Optuna ignores a repeated step, so
    the step here is the number of validation epochs reported so far in this trial.
    """

    def __init__(self, trial: optuna.Trial, monitor: str = "val/dice") -> None:
        super().__init__(trial, monitor)
        self.trial, self.step = trial, 0

    def on_validation_end(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        if trainer.sanity_checking or self.is_ddp_backend:
            return super().on_validation_end(trainer, pl_module) if self.is_ddp_backend else None
        score = trainer.callback_metrics.get(self.monitor)
        if score is None:
            return
        step, self.step = self.step, self.step + 1
        self.trial.report(float(score), step=step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {step} ({self.monitor}={float(score):.4f})")


def save_plots(study: optuna.Study, study_dir: Path) -> list[str]:
    """Optimisation history and parameter importance as PNG (matplotlib, Agg); notes on what was skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    notes: list[str] = []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return ["no completed trial yet: plots skipped"]
    ax = ovm.plot_optimization_history(study, target_name="val/dice")
    ax.figure.savefig(study_dir / "optimization_history.png", dpi=110, bbox_inches="tight")
    plt.close(ax.figure)
    varying = [k for k in complete[0].params if len({repr(t.params.get(k)) for t in complete}) > 1]
    if len(complete) < 2 or not varying:
        notes.append("parameter importance skipped: needs >= 2 completed trials with different parameters")
        return notes
    try:
        ax = ovm.plot_param_importances(study, target_name="val/dice")
        ax.figure.savefig(study_dir / "param_importances.png", dpi=110, bbox_inches="tight")
        plt.close(ax.figure)
    except (RuntimeError, ValueError, ZeroDivisionError) as err:
        notes.append(f"parameter importance skipped: {str(err).splitlines()[0]}")
    return notes


# ----------------------------------------------------------------------------- dead workers, grid bookkeeping

def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def grid_space(params: list[SearchParam], source: str = "tune") -> dict[str, list[Any]]:
    """Grid points per parameter: categorical choices, or every int in [low, high]."""
    space = {}
    for p in params:
        if p.type == "categorical":
            space[p.name] = list(p.choices or [])
        elif p.type == "int":
            space[p.name] = list(range(int(p.low), int(p.high) + 1))
        else:
            raise ConfigError(f"{source}: tune.params {p.name}: the grid sampler needs `type: categorical` with `choices`")
    return dict(sorted(space.items()))


def grid_size(space: dict[str, list[Any]]) -> int:
    return len(list(itertools.product(*space.values())))


def point(t: FrozenTrial | optuna.Trial, space: dict[str, list[Any]]) -> tuple | None:
    """The grid point a trial holds (from its public params), or None before it drew one."""
    params = t.params
    return tuple(params[k] for k in space) if all(k in params for k in space) else None


def _holds(t: FrozenTrial) -> bool:
    """Whether a trial occupies its grid point: every trial but a duplicate closed unrun (a dead
    worker's failed trial too: its retry is queued, or its retries are spent and the point stays
    missing in the final check instead of being drawn again and again)."""
    return "duplicate_of" not in t.user_attrs


def fail_dead(study: optuna.Study, grace_s: float) -> None:
    """Fail and queue again the trials of dead workers: Optuna's heartbeat check for RDB storages
    (``fail_stale_trials`` runs the storage's retry callback), and trials no worker ever stamped
    (a worker killed between asking for a trial and starting it leaves no heartbeat either)."""
    with warnings.catch_warnings():  # Optuna's own optimize() silences these experimental warnings too
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "worker" in t.user_attrs or t.datetime_start is None or \
                (datetime.now(t.datetime_start.tzinfo) - t.datetime_start).total_seconds() <= grace_s:
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            continue  # another worker failed it first (and queued it again)
        except RuntimeError:
            pass  # the grid sampler's after_trial calls study.stop(), which works only inside optimize; the FAIL is stored
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            Retry(max_retry=MAX_RETRY)(study, t)


def requeue_errors(study: optuna.Study, space: dict[str, list[Any]], started: float) -> None:
    """Queue once more the grid points whose trial failed by its own error in an earlier invocation
    (a fixed bug, a freed GPU), copying the trial as Optuna's retry callback does."""
    trials = study.get_trials(deepcopy=False)
    held = {point(t, space) for t in trials if t.state != TrialState.FAIL and _holds(t)}
    for t in trials:
        p = point(t, space)
        earlier = t.datetime_start is not None and t.datetime_start.timestamp() < started
        if t.state != TrialState.FAIL or "error" not in t.user_attrs or not earlier or p is None or p in held:
            continue
        study.add_trial(optuna.create_trial(state=TrialState.WAITING, params=t.params, distributions=t.distributions,
                                            user_attrs={"retry_of": t.number}, system_attrs=t.system_attrs))
        held.add(p)


def grid_state(study: optuna.Study, space: dict[str, list[Any]]) -> str:
    """``work`` (a queued trial or an untaken point), ``wait`` (only running trials hold the rest:
    they finish, or their workers died and they go stale), or ``done``."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return "work"
    held = {point(t, space): t.state for t in trials if _holds(t)}
    if len(set(held) - {None}) < grid_size(space):
        return "work"
    return "wait" if TrialState.RUNNING in held.values() else "done"


#: How long a trial waits for a lower-numbered trial that has not written its grid point yet.
DRAW_WAIT_S = 10.0


def duplicate_of(study: optuna.Study, trial: optuna.Trial, space: dict[str, list[Any]],
                 wait_s: float = DRAW_WAIT_S) -> int | None:
    """The lower-numbered live trial holding this trial's grid point (two workers raced), if any.

    A lower-numbered running trial that has not written its parameters yet (its worker is between
    creating the trial and drawing the point) is waited for, up to ``wait_s``: deciding before it
    has drawn let two workers train the same point (seen under load in CI)."""
    mine = point(trial, space)
    deadline = time.monotonic() + wait_s
    while True:
        earlier = [t for t in study.get_trials(deepcopy=False, states=TAKEN)
                   if t.number < trial.number and "duplicate_of" not in t.user_attrs]
        for t in earlier:
            if point(t, space) == mine:
                return t.number
        drawing = [t for t in earlier if t.state == TrialState.RUNNING and point(t, space) is None]
        if not drawing or time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def fail_reason(t: FrozenTrial) -> str | None:
    """Why a trial failed: its own error, or the worker that died under it."""
    if t.state != TrialState.FAIL:
        return None
    if "fail_reason" in t.user_attrs:
        return str(t.user_attrs["fail_reason"])
    if "worker" not in t.user_attrs:
        return "worker died (killed before stamping its trial); queued again"
    return f"worker {t.user_attrs['worker']} died mid-trial (no heartbeat); queued again"


def grid_coverage(study: optuna.Study, space: dict[str, list[Any]]) -> tuple[list[dict], list[dict]]:
    """(missing, duplicated) grid points among COMPLETE/PRUNED trials: the final check."""
    done: dict[tuple, int] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        key = tuple(t.params.get(k) for k in space)
        done[key] = done.get(key, 0) + 1
    points = list(itertools.product(*space.values()))
    missing = [dict(zip(space, p, strict=True)) for p in points if p not in done]
    dupes = [dict(zip(space, p, strict=True)) for p, n in done.items() if n > 1]
    return missing, dupes
