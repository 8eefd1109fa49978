"""Local workers: N copies of `lesionbench run` on one machine, one device (or a share of the cores) each.

The workers coordinate through the run claims alone (studies/claim.py), exactly as independent processes on
several machines or SLURM array tasks do; this module only starts them, splits the hardware and watches the
run folders.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lesionbench.settings import child_environment
from lesionbench.studies.status import RunState, suite_status
from lesionbench.studies.suite import PlannedRun


def worker_command(run_args: list[str], worker: str, index: int) -> list[str]:
    """The same command as typed (without the launch options), as one worker."""
    return [sys.executable, "-m", "lesionbench.cli", "run", *run_args, "--worker", worker, "--worker-index", str(index)]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_env(index: int, n: int, gpus: list[str] | None) -> dict[str, str]:
    """One GPU per worker (round robin over ``gpus``) or, on CPU, an equal share of the cores."""
    threads = str(max(1, cpu_count() // n))
    env = child_environment(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, LESIONBENCH_THREADS=threads)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    return env


def detect_gpus() -> list[str]:
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


@dataclass
class WorkerEnd:
    """How one worker process ended."""

    index: int
    pid: int
    code: int  # its exit status; -N: killed by signal N
    log: Path
    worker: str = ""  # its worker id, as its claims name it

    def describe(self) -> str:
        if self.code < 0:
            try:
                how = f"was killed by {signal.Signals(-self.code).name}"
            except ValueError:
                how = f"was killed by signal {-self.code}"
        else:
            how = f"exited with code {self.code}"
        return f"worker {self.index} (pid {self.pid}) {how}; its log: {self.log}"


def launch(run_args: list[str], n: int, gpus: list[str] | None, runs: list[PlannedRun], suite_dir: Path,
           on_poll: Callable[[list[RunState]], None], every: float = 1.0) -> list[WorkerEnd]:
    """Start ``n`` workers, report the run folders' state every ``every`` seconds until all have exited.

    Returns how each worker ended: whether the suite is complete is for the run folders to say, since the other
    workers take over the runs of one that died. Ctrl-C stops the workers (they release their claims; an
    interrupted run resumes from last.ckpt next time) and is raised again.
    """
    gpus = gpus if gpus is not None else detect_gpus()
    log_dir = suite_dir / "workers"
    log_dir.mkdir(parents=True, exist_ok=True)
    procs, names = [], [f"w{k}-{os.getpid()}@{os.uname().nodename}" for k in range(n)]
    for k in range(n):
        with open(log_dir / f"worker-{k}.log", "a") as log:
            procs.append(subprocess.Popen(worker_command(run_args, names[k], k),
                                          env=worker_env(k, n, gpus), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL))
    try:
        while [p for p in procs if p.poll() is None]:  # poll() each (any() would stop at the first): a dead
            # worker is reaped at once, or it stays a zombie whose pid looks alive and blocks the takeover of its run
            on_poll(suite_status(runs, suite_dir))
            time.sleep(every)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
        raise
    on_poll(suite_status(runs, suite_dir))
    return [WorkerEnd(k, p.pid, p.returncode, log_dir / f"worker-{k}.log", names[k]) for k, p in enumerate(procs)]
