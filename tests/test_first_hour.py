"""A newcomer's first hour (issue 25 items 2-7, issue 24 section 5): what they type, from any folder.

Most tests drive the real `lesionbench` entry point in-process (its exit code and both streams), so they are fast;
those that train or start a process are marked slow. Downloads are monkeypatched: nothing here touches the network.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import pytest

import lesionbench

REPO = Path(__file__).resolve().parents[1]
LB = shutil.which("lesionbench") or str(Path(sys.executable).with_name("lesionbench"))
COMPARE = "compare_kvasir-seg_unet-vs-unet-residual-vs-pspnet"


def _cli(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `lesionbench ARGS` run through its real entry point, in this process."""
    from lesionbench.cli import main

    monkeypatch.setattr(sys, "argv", ["lesionbench", *args])
    handler = signal.getsignal(signal.SIGINT)
    try:
        main()
        code = 0
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
    finally:
        signal.signal(signal.SIGINT, handler)
    out, err = capfd.readouterr()
    return code, out, err


def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Every weights download fails as it does without network; returns the URLs and repos asked for."""
    import huggingface_hub
    import segmentation_models_pytorch.encoders as smp_encoders
    import torch.hub

    asked: list[str] = []

    def refuse(what: str, *args, **kwargs):
        asked.append(what)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty cache
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(smp_encoders, "hf_hub_download", refuse)  # smp's own name for it (before this change)

    def no_network(sock, address, *args, **kwargs):  # belt and braces: a download path not patched above fails here
        raise AssertionError(f"a test tried to reach the network: {address}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    return asked


# ----------------------------------------------------------------------------- item 2: a study's table

STUDY = {"study": "kvasir-tune", "metric": "val/dice", "direction": "maximize", "notes": [],
         "trials": [{"number": n, "state": "COMPLETE", "params": {"optimizer.lr": lr, "optimizer.weight_decay": wd},
                     "value": v, "test": t, "reason": None}
                    for n, lr, wd, v, t in ((0, 5e-4, 1e-4, 0.0146, 0.02), (1, 5e-4, 1e-3, 0.0477, 0.05),
                                            (2, 1e-3, 1e-4, 0.0210, 0.03), (3, 1e-3, 1e-3, 0.0239, 0.01))]}


@pytest.mark.timeout(60)
def test_a_study_board_lists_trials_best_first_never_as_seeds(tmp_path: Path) -> None:
    from lesionbench.reporting.leaderboard import write_leaderboard

    study = tmp_path / "kvasir-tune"
    study.mkdir()
    (study / "study.json").write_text(json.dumps(STUDY))
    text = write_leaderboard(study).read_text()  # what `lesionbench leaderboard --suite kvasir-tune` writes
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[1] for row in rows] == ["1", "3", "2", "0"], text  # trial numbers, best first
    assert rows[0].startswith("| 1 | 1 | 0.0005 | 0.001 | 0.0477 | 0.0500 | COMPLETE"), rows[0]
    assert "| Rank | Trial | optimizer.lr | optimizer.weight_decay | val/dice | Test dice | State |" in text
    for seed_word in ("Seeds", "±", "95% CI", "SD n/a", "seed-aware", "vs best"):
        assert seed_word not in text, f"a study is not a multi-seed table: {seed_word!r} in\n{text}"


# ----------------------------------------------------------------------------- item 3: offline weights

@pytest.mark.timeout(120)
def test_run_offline_names_the_weights_the_url_and_the_fix(synthetic_env: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    asked = _offline(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(monkeypatch, capfd, "run", "kvasir_resnet50_unet", "--synthetic", "--out", "results")
    assert code == 2, out + err
    assert asked == ["https://download.pytorch.org/models/resnet50-0676ba61.pth"]
    line = err.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in err, err
    for part in ("torchvision:ResNet50_Weights.IMAGENET1K_V1", "could not be fetched from "
                 "https://download.pytorch.org/models/resnet50-0676ba61.pth", "Name or service not known",
                 "--set model.options.weights=none", "a local file", str(tmp_path / "torch-home")):
        assert part in line, line
    assert not (tmp_path / "results").exists(), "nothing trained, nothing written"


@pytest.mark.timeout(120)
def test_tune_offline_is_one_line_before_any_trial(synthetic_env: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    asked = _offline(monkeypatch, tmp_path)
    code, out, err = _cli(monkeypatch, capfd, "tune", "kvasir_resnet50_unet", "--synthetic", "--out",
                          str(tmp_path / "results"))
    assert code == 2, out + err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "ResNet50_Weights.IMAGENET1K_V1" in err and "--set model.options.weights=none" in err
    assert asked == ["https://download.pytorch.org/models/resnet50-0676ba61.pth"]  # the refused download, no other
    assert not (tmp_path / "results").exists(), "no study was created"


@pytest.mark.timeout(120)
def test_hub_weights_offline_name_the_hub_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lesionbench.errors import LesionBenchError
    from lesionbench.models import create_model

    asked = _offline(monkeypatch, tmp_path)
    with pytest.raises(LesionBenchError) as err:
        create_model("smp:Unet/resnet34", weights="imagenet")
    assert asked == ["smp-hub/resnet34.imagenet"]
    for part in ("smp:resnet34.imagenet", "Hugging Face Hub repo smp-hub/resnet34.imagenet", "weights=none",
                 "Hugging Face cache"):
        assert part in str(err.value), err.value


# ----------------------------------------------------------------------------- item 4: compare models, one suite name

@pytest.mark.timeout(120)
def test_compare_three_models_on_kvasir_without_a_suite_file(synthetic_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capfd) -> None:
    monkeypatch.setenv("LESIONBENCH_DATA", str(synthetic_env))  # a Kvasir-SEG layout (the tiny replica)
    code, out, err = _cli(monkeypatch, capfd, "run", "--models", "unet,unet-residual,pspnet", "--dataset",
                          "kvasir-seg", "--dry-run")
    assert code == 0, out + err
    rows = [line.split("\t") for line in out.splitlines() if "\t" in line]
    assert [r[0] for r in rows] == [f"kvasir-seg_{m}__s{s}" for m in ("unet", "unet-residual", "pspnet")
                                    for s in (0, 1, 2)]
    assert {(r[1], r[3], r[4]) for r in rows} == {("kvasir-seg", "224", "40")}, "the fair recipe for every model"
    assert out.splitlines()[-1] == f"9 runs → {Path('results') / COMPARE}"


def _suite_file(tmp_path: Path) -> Path:
    exp = tmp_path / "tiny.yaml"
    exp.write_text("dataset: {name: isic2018, image_size: 32, augmentation: none, subset: 4}\n"
                   "model: {name: unet, options: {base_channels: 8}}\n"
                   "trainer: {epochs: 2, batch_size: 2, accelerator: cpu, devices: 1}\n")
    suite = tmp_path / "suites" / "mine.yaml"
    suite.parent.mkdir()
    suite.write_text(f"name: mine\nexperiments: [{exp}]\n")
    return suite


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_suite_name_for_run_status_and_leaderboard(synthetic_env: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    """A suite file run with --set: `status --suite FILE` (no --set) finds it finished; `leaderboard --suite`
    takes the same file, and the suite's name, from another folder."""
    suite, out = _suite_file(tmp_path), tmp_path / "results"
    code, stdout, err = _cli(monkeypatch, capfd, "run", "--suite", str(suite), "--synthetic", "--out", str(out),
                             "--set", "trainer.epochs=1")
    assert code == 0, stdout + err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, stdout, err = _cli(monkeypatch, capfd, "status", "--suite", str(suite), "--synthetic", "--out", str(out))
    assert code == 0 and stdout.splitlines()[0].split("\t")[:2] == ["tiny__s42", "finished"], stdout + err
    assert "other settings" in stdout
    code, stdout, err = _cli(monkeypatch, capfd, "status", "--suite", str(suite), "--out", str(out))  # no --synthetic
    assert code == 0 and "\tfinished\t" in stdout and "mine+synthetic" in err, stdout + err
    for value in (str(suite), "mine+synthetic"):
        code, stdout, err = _cli(monkeypatch, capfd, "leaderboard", "--suite", value, "--out", str(out),
                                 *(["--synthetic"] if value.endswith(".yaml") else []))
        assert code == 0 and f"written: {out / 'mine+synthetic' / 'leaderboard.md'}" in stdout, stdout + err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_models_comparison_is_found_again_by_the_name_it_printed(synthetic_env: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    out = tmp_path / "results"
    code, stdout, err = _cli(monkeypatch, capfd, "run", "--models", "unet", "--dataset", "isic2018", "--seeds", "0",
                             "--synthetic", "--quick", "--set", "model.options.base_channels=8", "--out", str(out))
    assert code == 0, stdout + err
    name = "compare_isic2018_unet"
    assert f"this comparison is the suite {name}: lesionbench status --suite {name} --quick --synthetic" in stdout
    monkeypatch.chdir(tmp_path)
    code, stdout, err = _cli(monkeypatch, capfd, "status", "--suite", name, "--out", str(out))  # no flags repeated
    assert code == 0 and stdout.splitlines()[0].split("\t")[:2] == ["isic2018_unet__s0", "finished"], stdout + err
    code, stdout, err = _cli(monkeypatch, capfd, "leaderboard", "--suite", name, "--out", str(out))
    assert code == 0 and f"written: {out / (name + '+synthetic+quick') / 'leaderboard.md'}" in stdout, stdout + err


# ----------------------------------------------------------------------------- item 5: a line per epoch in a log

def _fake_trainer(epoch: int, loss: float, dice: float | None) -> SimpleNamespace:
    import torch

    metrics = {"train/loss": torch.tensor(loss), **({"val/dice": torch.tensor(dice)} if dice is not None else {})}
    return SimpleNamespace(is_global_zero=True, sanity_checking=False, current_epoch=epoch, max_epochs=3,
                           callback_metrics=metrics)


@pytest.mark.timeout(60)
def test_epoch_lines_print_loss_metric_time_and_eta_when_not_a_terminal() -> None:
    from lesionbench.training.epoch_lines import EpochLines

    log = io.StringIO()
    lines = EpochLines("kvasir-seg_unet__s0", "train", "val/dice", stream=log)
    for epoch, (loss, dice) in enumerate([(0.61, 0.25), (0.42, None), (0.38, 0.5)]):
        lines.on_train_epoch_start(None, None)
        lines.on_train_epoch_end(_fake_trainer(epoch, loss, dice), None)
    got = log.getvalue().splitlines()
    assert len(got) == 3, got
    assert got[0].startswith("kvasir-seg_unet__s0 epoch 1/3: train loss 0.6100, val/dice 0.2500 (0 s; ETA 0 s"), got
    assert got[1].startswith("kvasir-seg_unet__s0 epoch 2/3: train loss 0.4200, val/dice — ("), got
    assert got[2].endswith("; last epoch)"), got

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    on_terminal = EpochLines("r", "train", "val/dice", stream=tty)
    on_terminal.on_train_epoch_start(None, None)
    on_terminal.on_train_epoch_end(_fake_trainer(0, 0.5, 0.5), None)
    assert tty.getvalue() == "", "a terminal keeps its own progress (bar or live table)"


@pytest.mark.timeout(120)
def test_every_training_phase_has_epoch_lines(tmp_path: Path) -> None:
    from lesionbench.config import load_config
    from lesionbench.training.epoch_lines import EpochLines
    from lesionbench.training.trainer import build_trainer

    cfg = load_config(None, ["model.name=unet", "trainer.accelerator=cpu", "trainer.devices=1"])
    phase = cfg.resolved_phases()[0]
    trainer, _ = build_trainer(cfg, phase, tmp_path / "ckpt", tmp_path / "run-a", [], progress=False)
    lines = [cb for cb in trainer.callbacks if isinstance(cb, EpochLines)]
    assert len(lines) == 1 and lines[0].label == "run-a" and lines[0].monitor.startswith("val/")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_piped_run_prints_each_epoch(synthetic_env: Path, tmp_path: Path) -> None:
    exp = _suite_file(tmp_path).parents[1] / "tiny.yaml"
    env = {**os.environ, "LESIONBENCH_SYNTHETIC": str(synthetic_env), "LESIONBENCH_WORKDIR": str(tmp_path / "w"),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([LB, "run", str(exp), "--synthetic", "--out", str(tmp_path / "r")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=280)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    epochs = [line for line in lines if line.startswith("tiny__s42 epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["tiny__s42 epoch 1/2", "tiny__s42 epoch 2/2"], lines
    assert "train loss " in epochs[0] and "val/" in epochs[0] and "ETA" in epochs[0]
    assert lines.index(epochs[0]) > lines.index("[1/1] tiny__s42: started")


# ----------------------------------------------------------------------------- item 6: bundled names from anywhere

@pytest.mark.timeout(120)
def test_bundled_experiments_and_suites_resolve_from_another_folder(synthetic_env: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    monkeypatch.chdir(tmp_path)  # no experiments/ here
    for args, first in ((["--suite", "demo"], "synthetic_smp-Unet-resnet34__s0"),
                        (["--suite", "experiments/suites/demo.yaml"], "synthetic_smp-Unet-resnet34__s0"),
                        (["kvasir_resnet50_unet", "--synthetic"], "kvasir_resnet50_unet__s42"),
                        (["experiments/kvasir_resnet50_unet.yaml", "--synthetic"], "kvasir_resnet50_unet__s42")):
        code, out, err = _cli(monkeypatch, capfd, "run", *args, "--quick", "--dry-run")
        assert code == 0 and out.split("\t")[0] == first, (args, out, err)
    code, out, err = _cli(monkeypatch, capfd, "run", "kvasir_resnet50_unett", "--dry-run")
    assert code == 2 and "kvasir_resnet50_unet" in err and "known:" in err, err


@pytest.mark.timeout(60)
def test_bundled_lookup_lives_below_reporting_and_studies() -> None:
    from lesionbench import bundled
    from lesionbench.reporting import leaderboard

    assert bundled.experiments_dir() == REPO / "experiments"
    assert "lesionbench.studies" not in Path(leaderboard.__file__).read_text()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_non_editable_install_finds_its_experiments_from_anywhere(tmp_path: Path) -> None:
    """Build the wheel, install it into a folder of its own, and run names and README paths from another cwd."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "lesionbench", "experiments"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                            str(src)], capture_output=True, text=True, timeout=200)
    if built.returncode != 0 and "No module named" in built.stderr:
        pytest.skip(f"no wheel build backend here: {built.stderr.strip().splitlines()[-1]}")
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("lesionbench-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)], check=True,
                   timeout=120)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "LESIONBENCH_SYNTHETIC": str(tmp_path / "synthetic")}
    env.pop("LESIONBENCH_EXPERIMENTS", None)
    where = tmp_path / "elsewhere"
    where.mkdir()
    probe = "import lesionbench, lesionbench.bundled as b; print(lesionbench.__file__); print(b.experiments_dir())"
    got = subprocess.run([sys.executable, "-c", probe], env=env, cwd=where, capture_output=True, text=True,
                         check=True, timeout=120).stdout.splitlines()
    assert got == [str(tmp_path / "site" / "lesionbench" / "__init__.py"), str(tmp_path / "site" / "experiments")]
    for args in (["--suite", "demo"], ["--suite", "experiments/suites/kvasir-seg.yaml", "--synthetic"],
                 ["kvasir_resnet50_unet", "--synthetic"]):
        done = subprocess.run([sys.executable, "-m", "lesionbench.cli", "run", *args, "--quick", "--dry-run"], env=env,
                              cwd=where, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and " runs → results/" in done.stdout, (args, done.stdout, done.stderr)


# ----------------------------------------------------------------------------- item 7: check before the first run

@pytest.mark.timeout(120)
def test_dry_run_refuses_unknown_models_and_options_one_line_each(synthetic_env: Path,
                                                                  monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    code, out, err = _cli(monkeypatch, capfd, "run", "--models", "unett,smp:Unet/resnet35,unet", "--dataset", "isic2018",
                          "--synthetic", "--set", "model.options.foo=1", "--dry-run")
    assert code == 2 and out == "", out + err
    lines = err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines), lines
    assert "'unett': unknown model (did you mean unet" in lines[0] and "isic2018_unett__s0 (+2 more)" in lines[0]
    assert "unknown smp encoder 'resnet35'" in lines[1] and "resnet34" in lines[1]
    assert "unknown option 'foo'" in lines[2] and "allowed: " in lines[2]


@pytest.mark.timeout(120)
def test_dry_run_checks_the_data_root_unless_synthetic(synthetic_env: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    monkeypatch.setenv("LESIONBENCH_DATA", str(tmp_path))  # no dataset here
    code, out, err = _cli(monkeypatch, capfd, "run", "--models", "unet", "--dataset", "kvasir-seg", "--dry-run")
    assert code == 2 and out == "", out + err
    assert len(err.strip().splitlines()) == 1 and f"Kvasir-SEG/images and Kvasir-SEG/masks not found under {tmp_path}" \
        in err, err
    code, out, err = _cli(monkeypatch, capfd, "run", "--models", "unet", "--dataset", "kvasir-seg", "--dry-run",
                          "--set", f"dataset.root={tmp_path / 'nowhere'}")
    assert code == 2 and f"data root {tmp_path / 'nowhere'} does not exist" in err, err
    code, out, err = _cli(monkeypatch, capfd, "run", "--models", "unet", "--dataset", "kvasir-seg", "--dry-run",
                          "--synthetic")
    assert code == 0, out + err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_leaderboard_path_is_printed_when_none_was_written(synthetic_env: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    exp = tmp_path / "bad.yaml"
    exp.write_text("dataset: {name: isic2018, image_size: 32, subset: 4}\n"
                   f"model: {{name: 'smp:Unet/resnet18', options: {{weights: {tmp_path / 'missing.pth'}}}}}\n"
                   "trainer: {epochs: 1, batch_size: 2, accelerator: cpu, devices: 1}\n")
    code, out, err = _cli(monkeypatch, capfd, "run", str(exp), "--synthetic", "--out", str(tmp_path / "results"))
    assert code == 1, out + err
    assert "leaderboard: not written (no run finished)" in out and "leaderboard.md" not in out, out
    assert not (tmp_path / "results" / "adhoc+synthetic" / "leaderboard.md").exists()


# ----------------------------------------------------------------------------- issue 24 section 5: whole lines

@pytest.mark.timeout(120)
def test_tables_print_one_full_line_per_row_when_piped(synthetic_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capfd) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = _cli(monkeypatch, capfd, "run", "--suite", "all", "--synthetic", "--dry-run")
    assert code == 0, out + err
    fct = [line for line in out.splitlines() if "fct-resnet50" in line]  # `... | grep fct-resnet50`
    assert fct and all(len(line.split("\t")) == 7 for line in fct), fct
    assert any(line.split("\t")[:3] == ["isic2018_fct_resnet50__s42", "isic2018", "fct-resnet50"] for line in fct)
    assert lesionbench.__name__ == "lesionbench"
