"""The real `lesionbench` console script in a subprocess: exit codes, messages, plain progress lines.

Contract: 0 all good, 1 a run or check failed (after the summary), 2 bad input (one line),
130 interrupted (with a message).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

LB = shutil.which("lesionbench") or str(Path(sys.executable).with_name("lesionbench"))
TINY = ("dataset: {{name: isic2018, image_size: 32, augmentation: none, subset: 4}}\n"
        "model: {{name: {model}, options: {options}}}\n"
        "trainer: {{epochs: {epochs}, batch_size: 2, accelerator: cpu, devices: 1}}\n")


def _env(synthetic_env: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "LESIONBENCH_SYNTHETIC": str(synthetic_env), "LESIONBENCH_WORKDIR": str(tmp_path / "work"),
            "OMP_NUM_THREADS": "1", "COLUMNS": "100", **extra}


def _lb(*args: str, env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([LB, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _experiment(path: Path, model: str = "unet", options: str = "{base_channels: 8}", epochs: int = 1) -> Path:
    path.write_text(TINY.format(model=model, options=options, epochs=epochs))
    return path


@pytest.mark.slow
def test_bad_input_exits_2_with_one_line(synthetic_env: Path, tmp_path: Path) -> None:
    env, exp = _env(synthetic_env, tmp_path), _experiment(tmp_path / "tiny.yaml")
    # values are validated as written, before --quick shrinks them (test_config covers epochs=ten / -2)
    r = _lb("run", str(exp), "--quick", "--synthetic", "--dry-run", "--set", "trainer.batch_size=four", env=env,
            cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "trainer.batch_size" in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    # names that would leave --out
    out = tmp_path / "a" / "b" / "results"
    suite = tmp_path / "escape.yaml"
    suite.write_text(f"name: ../../x\nexperiments: [{exp}]\n")
    r = _lb("run", "--suite", str(suite), "--synthetic", "--out", str(out), "--dry-run", env=env, cwd=tmp_path)
    assert r.returncode == 2 and "name" in r.stderr and "../../x" in r.stderr, r.stdout + r.stderr
    tune_exp = tmp_path / "tune.yaml"
    tune_exp.write_text(exp.read_text() + "tune: {sampler: random, params: [{name: optimizer.lr, low: 0.001, high: 0.01}]}\n")
    r = _lb("tune", str(tune_exp), "--study-name", "../../x", "--synthetic", "--quick", "--n-trials", "1",
            "--out", str(out), env=env, cwd=tmp_path)
    assert r.returncode == 2 and "--study-name" in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "a" / "x").exists()
    # a verify root that does not exist, or holds none of the dataset's folders
    for root in (tmp_path / "nowhere", tmp_path):
        r = _lb("data", "verify", "isic2018", "--root", str(root), env=env, cwd=tmp_path)
        assert r.returncode == 2 and str(root) in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_verify_with_errors_exits_1(synthetic_env: Path, tmp_path: Path) -> None:
    root = tmp_path / "isic2018"
    shutil.copytree(synthetic_env / "isic2018", root)
    mask = sorted(root.glob("ISIC2018_Task1_Training_GroundTruth/*.png"))[0]
    Image.fromarray(np.full((8, 8), 128, dtype=np.uint8)).save(mask)
    r = _lb("data", "verify", "isic2018", "--root", str(root), env=_env(synthetic_env, tmp_path), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"ERROR {mask}" in r.stdout and "FAILED" in r.stdout


@pytest.mark.slow
def test_failed_run_exits_1_after_summary_with_plain_lines(synthetic_env: Path, tmp_path: Path) -> None:
    """stdout to a pipe: one flushed line per run event; the failure reason in full; wandb never imported."""
    ok = _experiment(tmp_path / "ok.yaml")
    missing = tmp_path / ("encoder-weights-folder-with-a-long-name-" * 2) / "resnet18-weights.pth"
    bad = _experiment(tmp_path / "bad.yaml", model="smp:Unet/resnet18", options=f"{{weights: {missing}}}")
    out, err_log = tmp_path / "results", tmp_path / "stderr.txt"
    env = _env(synthetic_env, tmp_path, PYTHONPROFILEIMPORTTIME="1")  # -X importtime: every import on stderr
    with open(err_log, "w") as err:
        proc = subprocess.Popen([LB, "run", str(ok), str(bad), "--synthetic", "--out", str(out)], env=env,
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=err, text=True)
        first = proc.stdout.readline()
        assert first.strip() == "[1/2] ok__s42: started" and proc.poll() is None, "a line as it happens, not at exit"
        rest = proc.stdout.read()
        proc.wait(timeout=300)
    lines = [first.strip(), *rest.splitlines()]
    assert proc.returncode == 1, "\n".join(lines)
    reason = f"{missing}: encoder weights file not found"
    assert any(line.startswith("[1/2] ok__s42: finished, test dice ") for line in lines), lines
    assert f"[2/2] bad__s42: failed: LesionBenchError: {reason}" in lines or any(
        line.startswith("[2/2] bad__s42: failed:") and reason in line for line in lines), lines
    summary = next(i for i, line in enumerate(lines) if "1/2 runs done" in line)
    assert any(reason in line and line.startswith("  bad__s42: ") for line in lines[summary:]), lines[summary:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in err_log.read_text().splitlines() if "|" in line]
    assert "segmentation_models_pytorch" in imported  # timm was imported (it tries `import wandb`) ...
    assert not [m for m in imported if m.startswith("wandb.")], "... but wandb loads only for the wandb logger"
    # re-run: the finished run is skipped, the failed one fails again, the exit code says so
    r = _lb("run", str(ok), "--synthetic", "--out", str(out), env=_env(synthetic_env, tmp_path), cwd=tmp_path)
    assert r.returncode == 0 and "[1/1] ok__s42: skipped (finished)" in r.stdout.splitlines(), r.stdout + r.stderr


@pytest.mark.slow
def test_ctrl_c_mid_training_exits_130_with_message(synthetic_env: Path, tmp_path: Path) -> None:
    exp = _experiment(tmp_path / "long.yaml", epochs=500)
    out = tmp_path / "results"
    proc = subprocess.Popen([LB, "run", str(exp), "--synthetic", "--out", str(out)], env=_env(synthetic_env, tmp_path),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not list(out.rglob("last.ckpt")):  # an epoch has been trained and checkpointed: training is under way
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted: finished runs are kept" in stderr and "Traceback" not in stderr


def test_failure_lines_are_printed_in_full_below_the_table() -> None:
    """On a terminal the table cell is cut; the full reason follows the table."""
    from types import SimpleNamespace

    from rich.console import Console

    from lesionbench.progress import CELL, RunProgress

    runs = [SimpleNamespace(name=n, config=SimpleNamespace(dataset=SimpleNamespace(name="isic2018"),
                                                           model=SimpleNamespace(name="unet"))) for n in ("a", "b")]
    console = Console(force_terminal=True, width=100, record=True)
    reason = "LesionBenchError: " + "/some/long/folder" * 8 + "/weights.pth: encoder weights file not found"
    assert len(reason) > CELL
    with RunProgress(runs, "results/x", console) as view:
        view.update("a", "running", {})
        view.update("a", "finished", {"dice": 0.5, "seconds": 3})
        view.update("b", "running", {})
        view.update("b", "failed", {"error": reason})
    assert view.finish({"a": "finished", "b": "failed"}, "results/x/leaderboard.md") == ["b"]
    assert f"  b: {reason}" in console.export_text().splitlines()
