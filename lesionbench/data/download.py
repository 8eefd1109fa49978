"""Official archives: fetch (resumable), checksum, unpack, verify.

Why resumable: the ISIC 2018 training input is ~10 GB; a dropped connection must not
restart it. Bytes go to ``<file>.part`` and an HTTP Range request continues from its size.
Sizes and sha256 sums are checked when known (None = not published by the organisers).
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from lesionbench.data.verify import VerifyReport, verify
from lesionbench.errors import LesionBenchError

S3 = "https://isic-challenge-data.s3.amazonaws.com"


@dataclass(frozen=True)
class Archive:
    url: str
    size: int | None = None
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def _isic(year: int, *names: str) -> list[Archive]:
    return [Archive(f"{S3}/{year}/{n}.zip") for n in names]


_IN18 = ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1-2_Test_Input")
ARCHIVES: dict[str, list[Archive]] = {
    "isic2016": _isic(2016, "ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth",
                      "ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth"),
    "isic2017": _isic(2017, "ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth",
                      "ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth",
                      "ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth"),
    "isic2018": _isic(2018, *_IN18, "ISIC2018_Task1_Training_GroundTruth", "ISIC2018_Task1_Validation_GroundTruth",
                      "ISIC2018_Task1_Test_GroundTruth"),
    "isic2018-task2": _isic(2018, *_IN18, "ISIC2018_Task2_Training_GroundTruth_v3",
                            "ISIC2018_Task2_Validation_GroundTruth", "ISIC2018_Task2_Test_GroundTruth"),
    "kvasir-seg": [Archive("https://datasets.simula.no/downloads/kvasir-seg.zip")],
}


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _check(path: Path, a: Archive) -> None:
    if a.size is not None and path.stat().st_size != a.size:
        raise LesionBenchError(f"{path}: {path.stat().st_size} bytes, expected {a.size}; delete it and download again")
    if a.sha256 is not None and _sha256(path) != a.sha256:
        path.unlink()
        raise LesionBenchError(f"{path}: sha256 mismatch with {a.url} (file removed); download again")


def _total(headers: object, start: int, status: int) -> int | None:
    """The full file size the server announces: Content-Range's ``/total`` (206, 416), else
    Content-Length (+ the resumed offset); None when it says nothing."""
    rng = headers.get("Content-Range") if headers else None
    if rng and "/" in rng and rng.rsplit("/", 1)[1].strip().isdigit():
        return int(rng.rsplit("/", 1)[1])
    length = headers.get("Content-Length") if headers and status != 416 else None
    return int(length) + start if length and length.isdigit() else None


def _range_start(headers: object) -> int | None:
    """First byte of a 206 answer (``Content-Range: bytes N-M/T``)."""
    rng = (headers.get("Content-Range") or "").removeprefix("bytes ").split("-")[0]
    return int(rng) if rng.isdigit() else None


def fetch(a: Archive, folder: Path, progress: bool = True, timeout: float = 60) -> Path:
    """Download ``a`` into ``folder`` (resuming a ``.part`` file) and check size/sha256.

    The ``.part`` file becomes the archive only once it holds every byte the server announced
    (Content-Range / Content-Length totals) and matches the published size and checksum; a
    dropped connection leaves it in place for the next call to resume with a Range request.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dest, part = folder / a.filename, folder / (a.filename + ".part")
    if dest.is_file():
        _check(dest, a)
        return dest
    start = part.stat().st_size if part.is_file() else 0
    if a.size is not None and start > a.size:  # not a prefix of this archive
        part.unlink()
        start = 0
    req = urllib.request.Request(a.url, headers={"Range": f"bytes={start}-"} if start else {})
    total = a.size
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            if start and (r.status != 206 or _range_start(r.headers) != start):  # Range ignored: start again
                start = 0
            total = _total(r.headers, start, r.status) or a.size
            with open(part, "ab" if start else "wb") as f, Progress(
                "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(), disable=not progress, transient=True,
            ) as bar:
                task = bar.add_task(a.filename, total=total, completed=start)
                for block in iter(lambda: r.read(1 << 20), b""):
                    f.write(block)
                    bar.advance(task, len(block))
    except urllib.error.HTTPError as err:
        if not (err.code == 416 and start):  # 416 with a .part: complete, if the total agrees
            raise LesionBenchError(f"{a.url}: HTTP {err.code} {err.reason}; check the URL or download it by hand "
                                   f"into {folder}") from None
        total = _total(err.headers, start, 416) or a.size
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise LesionBenchError(f"{a.url}: download interrupted ({err}); run the command again to resume "
                               f"from {part}") from None
    have = part.stat().st_size
    if total is not None and have < total:
        raise LesionBenchError(f"{a.url}: connection dropped at {have} of {total} bytes; run the command again "
                               f"to resume from {part}")
    if total is not None and have > total:
        part.unlink()
        raise LesionBenchError(f"{part}: {have} bytes but the server's file has {total} (not a prefix of it; "
                               "removed); run the command again to download it afresh")
    _check(part, a)
    part.replace(dest)
    return dest


def unpack(archive: Path, root: Path) -> None:
    """Extract a zip into ``root``, skipping __MACOSX debris and refusing paths that escape root."""
    try:
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if info.filename.startswith("__MACOSX") or "/._" in "/" + info.filename:
                    continue
                target = (root / info.filename).resolve()
                if not target.is_relative_to(root.resolve()):
                    raise LesionBenchError(f"{archive}: entry {info.filename} points outside {root}")
                z.extract(info, root)
    except zipfile.BadZipFile:
        raise LesionBenchError(f"{archive}: not a valid zip file; delete it and download again") from None


def download(name: str, root: str | Path, urls: list[str] | None = None, progress: bool = True) -> VerifyReport:
    """Fetch every archive of ``name`` (or ``urls``) into ``root``, unpack, then verify."""
    if urls is None and name not in ARCHIVES:
        raise LesionBenchError(f"no download for '{name}' (downloadable: {', '.join(ARCHIVES)}; "
                               "synthetic data comes from `lesionbench data synth`)")
    root = Path(root)
    archives = [Archive(u) for u in urls] if urls else ARCHIVES[name]
    for a in archives:
        path = fetch(a, root / ".lesionbench" / "downloads", progress=progress)
        unpack(path, root)
    return verify(name, root)
