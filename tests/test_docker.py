"""docker/: what the images would contain and run, checked without a Docker daemon.

The build context is computed by docker-py's own .dockerignore implementation (the one
`docker build` through the SDK uses), not by a matcher written here; the default command is run
through the real CLI (as --dry-run); version pins are checked against pyproject's ranges.
"""

from __future__ import annotations

import inspect
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths
from packaging.requirements import Requirement
from packaging.version import Version
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cuda"]
IDS = [p.name for p in DOCKERFILES]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def build_context(dockerfile: Path) -> set[str]:
    """Every path `docker build -f <dockerfile> .` sends, as docker-py computes it."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    return set(exclude_paths(str(ROOT), patterns, dockerfile=str(dockerfile.relative_to(ROOT))))


def copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for word, args in instructions(dockerfile):
        if word in ("COPY", "ADD"):
            sources += [a.rstrip("/") for a in shlex.split(args)[:-1] if not a.startswith("--")]
    return sources


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_every_copied_source_file_is_in_the_build_context(dockerfile: Path) -> None:
    """A COPY of a missing or ignored path fails the build; a package file left out of the context
    fails at import time inside the image. Both are caught here."""
    context = build_context(dockerfile)
    sources = copy_sources(dockerfile)
    assert {"constraints.txt", "pyproject.toml", "lesionbench", "experiments"} <= set(sources)
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"{dockerfile.name}: COPY {src} does not exist"
        files = [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts] if path.is_dir() else [path]
        missing = [str(f.relative_to(ROOT)) for f in files if str(f.relative_to(ROOT)) not in context]
        assert not missing, f"{dockerfile.name}: COPY {src} loses {missing[:5]} to .dockerignore"


@pytest.mark.timeout(60)
def test_the_build_context_stays_small_and_free_of_local_state() -> None:
    context = build_context(DOCKERFILES[0])
    local = [p for p in context if p.split("/")[0] in (".git", ".venv", "wandb", "lightning_logs", ".pytest_cache")
             or "__pycache__" in p or p.endswith((".ckpt", ".safetensors", ".pyc"))
             or (p.startswith("results/") and p.count("/") >= 1)]
    assert not local, f"sent to the Docker daemon but machine-local: {sorted(local)[:5]}"
    size = sum((ROOT / p).stat().st_size for p in context if (ROOT / p).is_file())
    assert size < 20e6, f"build context is {size / 1e6:.1f} MB"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_the_image_default_command_is_a_valid_lesionbench_run(dockerfile: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """CMD, with the image's environment, plans its suite through the real CLI (--dry-run)."""
    from lesionbench.cli import app

    steps = instructions(dockerfile)
    cmd = json.loads(next(a for w, a in steps if w == "CMD"))
    assert cmd[0] == "lesionbench"
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for w, a in steps if w == "ENV")))
    for key, value in env.items():
        if key.startswith("LESIONBENCH_"):  # the image's data root /data is a volume: a folder here
            monkeypatch.setenv(key, str(tmp_path / "data") if value == "/data" else value)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*cmd[1:], "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "demo" in result.output


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_results_volume_is_where_the_cli_writes_and_data_volume_is_the_data_root(dockerfile: Path) -> None:
    from lesionbench import cli

    steps = instructions(dockerfile)
    workdir = next(a for w, a in steps if w == "WORKDIR")
    volumes = json.loads(next(a for w, a in steps if w == "VOLUME"))
    default_out = inspect.signature(cli.run).parameters["out"].default
    assert f"{workdir}/{default_out}" in volumes
    data_root = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for w, a in steps if w == "ENV")))["LESIONBENCH_DATA"]
    assert data_root in volumes


def _requirement(name: str) -> Requirement:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(r for r in map(Requirement, deps) if r.name == name)


@pytest.mark.timeout(60)
def test_cuda_base_image_torch_satisfies_the_package_range() -> None:
    """The CUDA image keeps its base image's torch: that version must be one pyproject accepts."""
    base = next(a for w, a in instructions(DOCKERFILES[1]) if w == "ARG" and a.startswith("BASE="))
    match = re.fullmatch(r"BASE=pytorch/pytorch:(\d+\.\d+\.\d+)-cuda\d+\.\d+-cudnn\d+-runtime", base)
    assert match, f"not an official pytorch/pytorch runtime tag: {base}"
    assert _requirement("torch").specifier.contains(Version(match.group(1)))


@pytest.mark.timeout(60)
def test_cpu_image_installs_the_pinned_pair_from_the_cpu_index() -> None:
    """The CPU image pins torch through constraints.txt (which pyproject's range accepts) and takes
    it from PyTorch's CPU index, so no CUDA wheels are pulled in."""
    step = next(a for w, a in instructions(DOCKERFILES[0]) if w == "RUN" and "torch" in a)
    assert "--index-url https://download.pytorch.org/whl/cpu" in step and "-c constraints.txt" in step
    pins = dict(re.findall(r"^(torch|torchvision)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M))
    for name, version in pins.items():
        assert _requirement(name).specifier.contains(Version(version)), (name, version)
