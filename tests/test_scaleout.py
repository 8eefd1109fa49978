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


@pytest.mark.slow  # starts eight processes
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


def _claim_then_hang(run_dir: str, worker: str, timeout: float, claimed, hang) -> None:
    """A worker that claims ``run_dir``, beats while it runs, then hangs (SIGSTOP: every thread,
    the heartbeat's included, stops; the pid lives). When continued, it releases late."""
    claim = acquire(Path(run_dir), worker=worker, timeout=timeout)
    claimed.set()
    hang.wait()
    os.kill(os.getpid(), signal.SIGSTOP)
    claim.release("finished")


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def hung_worker(run_dir: Path, worker: str, timeout: float, hang_now: bool = True):
    """(process, hang event): a real worker process holding the claim, hung at once or on ``hang.set()``."""
    ctx = mp.get_context("fork")
    claimed, hang = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_claim_then_hang, args=(str(run_dir), worker, timeout, claimed, hang))
    proc.start()
    assert claimed.wait(30), "the worker never claimed"
    if hang_now:
        hang.set()
        wait_until_stopped(proc)
    return proc, hang


def wait_until_stopped(proc) -> None:
    deadline = time.monotonic() + 30
    while not _stopped(proc.pid):
        assert time.monotonic() < deadline, "the worker never stopped"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_heartbeat_keeps_a_live_claim_and_only_a_silent_one_goes_stale(tmp_path: Path) -> None:
    worker, hang = hung_worker(tmp_path, "a", timeout=1.0, hang_now=False)
    try:
        time.sleep(2.5)  # well past the timeout: the heartbeat (every 0.25 s) keeps it fresh
        assert acquire(tmp_path, worker="b", timeout=1.0) is None
        held = read_claim(tmp_path, timeout=1.0)
        assert held and held.info.worker == "a" and not held.stale
        hang.set()  # a hung worker: its heartbeat stops, its process lives, the claim goes stale
        wait_until_stopped(worker)
        time.sleep(1.5)
        successor = acquire(tmp_path, worker="b", timeout=1.0)
        assert successor is not None and read_claim(tmp_path, 1.0).info.worker == "b"
        os.kill(worker.pid, signal.SIGCONT)  # it wakes and releases late ...
        worker.join(30)
        assert worker.exitcode == 0
        assert read_claim(tmp_path, 1.0).info.worker == "b"  # ... which never removes the successor's claim
        successor.release("finished")
    finally:
        worker.kill()
        worker.join()


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


@pytest.mark.timeout(60)
def test_claim_of_a_zombie_process_is_taken_at_once(tmp_path: Path) -> None:
    """A worker that died but is not yet reaped by its parent (a zombie, e.g. under `run --workers`) still answers
    kill(pid, 0): it is gone all the same, and its run must not wait for the heartbeat timeout."""
    pid = os.fork()
    if pid == 0:
        acquire(tmp_path, worker="dead", timeout=600)
        os._exit(0)
    try:
        deadline = time.time() + 20
        while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.time() < deadline
            time.sleep(0.05)
        claim = acquire(tmp_path, worker="next", timeout=600)
        assert claim is not None
        takeover = history(tmp_path)[-1]
        assert takeover["event"] == "takeover" and takeover["reason"] == "process gone", takeover
        claim.release("finished")
    finally:
        os.waitpid(pid, 0)


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


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_status_reads_every_state_from_the_run_folders(tmp_path: Path) -> None:
    from lesionbench.config import ExperimentConfig
    from lesionbench.studies.status import suite_status, summary
    from lesionbench.studies.suite import PlannedRun

    cfg = ExperimentConfig.model_validate({"name": "t", "dataset": {"name": "synthetic"}, "model": {"name": "unet"}})
    runs = [PlannedRun(name, cfg) for name in ("done", "live", "silent", "broken", "todo")]
    fake_run(tmp_path / "done", cfg)  # a finished run folder, per-image dice 0.5 (tests/runs.py)
    live = acquire(tmp_path / "live", worker="w7", timeout=30)
    silent, _ = hung_worker(tmp_path / "silent", "gone", timeout=30)  # a hung worker: alive, not beating
    os.utime(tmp_path / "silent" / CLAIM, (time.time() - 60, time.time() - 60))
    write_failed_run(tmp_path / "broken", experiment="t", seed=0, error="OSError: disk full")
    states = {s.run: s for s in suite_status(runs, tmp_path, timeout=30)}
    assert {k: s.state for k, s in states.items()} == {"done": "finished", "live": "running", "silent": "stale",
                                                       "broken": "failed", "todo": "waiting"}
    assert states["live"].worker == "w7" and states["live"].host and "0.5000" in states["done"].detail
    assert "disk full" in states["broken"].detail
    assert summary(list(states.values())) == "1 finished, 1 running, 1 stale, 1 failed, 1 waiting"
    live.release("finished")
    silent.kill()
    silent.join()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit], ids=["ctrl-c", "lightning-sys-exit"])
