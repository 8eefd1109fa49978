"""Suites: expand a suite file into runs, run each through train(), survive interruptions."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lesionbench.bundled import (
    experiments_dir,  # noqa: F401 - where it used to live (tests import it here)
    find_experiment,
    find_suite,
    known,
)
from lesionbench.config import (
    RENAMED,
    ConfigError,
    DatasetName,
    ExperimentConfig,
    check_folder_name,
    format_validation_error,
    load_config,
    read_yaml,
)
from lesionbench.settings import settings
from lesionbench.studies.slurm import SlurmOptions


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
    cross_eval: dict[DatasetName, list[DatasetName]] = Field(
        default_factory=dict, description="After training, score every run trained on KEY on these datasets' "
                                          "test splits (images seen in training excluded): `lesionbench evaluate`")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return check_folder_name(v)  # it names the results folder under --out
    slurm: SlurmOptions | None = Field(None, description="sbatch options for `run --suite NAME --slurm`")


@dataclass
class PlannedRun:
    name: str
    config: ExperimentConfig
    evaluate_on: tuple[str, ...] = ()  # the suite's cross_eval targets for this run's dataset


def load_suite(name_or_path: str) -> SuiteConfig:
    """A suite by bundled name (``demo``, from any folder) or by the path of a suite file."""
    path = find_suite(name_or_path)
    if path is None:
        renamed = f"; '{name_or_path}' is now called '{RENAMED[name_or_path]}'" if name_or_path in RENAMED else ""
        raise ConfigError(f"unknown suite '{name_or_path}': no such file, and no bundled suite of that name "
                          f"(known: {', '.join(known('suites'))}){renamed}")
    try:
        return SuiteConfig.model_validate(read_yaml(path))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path), SuiteConfig)) from None


#: The shared recipe of ``run --models``: the fair matrix's (same data, budget, loss, optimiser for every model).
FAIR_BASE, FAIR_SEEDS = "_fair_base.yaml", [0, 1, 2]


def models_suite(models: list[str], datasets: list[str], seeds: list[int] | None = None) -> SuiteConfig:
    """``run --models a,b --dataset kvasir-seg``: a fair matrix suite on the fair base recipe, named after
    what it compares (the same name in results/, `status --suite` and `leaderboard --suite`)."""
    labels = [_slug(m.replace("smp:", "smp-").replace("/", "-")) for m in models]
    name = f"compare_{'+'.join(datasets)}_{'-vs-'.join(labels)}"
    if len(name) > 100:  # a folder name: keep it short, and unique through a hash of what it compares
        import hashlib

        name = f"{name[:80]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    data = {"name": name, "description": f"{', '.join(models)} on {', '.join(datasets)}: the fair recipe "
                                         f"({FAIR_BASE}), every model the same budget",
            "matrix": {"base": FAIR_BASE, "models": list(models), "datasets": list(datasets),
                       "seeds": list(seeds or FAIR_SEEDS)}}
    try:
        return SuiteConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "--models/--dataset", SuiteConfig)) from None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def expand_experiment(path: str | Path, overrides: list[str], quick: bool, synthetic: bool,
                      seeds: list[int] | None = None) -> list[PlannedRun]:
    path = find_experiment(path)
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    runs = []
    for seed in seeds or [None]:
        extra = [f"trainer.seed={seed}"] if seed is not None else []
        cfg = load_config(data, [*overrides, *extra], quick=quick, synthetic=synthetic, label=str(path))
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
        base_path = find_experiment(m.base)
        base = read_yaml(base_path)
        for dataset in m.datasets:
            for entry in m.models:
                model = MatrixModel(name=entry) if isinstance(entry, str) else entry
                label = model.label or _slug(model.name.replace("smp:", "smp-").replace("/", "-"))
                for seed in m.seeds:
                    data = {**base, "name": f"{dataset}_{label}", "model": {"name": model.name, "options": model.options},
                            "dataset": {**base.get("dataset", {}), "name": dataset},
                            "trainer": {**base.get("trainer", {}), "seed": seed}}
                    cfg = load_config(data, extra, quick=quick, synthetic=synthetic,
                                      label=f"{base_path} [{dataset} × {model.name}]")
                    runs.append(PlannedRun(f"{cfg.name}__s{seed}", cfg))
    unique: dict[str, PlannedRun] = {}
    for run in runs:
        unique.setdefault(run.name, run)
    return [replace(r, evaluate_on=tuple(suite.cross_eval.get(r.config.dataset.name, ()))) or r
            for r in unique.values()]


def suite_dir_name(name: str, quick: bool, synthetic: bool) -> str:
    """Smoke and synthetic runs live apart from real results, so they never overwrite them."""
    return name + ("+synthetic" if synthetic else "") + ("+quick" if quick else "")


def run_all(runs: list[PlannedRun], out_dir: Path, suite: str,
            on_update: Callable[[str, str, dict[str, Any]], None] | None = None,
            progress: bool = False, worker: str | None = None, run_logs: bool = False,
            offset: int = 0) -> dict[str, str]:
    """Run each planned run that this worker can claim; skip finished ones, resume interrupted ones, record failures.

    Any number of workers may share ``out_dir`` (work_through): this one returns when every run is settled.
    ``offset`` rotates the order so that workers started together begin on different runs.
    """
    from lesionbench.studies.datacheck import warn_if_data_changed

    notify = on_update or (lambda *a: None)
    started = time.time()

    def settled(run: PlannedRun) -> str | None:
        return _settled(run, out_dir / run.name, started)

    def work(run: PlannedRun) -> str:
        return _train_one(run, out_dir / run.name, suite, notify, progress, run_logs)

    def skipped(run: PlannedRun) -> None:
        warn_if_data_changed(run.name, out_dir / run.name, run.config)  # reused either way; one line if it differs
        notify(run.name, "skipped (finished)", {})

    return work_through(runs, out_dir, settled, work, notify, worker=worker, offset=offset, on_skipped=skipped)


def work_through(runs: list[PlannedRun], out_dir: Path, settled: Callable[[PlannedRun], str | None],
                 work: Callable[[PlannedRun], str], notify: Callable[[str, str, dict[str, Any]], None] | None = None,
                 worker: str | None = None, offset: int = 0, poll: float | None = None,
                 on_skipped: Callable[[PlannedRun], None] | None = None) -> dict[str, str]:
    """The worker loop of every way to run a suite: claim each run that is not ``settled`` and ``work`` it under
    its claim; a run held by another worker is revisited every ``poll`` seconds until it is settled, so a run its
    worker released (a cancelled SLURM task) or left silent (a SIGKILLed one; stale, or its process gone from this
    host) is taken here. Returns {run: "finished" | "skipped" | "failed"} once every run is settled; a DDP rank
    (LOCAL_RANK > 0) stops when its rank zero, which it follows, is gone.
    """
    from lesionbench.studies.claim import claim_timeout

    notify = notify or (lambda *a: None)
    poll = poll if poll is not None else min(5.0, claim_timeout() / 4)
    statuses: dict[str, str] = {}
    pending = runs[offset % len(runs):] + runs[:offset % len(runs)] if runs else []
    told: set[str] = set()
    acquire, parent = _claimer(worker), os.getppid()
    while pending and (settings().local_rank == 0 or os.getppid() == parent):
        held: list[PlannedRun] = []
        for run in pending:
            state = settled(run)
            if state is None:
                claim = acquire(out_dir / run.name)
                if claim is None:
                    held.append(run)
                    if run.name not in told:
                        told.add(run.name)
                        notify(run.name, "held by another worker", {})
                    continue
                with claim:
                    state = settled(run)
                    if state is None:
                        state = work(run)
                    elif hasattr(claim, "outcome"):  # settled by another worker since the first look
                        claim.outcome = f"{state} (settled meanwhile)"
            if state == "skipped" and on_skipped is not None:
                on_skipped(run)
            statuses.setdefault(run.name, state)
        pending = held
        if pending:
            time.sleep(poll)
    return statuses


def _claimer(worker: str | None) -> Callable[[Path], Any]:
    """How this process claims a run. A DDP rank that Lightning started (LOCAL_RANK > 0) re-runs this command: it
    claims nothing and trains exactly the run its rank zero (its parent) holds, while that parent lives. The ranks of
    a torchrun or multi-task srun launch claim nothing at all: that one job owns its results folder."""
    from lesionbench.studies.claim import acquire, read_claim

    env = settings()
    if env.torchelastic_run_id or env.slurm_ntasks > 1:
        return lambda run_dir: nullcontext()
    if env.local_rank == 0:
        return lambda run_dir: acquire(run_dir, worker)
    parent = os.getppid()

    def follow(run_dir: Path) -> Any:
        held = read_claim(run_dir)
        return nullcontext() if held and held.info and held.info.pid == parent else None

    return follow


def _settled(run: PlannedRun, run_dir: Path, since: float) -> str | None:
    """"skipped" when finished, "failed" when it failed since ``since``, else None (to be trained)."""
    from lesionbench.io import read_json
    from lesionbench.lifecycle import is_finished

    if is_finished(run_dir, run.config):
        return "skipped"
    try:
        failed = read_json(run_dir / "run.json").get("status") == "failed"
        return "failed" if failed and (run_dir / "run.json").stat().st_mtime >= since else None
    except (OSError, ValueError, AttributeError):
        return None


def _train_one(run: PlannedRun, run_dir: Path, suite: str, notify: Callable, progress: bool, run_logs: bool) -> str:
    from lesionbench.lifecycle import record_failure
    from lesionbench.studies.train import train

    notify(run.name, "running", {})
    start = time.perf_counter()
    try:
        with _output_to(run_dir / "logs" / "worker.log" if run_logs else None):
            if run_logs:
                print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {run.name}: training on {os.uname().nodename} "
                      f"(pid {os.getpid()})", flush=True)
            result = train(run.config, run_dir, suite=suite, progress=progress)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, scancel, a requeue (Lightning turns them into sys.exit(1))
        _mark_interrupted(run_dir)
        notify(run.name, "interrupted", {})
        raise
    except Exception as err:  # noqa: BLE001 - one failed run must not stop the suite
        record_failure(run_dir, run.config, suite, err)
        notify(run.name, "failed", {"error": str(err).splitlines()[0] if str(err) else type(err).__name__})
        return "failed"
    _visual_report(run_dir)
    notify(run.name, "finished", {"dice": result.metrics.per_image.get("dice") if result.metrics else None,
                                  "seconds": time.perf_counter() - start})
    cross_evaluate([run], run_dir.parent, notify)
    return "finished"


def _mark_interrupted(run_dir: Path) -> None:
    """run.json of a run stopped while it trained says so (not "running"): its claim is released as it unwinds and
    the next worker resumes it from last.ckpt. Rank zero writes; a folder too broken to read is left as it is."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from lesionbench.runfolder import RunFolderError, read_run_info, write_run_info

    if rank_zero_only.rank != 0:
        return
    try:
        info = read_run_info(run_dir)
        if info.status == "running":
            write_run_info(run_dir, info.model_copy(update={"status": "interrupted"}))
    except (RunFolderError, OSError):
        pass


