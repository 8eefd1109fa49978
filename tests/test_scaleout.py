"""Workers sharing one results folder: atomic claims, heartbeat takeover, concurrent `run --suite`, --workers, status."""

from __future__ import annotations

import csv
import multiprocessing as mp
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from runs import fake_run, write_failed_run
from scaleout_suite import assert_each_run_once, env_for, lesionbench, start, tiny_suite
from typer.testing import CliRunner

from lesionbench.cli import app
from lesionbench.studies.claim import CLAIM, acquire, history, read_claim


def _race(run_dir: str, barrier, results) -> None:
    barrier.wait()
    claim = acquire(Path(run_dir), timeout=5)
    results.put(os.getpid() if claim else None)
    if claim:
        time.sleep(1.0)  # hold it while the others try
        claim.release("finished")


@pytest.mark.parametrize("stale", [False, True], ids=["fresh-folder", "stale-claim"])
def test_exactly_one_of_eight_racing_processes_wins(tmp_path: Path, stale: bool) -> None:
    """Eight processes claim at once, on a free folder and on a folder with a dead worker's stale claim."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if stale:
        (run_dir / CLAIM).write_text('{"worker": "dead", "host": "h", "pid": 1, "token": "t", "started": "x"}')
        os.utime(run_dir / CLAIM, (time.time() - 60, time.time() - 60))
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(run_dir), barrier, results)) for _ in range(8)]
    for p in procs:
        p.start()
    winners = [w for w in (results.get(timeout=30) for _ in procs) if w]
    for p in procs:
        p.join()
    assert len(winners) == 1, winners
    events = [e["event"] for e in history(run_dir)]
    # the stale claim may be displaced by the one taking over, or (moved aside) won by a plain claim: one winner
    assert events in (["claim", "release finished"], ["takeover", "release finished"]), events
    assert not (run_dir / CLAIM).exists() and not list(run_dir.glob(".*")), list(run_dir.iterdir())


def test_heartbeat_keeps_a_live_claim_and_only_a_silent_one_goes_stale(tmp_path: Path) -> None:
    claim = acquire(tmp_path, worker="a", timeout=1.0)
    time.sleep(2.5)  # well past the timeout: the heartbeat (every 0.25 s) keeps it fresh
    assert acquire(tmp_path, worker="b", timeout=1.0) is None
    held = read_claim(tmp_path, timeout=1.0)
    assert held and held.info.worker == "a" and not held.stale
    claim._stop.set()  # a hung worker: heartbeat stops, the claim goes stale
    claim._thread.join()
    time.sleep(1.5)
    successor = acquire(tmp_path, worker="b", timeout=1.0)
    assert successor is not None and read_claim(tmp_path, 1.0).info.worker == "b"
    claim.release("finished")  # a late release never removes the successor's claim
    assert read_claim(tmp_path, 1.0).info.worker == "b"
    successor.release("finished")


@pytest.mark.slow
def test_three_run_processes_started_together_train_each_run_once(synthetic_env: Path, tmp_path: Path) -> None:
    suite, out = tiny_suite(tmp_path), tmp_path / "results"
    env = env_for(synthetic_env, tmp_path)
    procs = [start(["run", "--suite", str(suite), "--synthetic", "--quick", "--out", str(out)], env, tmp_path)
             for _ in range(3)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    suite_dir = out / "tiny+synthetic+quick"
    assert_each_run_once(suite_dir, 3)
    for run in suite_dir.glob("*__s*"):
        assert [e["event"] for e in history(run)] == ["claim", "release finished"]
        with open(run / "logs" / "metrics.csv") as fh:  # one training's epochs, not two interleaved
            assert sum(1 for r in csv.DictReader(fh) if r.get("val/dice")) == 1, run
    assert sum("(written)" in o for o in outputs) == 1, outputs  # the leaderboard, once, by the last finisher


def test_claim_of_a_dead_process_on_this_host_is_taken_at_once(tmp_path: Path) -> None:
    pid = os.fork()
    if pid == 0:  # a worker that dies holding its claim (no release, no heartbeat)
        acquire(tmp_path, worker="dead", timeout=600)
        os._exit(0)
    os.waitpid(pid, 0)
    claim = acquire(tmp_path, worker="next", timeout=600)
    assert claim is not None
    takeover = history(tmp_path)[-1]
    assert takeover["event"] == "takeover" and takeover["reason"] == "process gone" and takeover["previous"]["pid"] == pid
    claim.release("finished")


def _on_other_host(args: list[str], env: dict, cwd: Path) -> subprocess.Popen:
    """The command under another host name (a private UTS namespace): its claim can only go stale by heartbeat."""
    if subprocess.run(["unshare", "-u", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare -u` (root) to run a worker under another host name")
    return subprocess.Popen(["unshare", "-u", "sh", "-c", 'hostname lb-other-host && exec "$0" "$@"', lesionbench(),
                             *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


@pytest.mark.slow
def test_sigkilled_worker_claim_is_taken_over_after_the_heartbeat_timeout(synthetic_env: Path, tmp_path: Path) -> None:
    """Two workers at once, one on "another host"; it is SIGKILLed holding a claim; the other resumes that run once
    the claim's heartbeat is older than the timeout (4 s here)."""
    suite, out = tiny_suite(tmp_path, seeds=2, epochs=3), tmp_path / "results"
    env = env_for(synthetic_env, tmp_path, LESIONBENCH_CLAIM_TIMEOUT="4")
    args = ["run", "--suite", str(suite), "--synthetic", "--quick", "--out", str(out)]
    suite_dir = out / "tiny+synthetic+quick"
    victim, survivor = _on_other_host(args, env, tmp_path), start(args, env, tmp_path)

    def victim_claim() -> Path | None:
        for path in suite_dir.glob(f"*/{CLAIM}"):
            held = read_claim(path.parent, 4)
            if held and held.info and held.info.pid == victim.pid:
                return path.parent
        return None

    deadline = time.time() + 120
    while victim_claim() is None and time.time() < deadline:
        assert victim.poll() is None, victim.stdout.read()
        time.sleep(0.1)
    taken = victim_claim()
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    output, _ = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, output
    assert_each_run_once(suite_dir, 2)
    events = history(taken)
    takeover = next(e for e in events if e["event"] == "takeover")
    assert takeover["previous"]["pid"] == victim.pid and takeover["pid"] == survivor.pid
    assert takeover["previous"]["host"] == "lb-other-host" and takeover["reason"] == "stale heartbeat", takeover
    assert takeover["heartbeat_age_s"] >= 4, takeover
    assert [e["event"] for e in events] == ["claim", "takeover", "release finished"]


