"""Optuna studies around the one train() function: search space from the YAML's ``tune:`` section.

Trials run in ``results/<study>/trial-<number>/`` run folders; the study lives in an Optuna
storage (default ``sqlite:///results/<study>/study.db``), so re-running continues it and several
workers (processes or machines on one PostgreSQL) can share it. With the grid sampler every grid
point is trained once: a running trial beats Optuna's heartbeat, a dead worker's trial goes stale
and Optuna's retry callback queues it again, and a worker that lands on a point another already
took closes its trial unrun. A worker leaves when every point is done, or when the points left
are held by trials that outlived a grace period (live workers finish them).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lesionbench.bundled import find_experiment
from lesionbench.config import (
    ConfigError,
    ExperimentConfig,
    SearchParam,
    TuneConfig,
    apply_overrides,
    load_config,
    read_yaml,
)
from lesionbench.io import atomic_write_json, atomic_write_text, read_json
from lesionbench.studies.preflight import check_one
from lesionbench.studies.suite import suite_dir_name
from lesionbench.studies.tune_support import (
    GRACE_FACTOR,
    HEARTBEAT_S,
    EpochPruning,
    build_storage,
    duplicate_of,
    fail_dead,
    fail_reason,
    grid_coverage,
    grid_size,
    grid_space,
    grid_state,
    requeue_errors,
    save_plots,
    worker_id,
)


@dataclass
class TuneOptions:
    n_trials: int | None = None          # per worker; default: the grid size, else tune.n_trials, else 20
    timeout: float | None = None         # seconds; no new trial starts after it
    seed: int | None = None              # sampler seed (keep it equal on every worker of a grid study)
    storage: str | None = None           # any Optuna storage URL; default sqlite:///<study dir>/study.db
    study_name: str | None = None
    out: Path = Path("results")
    synthetic: bool = False
    quick: bool = False
    overrides: list[str] = field(default_factory=list)
    sampler: str | None = None           # grid | tpe | random (default: the YAML's tune.sampler)
    pruner: str | None = None            # none | median | hyperband (default: the YAML's tune.pruner)
    progress: bool = False
    heartbeat: int = HEARTBEAT_S         # seconds; a trial silent for GRACE_FACTOR heartbeats is a dead worker's


@dataclass
class TuneResult:
    study_name: str
    study_dir: Path
    storage: str
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    best_yaml: Path | None
    notes: list[str]
    metric: str = "val/dice"
    direction: str = "maximize"


class _Duplicate(RuntimeError):
    """This trial drew a grid point another worker already took: closed without training."""


def load_experiment(path: str | Path, opts: TuneOptions) -> tuple[dict[str, Any], ExperimentConfig, TuneConfig]:
    """The raw experiment (with --set applied) and its validated ``tune:`` section."""
    path = find_experiment(path)
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    data = apply_overrides(data, list(opts.overrides))
    cfg = load_config(data, quick=opts.quick, synthetic=opts.synthetic, label=str(path))
    if cfg.tune is None or not cfg.tune.params:
        raise ConfigError(f"{path}: no `tune.params` to search (see experiments/kvasir_resnet50_unet.yaml)")
    from lesionbench.training.task import selection_monitor

    monitor = selection_monitor(cfg, cfg.resolved_phases()[-1])[0]
    if cfg.tune.metric != monitor:  # train() keeps the best epoch of what checkpoints select on
        raise ConfigError(f"{path}: tune.metric {cfg.tune.metric!r} differs from early_stopping.monitor "
                          f"{monitor!r}; set both to one validation metric (default val/primary)")
    for p in cfg.tune.params:
        _check_param(p, data, str(path))
    return data, cfg, cfg.tune


def _check_param(p: SearchParam, data: dict[str, Any], source: str) -> None:
    if p.type == "categorical" and not p.choices:
        raise ConfigError(f"{source}: tune.params {p.name}: categorical needs `choices: [...]`")
    if p.type != "categorical" and (p.low is None or p.high is None or p.low > p.high):
        raise ConfigError(f"{source}: tune.params {p.name}: {p.type} needs `low` <= `high`")
    sample = p.choices[0] if p.type == "categorical" else (int(p.low) if p.type == "int" else p.low)
    try:
        load_config(data, values={p.name: sample}, label=source)
    except ConfigError as err:
        raise ConfigError(f"{source}: tune.params {p.name} is not a valid config key: {err}".splitlines()[0]) from None


def suggest(trial: optuna.Trial, p: SearchParam) -> Any:
    if p.type == "categorical":
        return trial.suggest_categorical(p.name, p.choices)
    if p.type == "int":
        return trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)


def make_sampler(name: str, params: list[SearchParam], seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "grid":
        return optuna.samplers.GridSampler(grid_space(params), seed=seed or 0)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    return optuna.pruners.NopPruner()


# ----------------------------------------------------------------------------- the study

def trial_config(data: dict[str, Any], params: dict[str, Any], source: str, quick: bool, synthetic: bool) -> ExperimentConfig:
    return load_config(data, values=params, quick=quick, synthetic=synthetic, label=source)


def run_study(experiment: str | Path, opts: TuneOptions,
              on_trial: Callable[[FrozenTrial], None] | None = None,
              pruner: optuna.pruners.BasePruner | None = None) -> TuneResult:
    """Run this worker's share of the study, then write best.yaml, trials table and plots."""
    from lesionbench.lifecycle import record_failure
    from lesionbench.studies.train import train
    from lesionbench.training.loggers import finish_wandb

    data, base, tcfg = load_experiment(experiment, opts)
    source = str(experiment)
    check_one(base)  # a problem every trial would meet: one line now, not a failed trial (and traceback) each
    sampler_name, pruner_name = opts.sampler or tcfg.sampler, opts.pruner or tcfg.pruner
    name = opts.study_name or suite_dir_name(f"{base.name}-tune", opts.quick, opts.synthetic)
    study_dir = Path(opts.out) / name
    study_dir.mkdir(parents=True, exist_ok=True)
    url = opts.storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    epochs = sum(p.epochs or 1 for p in base.resolved_phases())
    study = optuna.create_study(
        study_name=name, storage=build_storage(url, opts.heartbeat), direction=tcfg.direction, load_if_exists=True,
        sampler=make_sampler(sampler_name, tcfg.params, opts.seed),
        pruner=pruner or make_pruner(pruner_name, epochs),
    )
    study.set_user_attr("metric", tcfg.metric)  # what each trial's value is, for its table
    space = grid_space(tcfg.params, source) if sampler_name == "grid" else None
    n_trials = opts.n_trials or (grid_size(space) if space else tcfg.n_trials or 20)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_id())
        params = {p.name: suggest(trial, p) for p in tcfg.params}
        if space is not None and (dup := duplicate_of(study, trial, space)) is not None:
            trial.set_user_attr("duplicate_of", dup)
            trial.set_user_attr("fail_reason", f"duplicate: grid point already taken by trial {dup} (not trained)")
            raise _Duplicate(f"grid point already taken by trial {dup}")
        cfg = trial_config(data, params, source, opts.quick, opts.synthetic)
        run_dir = study_dir / f"trial-{trial.number}"
        trial.set_user_attr("run_dir", str(run_dir))
        callbacks = [EpochPruning(trial, tcfg.metric)] if pruner_name != "none" or pruner is not None else []
        try:
            result = train(cfg, run_dir, suite=name, callbacks=callbacks, progress=opts.progress)
        except optuna.TrialPruned as err:
            _mark_run(run_dir, "pruned", str(err))
            raise
        except Exception as err:
            reason = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            trial.set_user_attr("error", reason)
            trial.set_user_attr("fail_reason", reason)
            record_failure(run_dir, cfg, name, err)
            raise
        finally:
            finish_wandb()
        if result.best_val is None:
            trial.set_user_attr("fail_reason", f"no {tcfg.metric} was logged (no validation data?)")
            raise RuntimeError(f"no {tcfg.metric} was logged")
        trial.set_user_attr("test_dice", result.metrics.per_image.get("dice") if result.metrics else None)
        return float(result.best_val)

    start, done, grace = time.time(), 0, opts.heartbeat * GRACE_FACTOR
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if space is not None:
        requeue_errors(study, space, start)
    waited_since: float | None = None
    while done < n_trials and not (opts.timeout and time.time() - start > opts.timeout):
        if space is not None:
            fail_dead(study, grace)
            state = grid_state(study, space)
            if state == "wait":  # only running trials hold the rest: they finish, or go stale within the grace
                waited_since = waited_since or time.time()
                if time.time() - waited_since > grace + opts.heartbeat:
                    break  # they outlived the grace period: live workers are running them
                time.sleep(min(opts.heartbeat, 5))
                continue
            waited_since = None
            if state == "done":
                break
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False)
        done += 1
        if on_trial is not None:
            on_trial(study.get_trials(deepcopy=False)[-1])
    flags = " ".join(f for f, on in (("--synthetic", opts.synthetic), ("--quick", opts.quick)) if on)
    return finish_study(study, data, source, study_dir, url, space, flags)