def cross_evaluate(runs: list[PlannedRun], out_dir: Path, notify: Callable | None = None) -> dict[str, str]:
    """The suite's cross_eval: each finished run scored on its target datasets' test splits (leaked
    images excluded; a present result is skipped). A failed evaluation is reported, never fatal."""
    from lesionbench.studies.evaluate import evaluate_runs

    statuses: dict[str, str] = {}
    for run in runs:
        if run.evaluate_on:
            tell = partial(_tell, notify, run.name) if notify else None
            statuses.update(evaluate_runs([out_dir / run.name], {run.config.dataset.name: list(run.evaluate_on)},
                                          notify=tell))
    return statuses


def _tell(notify: Callable, run: str, key: str, status: str) -> None:
    notify(run, f"evaluate {key}: {status}", {})


@contextmanager
def _output_to(path: Path | None) -> Iterator[None]:
    """A worker's stdout/stderr (Lightning's, the data loaders') go into the run folder while it trains."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def leaderboard_due(statuses: dict[str, str], suite_dir: Path) -> bool:
    """True for the one worker that writes the suite's leaderboard: every run is settled (finished, skipped or
    failed), the board is missing or older than the newest result, and this worker made the marker of exactly this
    state of the results and the board (``.leaderboard-<hash>``, O_EXCL, studies/claim.mark) before any other. So
    workers finishing together write it once, a re-run of a finished suite does not write it again, and a writer
    that died before writing is replaced (its marker is taken over)."""
    import hashlib

    from lesionbench.studies.claim import mark

    if not statuses or any(s not in ("finished", "skipped", "failed") for s in statuses.values()):
        return False
    if not settings().is_rank_zero:  # a DDP rank that re-ran the command: its rank zero decides
        return False
    state = []
    for name, status in sorted(statuses.items()):
        path = suite_dir / name / ("run.json" if status == "failed" else "metrics.json")
        try:
            st = path.stat()
        except OSError:  # a DDP rank > 0 writes no metrics.json
            continue
        state.append((name, status == "failed", st.st_mtime_ns, st.st_size))  # the same for every worker
    if all(failed for _, failed, _, _ in state):
        return False
    newest = max(mtime for _, _, mtime, _ in state)

    def board() -> int | None:
        try:
            return (suite_dir / "leaderboard.md").stat().st_mtime_ns
        except OSError:
            return None

    seen = board()
    if seen is not None and seen >= newest:
        return False
    key = hashlib.sha256(repr((state, seen)).encode()).hexdigest()[:16]
    if not mark(suite_dir / f".leaderboard-{key}"):
        return False
    now = board()
    if now is not None and now >= newest:  # written meanwhile (by a winner whose marker this one replaced as it exited)
        return False
    for old in suite_dir.glob(".leaderboard-*"):  # markers of earlier states
        if old.name != f".leaderboard-{key}" and ".left-" not in old.name:
            old.unlink(missing_ok=True)
    return True


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
