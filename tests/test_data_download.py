"""download(): a local HTTP server (Range-capable) serving a small synthetic zip; resume works."""

import functools
import http.server
import threading
import zipfile
from pathlib import Path

import pytest

from lesionbench.data.download import Archive, download, fetch
from lesionbench.data.synthetic import write_all


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus 'Range: bytes=N-' (206), as S3 and simula.no answer."""

    requests: list[str] = []

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        flaky = self.path.startswith("/flaky/")  # the first answer drops the connection half-way
        path = Path(self.translate_path(self.path.removeprefix("/flaky")))
        rng = self.headers.get("Range")
        type(self).requests.append(rng or "")
        if flaky and not rng:
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if not rng or not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        start = int(rng.split("=")[1].split("-")[0])
        if start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    serve = tmp_path_factory.mktemp("www")
    syn = write_all(tmp_path_factory.mktemp("syn"), seed=2, counts={"kvasir-seg": {"all": 4}},
                    size=(40, 56), datasets=("kvasir-seg",))
    with zipfile.ZipFile(serve / "kvasir-seg.zip", "w") as z:
        for p in sorted((syn / "kvasir-seg").rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(syn / "kvasir-seg"))
        z.writestr("__MACOSX/Kvasir-SEG/._x.jpg", b"junk")
    handler = functools.partial(RangeHandler, directory=str(serve))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", serve
    httpd.shutdown()


def test_download_unpack_verify(server, tmp_path: Path) -> None:
    url, _ = server
    report = download("kvasir-seg", tmp_path, urls=[f"{url}/kvasir-seg.zip"], progress=False)
    assert report.ok and report.counts == {"all": 4}
    assert len(list((tmp_path / "Kvasir-SEG" / "images").glob("*.jpg"))) == 4
    assert not (tmp_path / "__MACOSX").exists()


def test_resume_partial_download(server, tmp_path: Path) -> None:
    import hashlib
    url, serve = server
    data = (serve / "kvasir-seg.zip").read_bytes()
    folder = tmp_path / "dl"
    folder.mkdir()
    (folder / "kvasir-seg.zip.part").write_bytes(data[:1000])
    RangeHandler.requests.clear()
    a = Archive(f"{url}/kvasir-seg.zip", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    out = fetch(a, folder, progress=False)
    assert RangeHandler.requests == ["bytes=1000-"]
    assert out.read_bytes() == data and not (folder / "kvasir-seg.zip.part").exists()
    bad = Archive(f"{url}/kvasir-seg.zip", sha256="0" * 64)
    from lesionbench.errors import LesionBenchError
    with pytest.raises(LesionBenchError, match="sha256 mismatch"):
        fetch(bad, tmp_path / "other", progress=False)
    with pytest.raises(LesionBenchError, match="HTTP 404"):
        fetch(Archive(f"{url}/missing.zip"), tmp_path / "other", progress=False)


def test_dropped_connection_is_never_promoted(server, tmp_path: Path) -> None:
    """Issue 18.10: a short body (Content-Length says more) stays a resumable .part; the next call resumes."""
    import hashlib

    from lesionbench.errors import LesionBenchError
    url, serve = server
    data = (serve / "kvasir-seg.zip").read_bytes()
    a = Archive(f"{url}/flaky/kvasir-seg.zip", sha256=hashlib.sha256(data).hexdigest())  # size not published
    RangeHandler.requests.clear()
    with pytest.raises(LesionBenchError, match=rf"connection dropped at {len(data) // 2} of {len(data)} bytes.*resume"):
        fetch(a, tmp_path, progress=False)
    assert not (tmp_path / "kvasir-seg.zip").exists()
    assert (tmp_path / "kvasir-seg.zip.part").read_bytes() == data[: len(data) // 2]
    out = fetch(a, tmp_path, progress=False)
    assert RangeHandler.requests == ["", f"bytes={len(data) // 2}-"]
    assert out.read_bytes() == data and not (tmp_path / "kvasir-seg.zip.part").exists()


def test_part_longer_than_the_file_is_restarted(server, tmp_path: Path) -> None:
    from lesionbench.errors import LesionBenchError
    url, serve = server
    data = (serve / "kvasir-seg.zip").read_bytes()
    (tmp_path / "kvasir-seg.zip.part").write_bytes(data + b"garbage")
    with pytest.raises(LesionBenchError, match="not a prefix"):
        fetch(Archive(f"{url}/kvasir-seg.zip"), tmp_path, progress=False)  # the server answers 416 */total
    assert not (tmp_path / "kvasir-seg.zip.part").exists() and not (tmp_path / "kvasir-seg.zip").exists()
    assert fetch(Archive(f"{url}/kvasir-seg.zip"), tmp_path, progress=False).read_bytes() == data