def _mark_run(run_dir: Path, status: str, reason: str) -> None:
    try:
        info = read_json(run_dir / "run.json")
    except (OSError, ValueError):
        return
    info.update(status=status, error=reason)
    atomic_write_json(run_dir / "run.json", info)


def finish_study(study: optuna.Study, data: dict[str, Any], source: str, study_dir: Path, url: str,
                 space: dict[str, list[Any]] | None, flags: str = "") -> TuneResult:
    """best.yaml, the trials table (leaderboard), history/importance plots, grid coverage notes."""
    from lesionbench.reporting.leaderboard import write_trials_table

    all_trials = study.get_trials(deepcopy=False)
    trials = [{"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
               "test": t.user_attrs.get("test_dice"), "reason": fail_reason(t)}
              for t in all_trials if "duplicate_of" not in t.user_attrs]
    notes: list[str] = []
    if space is not None:
        missing, dupes = grid_coverage(study, space)
        notes += [f"grid point not done yet: {m}" for m in missing]
        notes += [f"grid point trained more than once: {d}" for d in dupes]
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    best, best_yaml = None, None
    if complete:
        bt = study.best_trial
        best = {"number": bt.number, "value": bt.value, "params": bt.params, "run_dir": bt.user_attrs.get("run_dir")}
        cfg = trial_config(data, bt.params, source, quick=False, synthetic=False)
        header = (f"# Best trial {bt.number} of study '{study.study_name}': {study.user_attrs.get('metric', 'val/dice')}="
                  f"{bt.value:.4f}, params {bt.params}.\n"
                  f"# Its run folder (the config it actually ran, e.g. with --quick/--synthetic): {best['run_dir']}\n"
                  f"# Run it: lesionbench run {study_dir / 'best.yaml'} {flags}".rstrip() + "\n")
        best_yaml = atomic_write_text(study_dir / "best.yaml", header + cfg.to_yaml())
    metric, direction = study.user_attrs.get("metric", "val/dice"), study.direction.name.lower()
    atomic_write_json(study_dir / "study.json", {"study": study.study_name, "storage": url, "best": best,
                                                 "metric": metric, "direction": direction, "trials": trials,
                                                 "notes": notes})
    write_trials_table(study_dir, trials, metric, direction)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        notes += save_plots(study, study_dir)
    return TuneResult(study.study_name, study_dir, url, trials, best, best_yaml, notes, metric, direction)
