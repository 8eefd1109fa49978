"""Pieces of a study beside its loop: storage, pruning callback, plots, config keys, grid bookkeeping."""

from __future__ import annotations

import itertools
import os
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from optuna_integration import PyTorchLightningPruningCallback

from lesionbench.config import ConfigError, SearchParam
from lesionbench.errors import LesionBenchError

#: Seconds between a running trial's heartbeats, and after which a silent trial counts as dead
#: (its worker machine crashed): another worker then fails it and runs its grid point again.
HEARTBEAT_S, GRACE_S = 30, 120
#: Trial states that hold a grid point (a FAIL frees it for a retry).
TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def build_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: RDB (sqlite/postgresql/mysql) with heartbeats, or journal:///file."""
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if not url.split(":", 1)[0].split("+")[0] in ("sqlite", "postgresql", "postgres", "mysql"):
        raise ConfigError(f"--storage {url!r}: expected sqlite:///path.db, postgresql://user@host/db, "
                          "mysql://... or journal:///path.log")
    url = _postgres_driver(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 120}  # several workers on one file wait for the lock
    last: Exception | None = None
    for attempt in range(6):  # workers starting together race to create the schema: retry
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_S)
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
        self.step = 0

    def on_validation_end(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        if trainer.sanity_checking or self.is_ddp_backend:
            return super().on_validation_end(trainer, pl_module) if self.is_ddp_backend else None
        score = trainer.callback_metrics.get(self.monitor)
        if score is None:
            return
        step, self.step = self.step, self.step + 1
        self._trial.report(float(score), step=step)
        if self._trial.should_prune():
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


# ----------------------------------------------------------------------------- grid bookkeeping

def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def _grid_id(t: FrozenTrial, space: dict[str, list[Any]]) -> int | None:
    return t.system_attrs.get("grid_id") if t.system_attrs.get("search_space") == space else None


#: A live worker stamps its trial within milliseconds of asking for it; an unstamped RUNNING
#: trial older than this was asked for by a worker killed in between.
ORPHAN_GRACE_S = 3.0


def _orphan(t: FrozenTrial) -> bool:
    start = t.datetime_start
    return "worker" not in t.user_attrs and start is not None and \
        (datetime.now(start.tzinfo) - start).total_seconds() > ORPHAN_GRACE_S


def unstamped_running(study: optuna.Study) -> bool:
    """Whether a RUNNING trial carries no worker stamp yet (just asked for, or orphaned)."""
    return any("worker" not in t.user_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def reap_dead(study: optuna.Study) -> None:
    """Fail RUNNING trials whose worker process on this host is gone (killed, crashed), and
    trials no worker ever stamped (killed between asking for the trial and stamping it)."""
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = str(t.user_attrs.get("worker", ""))
        name, _, pid = who.rpartition(":")
        dead = name == host and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid))
        if dead or _orphan(t):
            who = who or "unknown (killed before stamping its trial)"
            try:
                study._storage.set_trial_user_attr(t._trial_id, "fail_reason", f"worker {who} died mid-trial")
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
                pass  # another worker reaped it first


def requeue_failed(study: optuna.Study, space: dict[str, list[Any]], started: float) -> None:
    """Queue failed grid points again, once: dead workers' now, training errors on the next invocation."""
    trials = study.get_trials(deepcopy=False)
    taken = {_grid_id(t, space) for t in trials if t.state in TAKEN}
    for t in trials:
        gid = _grid_id(t, space)
        if t.state != TrialState.FAIL or gid is None or gid in taken or "duplicate_of" in t.user_attrs:
            continue
        earlier = t.datetime_start is not None and t.datetime_start.timestamp() < started
        if "error" in t.user_attrs and not earlier:
            continue  # failed by its own error in this invocation: re-running now would fail again
        study.add_trial(optuna.create_trial(
            state=TrialState.WAITING, params=t.params, distributions=t.distributions,
            user_attrs={"retry_of": t.number},
            system_attrs={"grid_id": gid, "search_space": space, "failed_trial": t.number},
        ))
        taken.add(gid)


def grid_has_work(study: optuna.Study, space: dict[str, list[Any]]) -> bool:
    """A queued retry, or a grid point no trial has drawn yet."""
    trials = study.get_trials(deepcopy=False)
    started = {_grid_id(t, space) for t in trials} - {None}
    return any(t.state == TrialState.WAITING for t in trials) or len(started) < grid_size(space)


def duplicate_of(study: optuna.Study, trial: optuna.Trial, space: dict[str, list[Any]]) -> int | None:
    """The lower-numbered live trial holding this trial's grid point (two workers raced), if any."""
    gid = study._storage.get_trial_system_attrs(trial._trial_id).get("grid_id")
    for t in study.get_trials(deepcopy=False, states=TAKEN):
        if t.number < trial.number and _grid_id(t, space) == gid:
            return t.number
    return None


def grid_coverage(study: optuna.Study, space: dict[str, list[Any]]) -> tuple[list[dict], list[dict]]:
    """(missing, duplicated) grid points among COMPLETE/PRUNED trials: the final check."""
    done: dict[tuple, int] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        key = tuple(t.params.get(k) for k in space)
        done[key] = done.get(key, 0) + 1
    points = list(itertools.product(*space.values()))
    missing = [dict(zip(space, p)) for p in points if p not in done]
    dupes = [dict(zip(space, p)) for p, n in done.items() if n > 1]
    return missing, dupes
