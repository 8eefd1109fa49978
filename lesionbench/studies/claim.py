"""The run claim: one worker trains a run at a time, on one machine or many sharing the results folder.

``claim.json`` in the run folder is the lock. It appears atomically with its full content (written to a
unique temporary file, then hard-linked to the name: the link fails if the name exists, on local disks and
on NFS alike, the classic NFS-safe lock; O_CREAT|O_EXCL is also atomic on NFSv3+ and is the fallback where
hard links are refused). Its *mtime* is the heartbeat: the holder touches its own open file (``os.utime`` on
the descriptor), so a heartbeat can never land on a successor's claim. A claim not touched for
``timeout`` seconds is stale; exactly one successor takes it over (an O_EXCL marker named after the stale
claim, then a rename aside that is checked before the new claim is made). Clocks must agree across hosts
(NTP; munge, SLURM's authentication, needs that too). ``claims.log`` keeps the history of every claim.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)
CLAIM, HISTORY = "claim.json", "claims.log"
DEFAULT_TIMEOUT = 600.0
SKEW_TOLERANCE = 5.0  # seconds a heartbeat may lie in the future before the clock is called skewed
_SEEN: dict[str, tuple[float, float]] = {}  # claim -> (its heartbeat, when this process first saw that heartbeat)


def claim_timeout() -> float:
    """Seconds without a heartbeat after which a claim is stale ($LESIONBENCH_CLAIM_TIMEOUT, default 10 min;
    a bad value is one line naming the variable, from lesionbench.settings)."""
    from lesionbench.settings import settings

    return settings().claim_timeout


class ClaimInfo(BaseModel):
    """Who holds a run: enough to find the process, and the time it started."""

    worker: str
    host: str
    pid: int
    token: str
    started: str
    pidns: int = 0  # the pid namespace, so a pid is only judged on the same host and namespace


def _pidns() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # not Linux
        return 0


def _dead_here(info: ClaimInfo | None) -> bool:
    """The holder ran on this host, in this pid namespace, and its process is gone (e.g. SIGKILLed): no need to
    wait for the heartbeat timeout."""
    if info is None or info.host != socket.gethostname() or not info.pidns or info.pidns != _pidns():
        return False
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is gone too
        return Path(f"/proc/{info.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class HeldBy(BaseModel):
    """What another worker's claim says, and how fresh its heartbeat is."""

    info: ClaimInfo | None
    age: float
    stale: bool
    mtime: float = 0.0  # the heartbeat judged: a takeover goes ahead only while it has not moved


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_claim(run_dir: Path, timeout: float | None = None) -> HeldBy | None:
    """The current claim of a run folder, or None when nobody holds it."""
    path = Path(run_dir) / CLAIM
    try:
        mtime = path.stat().st_mtime
        age = time.time() - mtime
        info = ClaimInfo.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError):  # an O_EXCL fallback claim being written: judge by its age only
        info = None
    limit = timeout or claim_timeout()
    # A heartbeat dated in the future (a holder with a skewed clock) has a negative age and would never go
    # stale: it is also stale once it has not moved for the timeout, as this process's own clock measures.
    seen = _SEEN.get(str(path))
    if seen is None or seen[0] != mtime:  # one entry per claim file: the heartbeat last seen there
        seen = _SEEN[str(path)] = (mtime, time.monotonic())
        if age < -SKEW_TOLERANCE:
            log.warning("%s: heartbeat dated %.0f s in the future (a host with a skewed clock?); it goes stale after "
                        "%.0f s without moving instead", path, -age, limit)
    unmoved = time.monotonic() - seen[1]
    return HeldBy(info=info, age=age, stale=age > limit or (age < -SKEW_TOLERANCE and unmoved > limit), mtime=mtime)


