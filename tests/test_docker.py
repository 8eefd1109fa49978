"""Static checks of docker/: every COPY source exists and survives .dockerignore; CMD is the demo."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cuda"]


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


def _regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore matching: '**' any depth, '*' and '?' within one path segment."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "$")


def ignored(rel: str, patterns: list[str]) -> bool:
    """True when ``rel`` (or a folder above it) is excluded; later '!' lines re-include."""
    parts = rel.strip("/").split("/")
    candidates = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        pat = raw[1:] if negate else raw
        pat = pat.strip().strip("/") if pat.strip() != "/" else pat
        if any(_regex(pat).match(c) for c in candidates):
            result = not negate
    return result


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_ignore_matcher_follows_docker_rules() -> None:
    pats = ["/data", "results/*", "**/__pycache__", "*.ckpt", "!keep.ckpt"]
    assert ignored("data/isic/x.jpg", pats) and not ignored("lesionbench/data/layouts.py", pats)
    assert ignored("results/demo/run/metrics.json", pats) and not ignored("results", pats)
    assert ignored("lesionbench/models/__pycache__/a.pyc", pats)
    assert ignored("a.ckpt", pats) and not ignored("keep.ckpt", pats) and not ignored("sub/a.ckpt", pats)


def test_dockerignore_excludes_heavy_and_local_things() -> None:
    pats = dockerignore()
    for rel in (".venv/bin/python", ".git/HEAD", "data/synthetic/x.png", "results/demo/run1/config.yaml",
                "lesionbench/__pycache__/cli.cpython-311.pyc", ".pytest_cache/v", "lesionbench.egg-info/PKG-INFO"):
        assert ignored(rel, pats), rel
    for rel in ("lesionbench/data/layouts.py", "lesionbench/cli.py", "experiments/suites/demo.yaml",
                "pyproject.toml", "constraints.txt", "README.md"):
        assert not ignored(rel, pats), rel


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_and_are_in_context(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    copies = [shlex.split(args) for word, args in steps if word in ("COPY", "ADD")]
    assert copies, "no COPY"
    pats = dockerignore()
    copied = set()
    for args in copies:
        sources = [a for a in args[:-1] if not a.startswith("--")]
        for src in sources:
            path = ROOT / src
            assert path.exists(), f"{dockerfile.name}: COPY {src} does not exist"
            assert not ignored(src, pats), f"{dockerfile.name}: COPY {src} is excluded by .dockerignore"
            files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
            assert any(not ignored(str(f.relative_to(ROOT)), pats) for f in files), src
            copied.add(src.rstrip("/"))
    assert {"constraints.txt", "pyproject.toml", "lesionbench", "experiments"} <= copied


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_demo_command_volumes_and_data_root(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    cmds = [args for word, args in steps if word == "CMD"]
    assert len(cmds) == 1 and json.loads(cmds[0]) == ["lesionbench", "run", "--suite", "demo"]
    assert json.loads(next(a for w, a in steps if w == "VOLUME")) == ["/data", "/app/results"]
    env = " ".join(a for w, a in steps if w == "ENV")
    assert "LESIONBENCH_DATA=/data" in env
    assert ("WORKDIR", "/app") in steps  # results/ (the CLI default) is then /app/results
    runs = " ".join(a for w, a in steps if w == "RUN")
    assert "constraints" in runs and "pip install" in runs


def test_cpu_image_uses_cpu_torch_wheels_and_cuda_image_an_official_base() -> None:
    cpu = instructions(DOCKERFILES[0])
    assert cpu[0] == ("FROM", "python:3.11-slim")
    torch_step = next(a for w, a in cpu if w == "RUN" and "torch" in a)
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_step and "-c constraints.txt" in torch_step
    cuda = instructions(DOCKERFILES[1])
    base = next(a for w, a in cuda if w == "ARG" and a.startswith("BASE="))
    assert re.fullmatch(r"BASE=pytorch/pytorch:2\.\d+\.\d+-cuda12\.\d+-cudnn9-runtime", base)
    assert ("FROM", "${BASE}") in cuda
