"""`run --slurm` on a real single-node SLURM cluster (slurmctld + slurmd + munged on localhost, CPUs=2)."""

from __future__ import annotations

import csv
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scaleout_suite import assert_each_run_once, env_for, lesionbench, tiny_suite
from slurm_cluster import Cluster, missing_binaries, start
from typer.testing import CliRunner

from lesionbench.cli import app
from lesionbench.studies.claim import history, read_claim
from lesionbench.studies.slurm import SlurmOptions, array_size, merge, render_script


@pytest.fixture(scope="session")
def slurm() -> Iterator[Cluster]:
    missing = missing_binaries()
    if missing:
        pytest.skip(f"SLURM not installed ({', '.join(missing)} missing): `make slurm` installs slurm-wlm and munge")
    if os.geteuid() != 0:
        pytest.skip("the test cluster's slurmd must run as root to start jobs")
    cluster = start(cpus=2)
    yield cluster
    cluster.stop()


def _submit(cluster: Cluster, suite: Path, out: Path, env: dict, tmp_path: Path, *extra: str) -> str:
    done = subprocess.run([lesionbench(), "run", "--suite", str(suite), "--synthetic", "--out", str(out),
                           "--slurm", "--cpus-per-task", "1", *extra], env={**env, **cluster.env}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "squeue -j" in done.stdout and "lesionbench status" in done.stdout, done.stdout
    return done.stdout.split("submitted job array ")[1].split()[0]


def _wait_gone(cluster: Cluster, job: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not cluster.run("squeue", "-h", "-j", job, check=False).strip():
            return
        time.sleep(1)
    raise AssertionError(f"job {job} still queued:\n{cluster.run('squeue', check=False)}\n{cluster.log()}")


@pytest.mark.timeout(30)
def test_sbatch_script_requeues_near_the_limit_and_takes_cli_over_yaml() -> None:
    opts = merge(SlurmOptions(partition="gpu", time="01:00:00", extra=["--qos=long"]), partition="a100",
                 gpus_per_task=4, parallelism=2, extra=["#SBATCH --account=lab"])
    script = render_script(opts, ["python", "-m", "lesionbench.cli", "run", "--suite", "all"], 5, Path("/r/all"),
                           Path("/w"))
    assert "#SBATCH --array=0-4\n" in render_script(SlurmOptions(), ["lesionbench"], 5, Path("/r/all"), Path("/w"))
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --partition=a100", "#SBATCH --time=01:00:00", "#SBATCH --requeue",
                 "#SBATCH --signal=B:USR1@120", "#SBATCH --gpus-per-task=4", "#SBATCH --qos=long",
                 "#SBATCH --account=lab", "trap requeue USR1", '--worker-index "$SLURM_ARRAY_TASK_ID" &'):
        assert line in script, line
    assert "--exit-when-idle" not in script  # a worker returns once every run is settled, not when it finds none free
    with pytest.raises(ValueError):
        SlurmOptions.model_validate({"partiton": "x"})


@pytest.mark.timeout(30)
def test_array_is_sized_to_the_runs_left() -> None:
    assert [array_size(SlurmOptions(), n) for n in (1, 3, 30)] == [1, 3, 30]
    assert [array_size(SlurmOptions(parallelism=2), n) for n in (1, 3, 30)] == [1, 2, 2]
    assert [array_size(SlurmOptions(parallelism=8, tasks=4), n) for n in (1, 3, 30)] == [1, 3, 4]
    assert "#SBATCH --array=0-0%2\n" in render_script(SlurmOptions(parallelism=2), ["lb"], 1, Path("/r/s"), Path("/w"))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_resubmission_asks_for_the_runs_left_and_submits_nothing_when_none_are(synthetic_env: Path, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Two of three runs finished: the array has one task ("1 task for 1 of 3 runs left"); all three finished:
    nothing is submitted, one line says so, exit 0. (sbatch is a stand-in that records its calls; the real-cluster
    check is the end of the cancelled-task test below.)"""
    from runs import fake_run

    from lesionbench.studies.suite import expand_suite, load_suite

    bin_dir, calls = tmp_path / "bin", tmp_path / "sbatch-calls"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho 4242\n')
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    suite, out = tiny_suite(tmp_path, seeds=3), tmp_path / "results"
    runs = expand_suite(load_suite(str(suite)), synthetic=True)
    suite_dir = out / "tiny+synthetic"
    for run in runs[:2]:
        fake_run(suite_dir / run.name, run.config)
    args = ["run", "--suite", str(suite), "--synthetic", "--out", str(out), "--slurm", "--array-parallelism", "2"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "submitted job array 4242 (1 task for 1 of 3 runs left)" in done.output, done.output
    assert "#SBATCH --array=0-0%2\n" in (suite_dir / "slurm" / "submit.sh").read_text()
    fake_run(suite_dir / runs[2].name, runs[2].config)
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert f"--slurm: all 3 runs in {suite_dir} are finished; nothing submitted" in " ".join(done.output.split())
    assert len(calls.read_text().splitlines()) == 1  # the first submission only


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_job_array_trains_each_run_once_and_a_requeued_task_resumes(slurm: Cluster, synthetic_env: Path,
                                                                     tmp_path: Path) -> None:
    """Two runs (3 epochs each, so not --quick), two array tasks. One task gets USR1 on its batch shell mid-run (what
    --signal=B:USR1@120 sends near the time limit): it requeues itself, its worker stops (SIGTERM) and releases the
    claim, and a free task (the other one, or the requeued one with the same worker id) finishes the run from
    last.ckpt, no epoch lost. Every run finishes once; the leaderboard lists each once."""
    epochs = 6  # long enough that the signal lands while the run trains
    suite, out = tiny_suite(tmp_path, seeds=2, epochs=epochs), tmp_path / "results"
    job = _submit(slurm, suite, out, env_for(synthetic_env, tmp_path), tmp_path, "--array-parallelism", "2")
    suite_dir = out / "tiny+synthetic"
    deadline, run = time.time() + 180, None
    while run is None and time.time() < deadline:
        run = next((p.parent.parent.parent for p in suite_dir.glob("*/checkpoints/*/last.ckpt")
                    if read_claim(p.parent.parent.parent, 600)
                    and not (p.parent.parent.parent / "metrics.json").exists()), None)  # mid-training
        time.sleep(0.2)
    assert run is not None, slurm.log()
    worker = read_claim(run, 600).info.worker
    task = worker.removeprefix(f"slurm-{job}_")
    slurm.run("scancel", "--signal=USR1", "--batch", f"{job}_{task}")
    deadline = time.time() + 60  # SLURM holds a requeued job for 121 s (BeginTime): release it for the test
    while "BeginTime" not in slurm.run("squeue", "-h", "-j", f"{job}_{task}", "-o", "%r", check=False):
        assert time.time() < deadline, slurm.run("squeue", check=False) + slurm.log()
        time.sleep(0.3)
    slurm.run("scontrol", "update", f"JobId={job}_{task}", "StartTime=now")
    _wait_gone(slurm, job)

    assert_each_run_once(suite_dir, 2)
    assert sorted(p.name for p in (suite_dir / "slurm").glob("*.out")) == [f"{job}_0.out", f"{job}_1.out"]
    events = history(run)
    assert events[0]["event"] == "claim" and events[-1]["event"] == "release finished", events
    assert {e["worker"] for e in events} <= {f"slurm-{job}_0", f"slurm-{job}_1"}, events
    assert len({e["pid"] for e in events}) == 2, events  # stopped once, resumed once (by whichever task was free)
    with open(run / "logs" / "metrics.csv") as fh:
        logged = [int(float(r["epoch"])) for r in csv.DictReader(fh) if r.get("val/dice")]
    assert set(logged) == set(range(epochs)), logged  # an epoch cut short before its last.ckpt is trained again
    log = (suite_dir / "slurm" / f"{job}_{task}.out").read_text()
    # the task requeued itself; whether its second start printed before the free task finished the suite
    # (and it exited idle) is SLURM's scheduling, seen to vary under load: the run's history above is the proof
    assert "time limit near: requeueing" in log and "DUE TO JOB REQUEUE" in log, log


def _held_by_the_other(suite_dir: Path, job: str) -> tuple[Path, str] | None:
    """A run that one task has passed as "held by another worker" and the other task still trains: (run, holder)."""
    for log in sorted((suite_dir / "slurm").glob(f"{job}_*.out")):
        passer = f"slurm-{log.stem}"
        for line in log.read_text().splitlines():
            if line.startswith(f"[{passer}] ") and line.endswith(": held by another worker"):
                run = suite_dir / line.split("] ", 1)[1].rsplit(":", 1)[0]
                claim = read_claim(run, 600)
                if claim and claim.info and claim.info.worker != passer and not (run / "metrics.json").exists():
                    return run, claim.info.worker
    return None


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_a_cancelled_task_leaves_no_run_behind_and_resubmission_submits_nothing(slurm: Cluster, synthetic_env: Path,
                                                                                tmp_path: Path) -> None:
    """Three runs, two array tasks. Once a task has passed a run as held by the other task, that other task is
    cancelled (scancel) while it trains the run: it releases its claim and says the run was interrupted; the
    surviving task comes back to the run (it does not exit while a run is unsettled), finishes every run and writes
    the leaderboard, once. Submitting the finished suite again submits nothing and says so (exit 0)."""
    suite, out = tiny_suite(tmp_path, seeds=3, epochs=6), tmp_path / "results"
    env = env_for(synthetic_env, tmp_path)
    job = _submit(slurm, suite, out, env, tmp_path, "--array-parallelism", "2")
    suite_dir = out / "tiny+synthetic"
    deadline, found = time.time() + 240, None
    while found is None and time.time() < deadline:
        found = _held_by_the_other(suite_dir, job)
        time.sleep(0.2)
    assert found is not None, slurm.run("squeue", check=False) + slurm.log()
    run, victim = found
    slurm.run("scancel", victim.removeprefix("slurm-"))
    _wait_gone(slurm, job)

    assert_each_run_once(suite_dir, 3)
    events = history(run)
    survivor = next(w for w in (f"slurm-{job}_0", f"slurm-{job}_1") if w != victim)
    released = [e for e in events if e["event"].startswith("release ") and e["worker"] == victim]
    stopped = ("release SIGTERMException", "release SystemExit", "release KeyboardInterrupt")  # Lightning's, or ours
    assert len(released) == 1 and released[0]["event"] in stopped, events
    assert events[-1]["event"] == "release finished" and events[-1]["worker"] == survivor, events
    logs = {p.stem: p.read_text() for p in (suite_dir / "slurm").glob("*.out")}
    assert f"[{victim}] {run.name}: interrupted" in logs[victim.removeprefix("slurm-")], logs
    assert sum(log.count("suite complete: leaderboard") for log in logs.values()) == 1, logs
    assert "suite complete: leaderboard" in logs[survivor.removeprefix("slurm-")], logs

    done = subprocess.run([lesionbench(), "run", "--suite", str(suite), "--synthetic", "--out", str(out), "--slurm",
                           "--array-parallelism", "2"], env={**env, **slurm.env}, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all 3 runs in" in done.stdout and "nothing submitted" in done.stdout, done.stdout
    assert "submitted job array" not in done.stdout, done.stdout
    assert not slurm.run("squeue", "-h", check=False).strip()