class Claim:
    """A held claim: a heartbeat thread keeps it fresh until release()."""

    def __init__(self, run_dir: Path, info: ClaimInfo, fd: int, timeout: float) -> None:
        self.run_dir, self.info, self._fd = run_dir, info, fd
        self.lost = False
        self.outcome = "finished"  # what the release logs when the holder leaves without an exception
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(max(timeout / 4, 0.2),), daemon=True,
                                        name=f"claim-heartbeat-{run_dir.name}")
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            now = time.time()
            try:
                os.utime(self._fd, (now, now))  # our own inode, wherever a successor moved it
                self.lost = os.stat(self.run_dir / CLAIM).st_ino != os.fstat(self._fd).st_ino
            except OSError:
                self.lost = True
            if self.lost:
                log_event(self.run_dir, "lost", self.info)
                return

    def release(self, outcome: str) -> None:
        """Stop the heartbeat and remove the claim if it is still ours (logged first, so that the history lists
        this release before the next worker's claim)."""
        self._stop.set()
        self._thread.join()
        try:
            log_event(self.run_dir, f"release {outcome}", self.info)
        finally:
            try:
                if os.stat(self.run_dir / CLAIM).st_ino == os.fstat(self._fd).st_ino:
                    os.unlink(self.run_dir / CLAIM)
            except OSError:
                pass
            os.close(self._fd)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, kind, err, tb) -> None:
        self.release(self.outcome if kind is None else f"{kind.__name__}")