@pytest.mark.slow
def test_workers_split_the_cores_log_per_run_and_status_reads_the_folders(synthetic_env: Path, tmp_path: Path) -> None:
    suite, out = tiny_suite(tmp_path, seeds=2), tmp_path / "results"
    env = env_for(synthetic_env, tmp_path)
    env.pop("OMP_NUM_THREADS")
    done = subprocess.run([lesionbench(), "run", "--suite", str(suite), "--synthetic", "--quick", "--out", str(out),
                           "--workers", "2"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    suite_dir = out / "tiny+synthetic+quick"
    assert_each_run_once(suite_dir, 2)
    logs = [(suite_dir / "workers" / f"worker-{k}.log").read_text() for k in range(2)]
    cores = max(1, len(os.sched_getaffinity(0)) // 2)
    assert all(f"started: {cores} CPU threads" in log for log in logs), logs
    workers = {e["worker"] for run in suite_dir.glob("*__s*") for e in history(run)}
    assert workers and all(w.startswith(("w0-", "w1-")) for w in workers), workers
    for run in suite_dir.glob("*__s*"):
        assert (run / "logs" / "worker.log").stat().st_size > 0
    status = CliRunner().invoke(app, ["status", "--suite", str(suite), "--synthetic", "--quick", "--out", str(out)])
    assert status.exit_code == 0, status.output  # not a terminal: one tab-separated line per run
    lines = [line.split("\t") for line in status.output.splitlines() if "\t" in line]
    assert sorted(cols[1] for cols in lines) == ["finished"] * 2, status.output
    assert "2 finished" in status.output


def test_status_reads_every_state_from_the_run_folders(tmp_path: Path) -> None:
    from lesionbench.config import ExperimentConfig
    from lesionbench.studies.status import suite_status, summary
    from lesionbench.studies.suite import PlannedRun

    cfg = ExperimentConfig.model_validate({"name": "t", "dataset": {"name": "synthetic"}, "model": {"name": "unet"}})
    runs = [PlannedRun(name, cfg) for name in ("done", "live", "silent", "broken", "todo")]
    fake_run(tmp_path / "done", cfg)  # a finished run folder, per-image dice 0.5 (tests/runs.py)
    live = acquire(tmp_path / "live", worker="w7", timeout=30)
    acquire(tmp_path / "silent", worker="gone", timeout=30)._stop.set()
    os.utime(tmp_path / "silent" / CLAIM, (time.time() - 60, time.time() - 60))
    write_failed_run(tmp_path / "broken", experiment="t", seed=0, error="OSError: disk full")
    states = {s.run: s for s in suite_status(runs, tmp_path, timeout=30)}
    assert {k: s.state for k, s in states.items()} == {"done": "finished", "live": "running", "silent": "stale",
                                                       "broken": "failed", "todo": "waiting"}
    assert states["live"].worker == "w7" and states["live"].host and "0.5000" in states["done"].detail
    assert "disk full" in states["broken"].detail
    assert summary(list(states.values())) == "1 finished, 1 running, 1 stale, 1 failed, 1 waiting"
    live.release("finished")
