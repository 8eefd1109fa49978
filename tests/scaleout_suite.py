"""A tiny suite (one small U-Net, a few seeds, 32 px) and the real `lesionbench` command, for scale-out tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lesionbench.studies.claim import history


def lesionbench() -> str:
    return shutil.which("lesionbench") or str(Path(sys.executable).with_name("lesionbench"))


def tiny_suite(folder: Path, seeds: int = 3, epochs: int = 1, name: str = "tiny") -> Path:
    """``seeds`` runs of one tiny model on the synthetic ISIC 2016 replica at 32 px (--quick makes them 1 epoch)."""
    base = folder / "base.yaml"
    base.write_text("dataset: {image_size: 32, augmentation: none, subset: 8, num_workers: 0}\n"
                    f"trainer: {{epochs: {epochs}, batch_size: 4, accelerator: cpu, devices: 1}}\n")
    suite = folder / f"{name}.yaml"
    suite.write_text(f"name: {name}\nmatrix:\n  base: {base}\n  models: [{{name: unet, options: {{base_channels: 8}}}}]\n"
                     f"  datasets: [isic2016]\n  seeds: {list(range(seeds))}\n")
    return suite


def env_for(synthetic: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "LESIONBENCH_SYNTHETIC": str(synthetic), "LESIONBENCH_WORKDIR": str(tmp_path / "work"),
            "OMP_NUM_THREADS": "1", **extra}


def start(args: list[str], env: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([lesionbench(), *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def assert_each_run_once(suite_dir: Path, n: int) -> None:
    """Every run finished, trained by exactly one claim (a takeover continues a dead worker's), board rows once."""
    runs = sorted(p for p in suite_dir.iterdir() if (p / "run.json").is_file())
    assert len(runs) == n, runs
    for run in runs:
        events = [e["event"] for e in history(run)]
        assert events.count("release finished") == 1, (run.name, events)
        assert (run / "metrics.json").is_file() and not (run / "claim.json").exists(), run
        assert json.loads((run / "run.json").read_text())["status"] == "finished", run
        assert not list(run.glob(".claim*")) and not list(run.glob(".takeover*")), list(run.iterdir())
    board = (suite_dir / "leaderboard.md").read_text()
    for run in runs:  # one curves link per run; the experiment row counts its runs
        assert board.count(f"[{run.name}]({run.name}/plots/curves.png)") == 1, (run.name, board)
    verdicts = json.loads((suite_dir / "leaderboard.json").read_text())  # the table is rendered from it
    rows = [m for d in verdicts["datasets"] for m in d["models"] if m["experiment"] == runs[0].name.rsplit("__", 1)[0]]
    assert len(rows) == 1 and len(rows[0]["seeds"]) == n and f"`{rows[0]['experiment']}`" in board, verdicts