def test_a_run_stopped_while_it_trains_says_interrupted_and_is_released(tmp_path: Path, monkeypatch,
                                                                       stop: type[BaseException]) -> None:
    """scancel, a requeue or Ctrl-C mid-fit (Lightning turns it into sys.exit(1)): run.json no longer says
    "running", the claim is released for the next worker, and `status` shows the run waiting."""
    from lesionbench.config import ExperimentConfig
    from lesionbench.runfolder import RunInfo, read_run_info, write_run_info
    from lesionbench.studies.status import suite_status
    from lesionbench.studies.suite import PlannedRun, run_all

    cfg = ExperimentConfig.model_validate({"name": "t", "dataset": {"name": "synthetic"}, "model": {"name": "unet"}})

    def stopped(cfg, run_dir, **kwargs):
        write_run_info(run_dir, RunInfo(status="running", run=run_dir.name, experiment="t", config_hash="0" * 16))
        raise stop(1) if stop is SystemExit else stop()

    monkeypatch.setattr("lesionbench.studies.train.train", stopped)
    run = PlannedRun("t__s42", cfg)
    with pytest.raises(stop):
        run_all([run], tmp_path, "s", worker="w0")
    assert read_run_info(tmp_path / run.name).status == "interrupted"
    assert [e["event"] for e in history(tmp_path / run.name)] == ["claim", f"release {stop.__name__}"]
    assert not (tmp_path / run.name / CLAIM).exists()
    assert [s.state for s in suite_status([run], tmp_path)] == ["waiting"]


def _worker_claims(suite_dir: Path, command_pid: int) -> dict[int, tuple[Path, str]]:
    """Worker pid -> (the run it trains now, its worker id): claims of the workers `run --workers` started as
    ``command_pid`` (their ids are w<index>-<command pid>@<host>), no result yet."""
    held = {}
    for path in suite_dir.glob(f"*/{CLAIM}"):
        claim = read_claim(path.parent, 600)
        if claim and claim.info and f"-{command_pid}@" in claim.info.worker \
                and not (path.parent / "metrics.json").exists():
            held[claim.info.pid] = (path.parent, claim.info.worker)
    return held


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_workers_one_sigkilled_the_other_finishes_and_the_command_says_which_died(synthetic_env: Path,
                                                                                 tmp_path: Path) -> None:
    """`run --workers 2`; one worker is SIGKILLed while it trains: the other takes its run over and finishes every
    run; the command names the dead worker (index, pid, signal) and exits 0. With both killed, it names both and
    what is left, and exits 1."""
    suite, out = tiny_suite(tmp_path, seeds=2, epochs=4), tmp_path / "results"
    env = env_for(synthetic_env, tmp_path)
    args = ["run", "--suite", str(suite), "--synthetic", "--out", str(out), "--workers", "2"]
    suite_dir = out / "tiny+synthetic"

    proc = start(args, env, tmp_path)  # both killed: nothing finishes
    deadline = time.time() + 180
    while len(_worker_claims(suite_dir, proc.pid)) < 2 and time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.1)
    held = _worker_claims(suite_dir, proc.pid)
    assert len(held) == 2, list(suite_dir.glob("*/*"))
    for pid in held:
        os.kill(pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, output
    for pid, (_, worker) in held.items():
        log = suite_dir / "workers" / f"worker-{worker[1]}.log"
        assert f"worker {worker[1]} (pid {pid}) was killed by SIGKILL; its log: {log}" in output, output
    left = sorted(f"{run.name} (left by worker {worker[1]})" for run, worker in held.values())
    assert f"2 of 2 runs not finished: {', '.join(left)}; re-run the same command to finish them" in output, output

    proc = start(args, env, tmp_path)  # the same command again: both resume; one is killed, the other takes over
    deadline = time.time() + 180
    while not _worker_claims(suite_dir, proc.pid) and time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.1)
    pid, (taken, _) = next(iter(_worker_claims(suite_dir, proc.pid).items()))
    os.kill(pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert f"(pid {pid}) was killed by SIGKILL" in output and "all 2 runs finished: the other workers took over" \
        in output, output
    assert "not finished" not in output, output
    assert_each_run_once(suite_dir, 2)
    takeover = [e for e in history(taken) if e["event"] == "takeover"][-1]
    assert takeover["previous"]["pid"] == pid and takeover["reason"] == "process gone", takeover
