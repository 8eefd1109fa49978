"""A real single-node SLURM cluster for tests: munged, slurmctld and slurmd on localhost, all state in a scratch
folder (Debian's slurm-wlm + munge, installed by `make slurm`). No slurmdbd: the tests watch jobs with squeue and
scontrol and the run folders, so no accounting database is needed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol")


def missing_binaries() -> list[str]:
    paths = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [b for b in BINARIES if shutil.which(b, path=paths) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    base: Path
    env: dict[str, str]
    procs: list[subprocess.Popen]

    def run(self, *cmd: str, check: bool = True) -> str:
        done = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=30)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {done.stderr or done.stdout}")
        return done.stdout

    def log(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.base.glob("*.log")))

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)


def start(cpus: int = 2) -> Cluster:
    """munged with its own key and socket, then slurmctld and slurmd in the foreground (-D), node idle."""
    if os.geteuid() != 0:
        raise PermissionError("slurmd must run as root to start jobs")
    base = Path(tempfile.mkdtemp(prefix="lesionbench-slurm-"))
    base.chmod(0o755)
    for sub in ("state", "spool", "munge"):
        (base / sub).mkdir()
    key, sock = base / "munge" / "munge.key", base / "munge" / "munge.sock"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    node = "lbnode"
    mem = 1024
    conf = base / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=lesionbench", "SlurmctldHost=localhost(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", "AuthType=auth/munge", "CredType=cred/munge",
        f"AuthInfo=socket={sock}", f"StateSaveLocation={base / 'state'}", f"SlurmdSpoolDir={base / 'spool'}",
        f"SlurmctldPidFile={base / 'slurmctld.pid'}", f"SlurmdPidFile={base / 'slurmd.pid'}",
        f"SlurmctldLogFile={base / 'slurmctld.log'}", f"SlurmdLogFile={base / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none", "SwitchType=switch/none",
        "SchedulerType=sched/builtin", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none", "JobAcctGatherType=jobacct_gather/none",
        "ReturnToService=2", "SlurmctldTimeout=30", "SlurmdTimeout=30", "InactiveLimit=0", "KillWait=5", "MinJobAge=600",
        "SchedulerParameters=sched_interval=1", "MessageTimeout=10", "PlugStackConfig=/dev/null",
        f"NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN",
        f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO",
    ]) + "\n")
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
    procs: list[subprocess.Popen] = []
    cluster = Cluster(base, env, procs)
    try:
        procs.append(subprocess.Popen(["munged", "-F", "--force", f"--key-file={key}", f"--socket={sock}",
                                       f"--pid-file={base / 'munge' / 'munged.pid'}",
                                       f"--log-file={base / 'munged.log'}", f"--seed-file={base / 'munge' / 'seed'}"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        _wait(lambda: sock.exists(), 10, "munged socket", cluster)
        procs.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        _wait(lambda: subprocess.run(["scontrol", "ping"], env=env, capture_output=True).returncode == 0, 30,
              "slurmctld", cluster)
        procs.append(subprocess.Popen(["slurmd", "-D", "-N", node, "-f", str(conf)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        _wait(lambda: "idle" in cluster.run("sinfo", "-h", "-o", "%t", check=False), 30, "node idle", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait(ready, timeout: float, what: str, cluster: Cluster) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        if any(p.poll() is not None for p in cluster.procs):
            break
        time.sleep(0.3)
    raise RuntimeError(f"SLURM test cluster: {what} not ready\n{cluster.log()}")