def acquire(run_dir: Path, worker: str | None = None, timeout: float | None = None) -> Claim | None:
    """Claim a run folder, taking over a stale claim, a claim whose process died on this host, or our own (left by
    an earlier incarnation of this worker, e.g. a requeued SLURM array task); None when a live worker holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    timeout = timeout or claim_timeout()
    info = ClaimInfo(worker=worker or default_worker_id(), host=socket.gethostname(), pid=os.getpid(),
                     token=uuid.uuid4().hex, started=_now(), pidns=_pidns())
    # a claim there already: judge it without making (and fsyncing) a temporary file first
    fd = None if (run_dir / CLAIM).exists() else _create(run_dir, info)
    event, extra = "claim", {}
    if fd is None:
        held = read_claim(run_dir, timeout)
        if held is None:  # released meanwhile: try once more
            fd = _create(run_dir, info)
        elif held.stale or _dead_here(held.info) or (held.info is not None and held.info.worker == info.worker):
            fd, event = _take_over(run_dir, info, held, timeout), "takeover"
            reason = "stale heartbeat" if held.stale else "same worker" if held.info.worker == info.worker \
                else "process gone"
            extra = {"previous": held.info.model_dump() if held.info else None, "heartbeat_age_s": round(held.age, 1),
                     "reason": reason}
    if fd is None:
        return None
    log_event(run_dir, event, info, **extra)
    return Claim(run_dir, info, fd, timeout)


def _create(run_dir: Path, info: ClaimInfo) -> int | None:
    """Make claim.json appear whole, or fail because it exists. Returns the open descriptor of our claim."""
    return _create_file(run_dir / CLAIM, info)


def _create_file(target: Path, info: ClaimInfo) -> int | None:
    """Make ``target`` appear whole with ``info`` in it, or fail because it exists: the open descriptor, or None."""
    tmp = target.with_name(f".claim-{info.token}.tmp")
    data = info.model_dump_json().encode()
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    os.write(fd, data)
    os.fsync(fd)
    try:
        os.link(tmp, target)
    except FileExistsError:
        os.close(fd)
        return None
    except OSError as err:  # a filesystem without hard links: O_EXCL create, atomic on NFSv3+
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        os.close(fd)
        try:
            fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return None
        os.write(fd, data)
    finally:
        tmp.unlink(missing_ok=True)
    return fd


def _take_over(run_dir: Path, info: ClaimInfo, held: HeldBy, timeout: float) -> int | None:
    """Only one successor wins: the O_EXCL marker is per stale claim; the claim moved aside is checked to be the
    one judged stale (not a fresh one made meanwhile) before ours is created."""
    target = run_dir / CLAIM
    try:
        seen = target.stat()
    except FileNotFoundError:
        return _create(run_dir, info)
    gone = held.info is not None and (held.info.worker == info.worker or _dead_here(held.info))
    if not gone and seen.st_mtime != held.mtime:  # it beat (or was replaced) since we judged it stale
        return None
    key = held.info.token if held.info else f"ino{seen.st_ino}"
    marker, aside = run_dir / f".takeover-{key}", run_dir / f".claim-stale-{key}.json"
    if not mark(marker, info, timeout):
        return None
    try:
        try:
            os.rename(target, aside)
        except FileNotFoundError:
            return None
        moved = aside.stat()
        if moved.st_ino != seen.st_ino or (moved.st_mtime != seen.st_mtime and not gone):
            try:  # not the claim we judged stale (its holder is alive): put it back
                os.link(aside, target)
            except FileExistsError:
                pass
            return None
        return _create(run_dir, info)
    finally:
        aside.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)


def mark(marker: Path, info: ClaimInfo | None = None, timeout: float | None = None) -> bool:
    """Create ``marker`` atomically with its maker's identity in it: True for exactly one of the processes that try.

    A marker is held for milliseconds (a takeover) or marks a job done; one left behind by a maker that died before
    removing it (or before doing the job it marks) must not block the next maker forever: a marker whose maker is gone
    from this host, or that is older than ``timeout`` (the claim timeout: what a silent heartbeat is allowed), is moved
    aside (checked to be the marker judged, not a successor's fresh one) and made again.
    """
    info = info or ClaimInfo(worker=default_worker_id(), host=socket.gethostname(), pid=os.getpid(),
                             token=uuid.uuid4().hex, started=_now(), pidns=_pidns())
    limit = timeout or claim_timeout()
    for _ in range(3):
        fd = _create_file(marker, info)
        if fd is not None:
            os.close(fd)
            return True
        try:
            seen = marker.stat()
            maker = _read_info(marker)
        except FileNotFoundError:  # removed meanwhile: try again
            continue
        age = time.time() - seen.st_mtime
        if not (_dead_here(maker) or age > limit or _unmoved(marker, seen.st_mtime) > limit):
            return False  # its maker is at work
        aside = marker.with_name(f"{marker.name}.left-{info.token}")
        try:
            os.rename(marker, aside)
        except FileNotFoundError:  # another successor moved it first
            continue
        try:
            moved = aside.stat().st_ino
        except FileNotFoundError:
            continue
        if moved != seen.st_ino:  # that was a successor's fresh marker: put it back, it won
            try:
                os.link(aside, marker)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        log.warning("%s: left by %s, which %s; removed", marker,
                    f"pid {maker.pid} on {maker.host}" if maker else "a worker",
                    "is gone" if _dead_here(maker) else f"stopped {age:.0f} s ago")
    return False


def _read_info(path: Path) -> ClaimInfo | None:
    """The identity in a claim or marker file; None while an O_EXCL fallback file is still being written."""
    try:
        return ClaimInfo.model_validate_json(path.read_text())
    except ValidationError:
        return None


def _unmoved(path: Path, mtime: float) -> float:
    """Seconds since this process first saw ``path`` with this mtime (by its own clock, so skew cannot hide it)."""
    seen = _SEEN.get(str(path))
    if seen is None or seen[0] != mtime:
        seen = _SEEN[str(path)] = (mtime, time.monotonic())
    return time.monotonic() - seen[1]


def log_event(run_dir: Path, event: str, info: ClaimInfo, **extra) -> None:
    """One JSON line per claim event, appended in one write (the history a test or a person can audit)."""
    line = json.dumps({"time": _now(), "event": event, "worker": info.worker, "host": info.host,
                       "pid": info.pid, **extra}) + "\n"
    fd = os.open(Path(run_dir) / HISTORY, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / HISTORY
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
