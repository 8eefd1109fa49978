"""The `lesionbench` command: parse, call, print. All work happens in the package's rooms.

Exit codes: 0 all good; 1 a run or check failed (after the summary); 2 bad input (one line);
130 interrupted (finished runs are kept).
"""

from __future__ import annotations

import logging
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from lesionbench.config import safe_folder_name
from lesionbench.errors import LesionBenchError
from lesionbench.settings import settings

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reproducible, fair benchmarks of lesion segmentation architectures.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: synthetic replicas, verification, downloads.")
app.add_typer(data_app, name="data")
# DDP workers re-run this command (Lightning's subprocess launcher): only rank zero prints.
def _rank_zero() -> bool:
    try:
        return settings().is_rank_zero
    except LesionBenchError:  # a bad LESIONBENCH_* value: main() reports it as one line
        return True


console = Console(quiet=not _rank_zero())
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130

Out = Annotated[Path, typer.Option("--out", help="Results folder (one sub-folder per suite)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: --set optimizer.lr=1e-4")]
Quick = Annotated[bool, typer.Option("--quick", help="Smoke run: 64 px, 16 images per split, 1 epoch per phase")]
Synth = Annotated[bool, typer.Option("--synthetic", help="Use the synthetic replica of every dataset")]
LoggerOpt = Annotated[Optional[str], typer.Option("--logger", help="csv | wandb (same as --set trainer.logger=wandb)")]
WandbCkpt = Annotated[bool, typer.Option("--wandb-checkpoints",
                                          help="Upload the best checkpoint as a W&B artifact (= --set trainer.wandb_checkpoints=true)")]


def _logger_overrides(logger: Optional[str], wandb_checkpoints: bool) -> list[str]:
    """--logger and --wandb-checkpoints are overrides of trainer.logger and trainer.wandb_checkpoints."""
    if logger not in (None, "csv", "wandb"):
        raise LesionBenchError(f"--logger {logger!r}: expected csv or wandb")
    return [f"trainer.logger={logger}"] * (logger is not None) + ["trainer.wandb_checkpoints=true"] * wandb_checkpoints


#: Third-party notices that say nothing about a benchmark run: (message regex, category, module regex).
_NOISE: list[tuple[str, type[Warning], str]] = [
    (r"The '\w+_dataloader' does not have many workers", UserWarning, r"lightning\."),
    (r"The number of training batches \(\d+\) is smaller than the logging interval", UserWarning, r"lightning\."),
    (r"Checkpoint directory .* exists and is not empty", UserWarning, r"lightning\."),
    (r"The `srun` command is available on your system but is not used", UserWarning, r"lightning\.fabric"),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", Warning, r"lightning\.pytorch\.utilities"),
    (r"`torch\.jit\.(script|interface)` is deprecated", FutureWarning, r"torch\.jit"),  # timm / nnU-Net decorators, at import
]


def _quiet() -> None:
    """Keep the terminal for our own progress: Lightning's tips go to the log files, and only the
    specific Lightning hints above are silenced (every other warning still shows)."""
    for message, category, module in _NOISE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    import lightning.pytorch  # noqa: F401 - it sets its loggers' levels on import; override after

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


@app.command()
def run(
    experiments: Annotated[Optional[list[Path]], typer.Argument(help="Experiment YAML files")] = None,
    suite: Annotated[Optional[str], typer.Option("--suite", help="Suite name in experiments/suites/")] = None,
    out: Out = Path("results"),
    set_: SetOpt = None,
    quick: Quick = False,
    synthetic: Synth = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs, train nothing")] = False,
    logger: LoggerOpt = None,
    wandb_checkpoints: WandbCkpt = False,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes on this machine (one GPU each)")] = 1,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPUs for --workers, e.g. 0,1,2,3 (default: all)")] = None,
    slurm: Annotated[bool, typer.Option("--slurm", help="Submit as one SLURM job array and return")] = False,
    partition: Annotated[Optional[str], typer.Option("--partition", help="SLURM partition")] = None,
    time_limit: Annotated[Optional[str], typer.Option("--time", help="SLURM time per task, e.g. 04:00:00")] = None,
    gpus_per_task: Annotated[Optional[int], typer.Option("--gpus-per-task", min=0, help="SLURM GPUs per task")] = None,
    cpus_per_task: Annotated[Optional[int], typer.Option("--cpus-per-task", min=1, help="SLURM CPUs per task")] = None,
    mem: Annotated[Optional[str], typer.Option("--mem", help="SLURM memory per task, e.g. 32G")] = None,
    parallelism: Annotated[Optional[int], typer.Option("--array-parallelism", min=1, help="SLURM tasks at once (%N)")] = None,
    sbatch: Annotated[Optional[list[str]], typer.Option("--sbatch", help="Extra sbatch option, e.g. --sbatch=--qos=long")] = None,
    worker: Annotated[Optional[str], typer.Option("--worker", hidden=True)] = None,
    worker_index: Annotated[int, typer.Option("--worker-index", hidden=True)] = 0,
    exit_when_idle: Annotated[bool, typer.Option("--exit-when-idle", hidden=True)] = False,
) -> None:
    """Train and test experiments or a whole suite; finished runs are skipped on re-run.

    Any number of `run` processes may share one --out: each run is claimed before it trains.
    Example: lesionbench run --suite demo ; lesionbench run experiments/isic2018_fct_resnet50.yaml --synthetic --quick
    Scale out: lesionbench run --suite matrix --workers 4 --gpus 0,1,2,3 ; lesionbench run --suite matrix --slurm
    """
    from lesionbench.studies.suite import (
        cross_evaluate,
        expand_experiment,
        expand_suite,
        leaderboard_due,
        load_suite,
        run_all,
        suite_dir_name,
    )

    _quiet()
    if not experiments and not suite:
        raise LesionBenchError("give experiment files or --suite NAME (e.g. lesionbench run --suite demo)")
    overrides = list(set_ or []) + _logger_overrides(logger, wandb_checkpoints)
    runs, name = [], suite or "adhoc"
    if suite:
        loaded = load_suite(suite)
        name = loaded.name
        runs += expand_suite(loaded, overrides, quick, synthetic)
    for exp in experiments or []:
        runs += expand_experiment(exp, overrides, quick, synthetic)
    suite_dir = out / suite_dir_name(name, quick, synthetic)
    if dry_run:
        table = Table(title=f"{len(runs)} runs → {suite_dir}")
        for col in ("run", "dataset", "model", "size", "epochs", "phases", "seed"):
            table.add_column(col, overflow="fold")
        for r in runs:
            c = r.config
            table.add_row(r.name, c.dataset.name, c.model.name, str(c.dataset.image_size),
                          str(sum(p.epochs for p in c.resolved_phases())), str(len(c.resolved_phases())), str(c.trainer.seed))
        console.print(table)
        return
    _ensure_synthetic(runs)
    if worker or slurm or workers > 1:
        from lesionbench import cli_scale

        args = cli_scale.run_args(experiments, suite, out, overrides, quick, synthetic)
        if worker:
            return cli_scale.run_worker(console, runs, suite_dir, name, worker, worker_index, exit_when_idle)
        if slurm:
            hint = f"--suite {suite} --out {out}" + (" --quick" if quick else "") + (" --synthetic" if synthetic else "")
            return cli_scale.submit_slurm(console, args, runs, suite_dir, loaded.slurm if suite else None, hint,
                                          partition=partition, time=time_limit, gpus_per_task=gpus_per_task,
                                          cpus_per_task=cpus_per_task, mem=mem, parallelism=parallelism,
                                          extra=sbatch or [])
        return cli_scale.run_workers(console, args, workers, gpus, runs, suite_dir)
    from lesionbench.progress import RunProgress

    since = time.time()
    with RunProgress(runs, str(suite_dir), console) as view:
        statuses = run_all(runs, suite_dir, name, view.update, progress=view.bars)
        cross_evaluate(runs, suite_dir, view.update)  # runs finished earlier whose evaluations are missing
    due = leaderboard_due(statuses, suite_dir, since)  # whoever completes the suite writes it, once
    if due:
        _write_leaderboard(suite_dir)
    if view.finish(statuses, str(suite_dir / "leaderboard.md") + (" (written)" if due else "")):
        raise typer.Exit(EXIT_FAILED)


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Option("--run", help="A finished run folder, e.g. results/generalisation/<run>")],
    dataset: Annotated[str, typer.Option("--dataset", help="Target dataset: isic2016, isic2017, isic2018, kvasir-seg, ...")],
    split: Annotated[str, typer.Option("--split", help="Part of the target's official split: test, val or train")] = "test",
    root: Annotated[Optional[str], typer.Option("--root", help="Target archives' folder; its test archive alone is enough (default: the run's dataset.root when it holds the target, else $LESIONBENCH_DATA)")] = None,
) -> None:
    """Score a finished run on another dataset's split; images the run trained or validated on are excluded.

    Writes <run>/eval/<dataset>/metrics.json, per_image.csv and excluded.json (skipped when made from the
    same weights and the same target files; when every image was seen in training, only excluded.json, and exit 2).
    Example: lesionbench evaluate --run results/generalisation/isic2018_unet__s0 --dataset isic2016
    """
    from lesionbench.config import NUM_CLASSES
    from lesionbench.studies.evaluate import evaluate_run

    _quiet()
    if dataset not in NUM_CLASSES:
        raise LesionBenchError(f"--dataset {dataset!r}: unknown (known: {', '.join(NUM_CLASSES)})")
    if split not in ("train", "val", "test"):
        raise LesionBenchError(f"--split {split!r}: use test, val or train")
    result = evaluate_run(run_dir, dataset, split, root=root)
    m = result.metrics
    score = f"{m.challenge.metric} {m.challenge.value:.4f}" if m.challenge else f"dice {m.per_image['dice']:.4f}"
    console.print(f"{result.status}: {run_dir.name} on {dataset}/{split}: {score} over {m.n_test} image(s); "
                  f"{m.excluded.count} of {m.excluded.of} excluded as seen in training/validation "
                  f"→ {result.folder}", markup=False, highlight=False, soft_wrap=True)


def _ensure_synthetic(runs) -> None:
    from lesionbench.data.synthetic import default_root, ensure

    root = default_root().resolve()
    if any(r.config.dataset.name == "synthetic" or (r.config.dataset.root and Path(r.config.dataset.root).resolve() == root)
           for r in runs):
        ensure(root)


def _write_leaderboard(suite_dir: Path) -> Path | None:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from lesionbench.reporting.leaderboard import write_leaderboard

    if not suite_dir.is_dir() or rank_zero_only.rank != 0:  # DDP workers leave it to rank zero
        return None
    return write_leaderboard(suite_dir)


@app.command()
def leaderboard(
    suite: Annotated[str, typer.Option("--suite", help="Suite folder name under --out")] = "demo",
    out: Out = Path("results"),
) -> None:
    """Regenerate results/<suite>/leaderboard.md from the run folders.

    Example: lesionbench leaderboard --suite demo
    """
    suite_dir = out / safe_folder_name(suite, "--suite")
    if not suite_dir.is_dir():
        raise LesionBenchError(f"{suite_dir}: no such results folder (run `lesionbench run --suite {suite}` first)")
    path = _write_leaderboard(suite_dir)
    console.print(path.read_text() if path else "")
    console.print(f"written: {path}")


@app.command()
def status(
    suite: Annotated[str, typer.Option("--suite", help="Suite name or file, as given to `run`")],
    out: Out = Path("results"),
    set_: SetOpt = None,
    quick: Quick = False,
    synthetic: Synth = False,
) -> None:
    """Finished / running (worker, host) / failed / waiting runs of a suite, read from its run folders alone.

    Example: lesionbench status --suite demo ; lesionbench status --suite matrix --out /shared/results
    """
    from lesionbench.cli_scale import print_states
    from lesionbench.studies.status import suite_status
    from lesionbench.studies.suite import expand_suite, load_suite, suite_dir_name

    loaded = load_suite(suite)
    runs = expand_suite(loaded, list(set_ or []), quick, synthetic)
    suite_dir = out / suite_dir_name(loaded.name, quick, synthetic)
    print_states(console, suite_status(runs, suite_dir), str(suite_dir))


@app.command()
def models(
    smp_counts: Annotated[bool, typer.Option("--smp-counts/--no-smp-counts",
                          help="Also count the smp matrix rows (builds each one: about a minute)")] = False,
) -> None:
    """List every registered model with its input size, parameters and deep-supervision heads.

    Example: lesionbench models --smp-counts
    """
    from lesionbench.models import list_models

    table = Table(title="LesionBench models")
    for col in ("name", "from", "input", "params", "heads"):
        table.add_column(col)
    for info in list_models(with_params="all" if smp_counts else True):
        table.add_row(info.name, info.source, str(info.input_size),
                      f"{info.params:,}" if info.params else "—", str(info.heads))
    console.print(table)
    console.print("Any segmentation-models-pytorch model: smp:<Arch>/<encoder>, e.g. smp:DeepLabV3Plus/resnet50")


RunDir = Annotated[Path, typer.Option("--run", help="Finished run folder, e.g. results/demo/<run>")]


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files (any size)")],
    run_dir: RunDir,
    out: Annotated[Path, typer.Option("--out", help="Folder for <stem>_mask.png and <stem>_overlay.png")] = Path("predictions"),
    tta: Annotated[bool, typer.Option("--tta", help="Average over horizontal and vertical flips")] = False,
    fmt: Annotated[str, typer.Option("--format", help="lesionbench, or isic: only <id>_segmentation.png / "
                                     "<id>_attribute_<name>.png, as the ISIC challenge accepts")] = "lesionbench",
    overlays: Annotated[Optional[Path], typer.Option("--overlays", help="Folder for overlays (isic: off unless given)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace files that already exist in --out")] = False,
) -> None:
    """Segment images with a trained run: binary masks (0/255) and overlays at each image's size.

    Example: lesionbench predict --run results/demo/<run> photo1.jpg photo2.png --out predictions --tta
    """
    from lesionbench.inference.predict import predict_files

    _quiet()
    written = predict_files(run_dir, images, out, tta=tta, fmt=fmt, overlays=overlays, overwrite=overwrite)
    console.print(f"{len(written)} files written to {out}")


@app.command()
def score(
    truth_dir: Annotated[Path, typer.Argument(help="Ground-truth masks: <id>_segmentation.png or <id>_attribute_<name>.png")],
    pred_dir: Annotated[Path, typer.Argument(help="Predicted masks (0/255), one per ground truth, same names")],
    task: Annotated[Optional[str], typer.Option("--task", help="segmentation | attribute (default: from the file names)")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table | json (the organisers' scorer's keys)")] = "table",
    dataset: Annotated[Optional[str], typer.Option(
        "--dataset", help="Read TRUTH_DIR as this dataset's own masks (e.g. kvasir-seg: <id>.jpg), pair by id, "
                          "headline its primary metric")] = None,
) -> None:
    """Score a folder of masks as the ISIC organisers' scorer does (same figures and JSON keys), plus HD95/ASSD.

    Example: lesionbench score ISIC2018_Task1_Test_GroundTruth predictions --output json ;
    lesionbench score data/kvasir-seg/Kvasir-SEG/masks predictions --dataset kvasir-seg
    """
    from lesionbench.reporting.score import score_dataset_folder, score_folder

    if dataset is not None:
        report = score_dataset_folder(truth_dir, pred_dir, dataset)
        typer.echo(report.to_json() if output == "json" else report.text)
        return

    if task not in (None, "segmentation", "attribute") or output not in ("table", "json"):
        raise LesionBenchError(f"score: --task must be segmentation or attribute (got {task!r}) and --output "
                               f"table or json (got {output!r})")
    report = score_folder(truth_dir, pred_dir, task)  # type: ignore[arg-type]
    typer.echo(report.to_json() if output == "json" else report.text)


@app.command()
def explain(
    run_dir: RunDir,
    image: Annotated[Path, typer.Option("--image", help="Image file")],
    method: Annotated[str, typer.Option("--method", help="cam | gradcam | gradcam++ | xgradcam | hirescam | layercam | eigencam | eigengradcam")] = "gradcam",
    layer: Annotated[Optional[str], typer.Option("--layer", help="last | bottleneck (default: last for cam, else bottleneck)")] = None,
    class_index: Annotated[int, typer.Option("--class", help="Output channel to explain (multi-label runs)")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Folder for the heatmap PNG")] = Path("explanations"),
) -> None:
    """CAM / Grad-CAM heatmap over an image (paper 004: CAM at the last layer, Grad-CAM at the bottleneck).

    Example: lesionbench explain --run results/demo/<run> --image photo.jpg --method gradcam --layer bottleneck
    """
    from lesionbench.inference.explain import explain_file

    _quiet()
    console.print(f"written: {explain_file(run_dir, image, out, method, layer, class_index)}")


@app.command()
def export(
    run_dir: RunDir,
    fmt: Annotated[str, typer.Option("--format", help="safetensors | onnx | torchscript")] = "safetensors",
    out: Annotated[Path, typer.Option("--out", help="Folder for the exported model")] = Path("exported"),
) -> None:
    """Export the run's best model; each export is checked against PyTorch (max |diff| <= 1e-4).

    Example: lesionbench export --run results/demo/<run> --format onnx --out exported/
    """
    from lesionbench.inference.export import export_run

    _quiet()
    console.print(f"written: {export_run(run_dir, fmt, out)}")


@app.command()
def tune(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML with a tune: section")],
    n_trials: Annotated[Optional[int], typer.Option("--n-trials", help="Trials for this worker (default: grid size, else tune.n_trials, else 20)")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Seconds after which no new trial starts")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Sampler seed (same on every worker)")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL (default sqlite:///<out>/<study>/study.db)")] = None,
    study_name: Annotated[Optional[str], typer.Option("--study-name", help="Study (and results folder) name")] = None,
    out: Out = Path("results"),
    synthetic: Synth = False,
    quick: Quick = False,
    set_: SetOpt = None,
    sampler: Annotated[Optional[str], typer.Option("--sampler", help="grid | tpe | random (default: the YAML's tune.sampler)")] = None,
    pruner: Annotated[Optional[str], typer.Option("--pruner", help="none | median | hyperband (default: tune.pruner)")] = None,
    heartbeat: Annotated[int, typer.Option("--heartbeat", min=1, help="Seconds between a trial's heartbeats; 4 missed: its worker is dead, the trial runs again")] = 30,
    logger: LoggerOpt = None,
    wandb_checkpoints: WandbCkpt = False,
) -> None:
    """Optuna study around the run function; re-run to continue it, start more workers to share it.

    Example: lesionbench tune experiments/kvasir_resnet50_unet.yaml --synthetic --quick
    """
    if study_name is not None:  # before the heavy imports: bad input fails fast
        safe_folder_name(study_name, "--study-name")
    from lesionbench.studies.tune import TuneOptions, run_study

    _quiet()
    if sampler not in (None, "grid", "tpe", "random") or pruner not in (None, "none", "median", "hyperband"):
        raise LesionBenchError("--sampler is grid | tpe | random; --pruner is none | median | hyperband")
    opts = TuneOptions(n_trials=n_trials, timeout=timeout, seed=seed, storage=storage, study_name=study_name, out=out,
                       synthetic=synthetic, quick=quick, sampler=sampler, pruner=pruner, heartbeat=heartbeat,
                       overrides=list(set_ or []) + _logger_overrides(logger, wandb_checkpoints))

    def on_trial(t) -> None:
        value = f"{t.value:.4f}" if t.value is not None else t.user_attrs.get("fail_reason", "")
        console.print(f"trial {t.number} {t.state.name.lower()}: {t.params} {value}", markup=False, highlight=False)

    if synthetic:
        from lesionbench.data.synthetic import default_root, ensure

        ensure(default_root())
    result = run_study(experiment, opts, on_trial=on_trial)
    table = Table(title=f"Study {result.study_name}")
    for col in ("trial", "state", "params", "val dice", "note"):
        table.add_column(col, overflow="fold")
    for t in result.trials:
        table.add_row(str(t["number"]), t["state"], str(t["params"]),
                      f"{t['value']:.4f}" if t["value"] is not None else "", t.get("reason") or "")
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    if result.best:
        console.print(f"best: trial {result.best['number']} val/dice={result.best['value']:.4f} {result.best['params']}")
        console.print(f"written: {result.best_yaml} (lesionbench run {result.best_yaml}), {result.study_dir / 'leaderboard.md'}")
    console.print(f"dashboard: optuna-dashboard {result.storage}", markup=False)


@app.command()
def bench(
    out: Annotated[Path, typer.Option("--out", help="Folder for perf.md and perf.json")] = Path("results"),
    quick: Annotated[bool, typer.Option("--quick", help="Tiny settings (smoke test, well under a minute)")] = False,
    models: Annotated[Optional[list[str]], typer.Option("--models", help="Models to time (repeatable)")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu | cuda")] = "cpu",
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model on both sides")] = False,
    epoch_images: Annotated[Optional[int], typer.Option("--epoch-images", min=1,
                            help="Training images of the timed ISIC 2018 epoch (default: 2594 on cuda)")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1,
                       help="CPU threads for both sides (default: auto, 1 on an oversubscribed machine)")] = None,
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Sections to run (repeatable): loader, "
                    "training, consumption, inference, epoch (default: all)")] = None,
    epoch_size: Annotated[Optional[str], typer.Option("--epoch-size", help="Network input of the timed epoch: "
                          "S or HxW, e.g. 768x1024 (default: 224)")] = None,
    epoch_batch: Annotated[Optional[int], typer.Option("--epoch-batch", min=1, help="Batch of the timed epoch")] = None,
) -> None:
    """Training throughput vs a bare PyTorch loop, cached vs uncached loader, inference latency.

    Example: lesionbench bench --quick --out /tmp/perf ; lesionbench bench --device cuda --compile ;
    lesionbench bench --device cuda --only epoch --epoch-size 768x1024 --epoch-batch 4 (`make gpu-check`)
    """
    from lesionbench.studies.bench import Settings, run_bench

    _quiet()
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise LesionBenchError(f"bench --device {device}: use cpu or cuda")
    parts = epoch_size.lower().split("x") if epoch_size else []
    size = tuple(int(x) for x in parts if x.isdigit())
    if epoch_size and (len(size) != len(parts) or len(size) not in (1, 2) or min(size) < 32):
        raise LesionBenchError(f"bench --epoch-size {epoch_size}: give S or HxW, each at least 32 (e.g. 224 or 768x1024)")
    try:
        settings = Settings.for_mode(quick, device, models=list(models) if models else None, compile=compile_,
                                     epoch_images=epoch_images, threads=threads, epoch_batch=epoch_batch,
                                     epoch_size=(size[0] if len(size) == 1 else size) if size else None,
                                     sections=tuple(only) if only else None)
    except ValueError as err:  # an unknown --only section
        raise LesionBenchError(str(err)) from None
    argv = ["lesionbench", "bench", *(["--quick"] if quick else []), "--out", str(out),
            *[x for m in models or [] for x in ("--models", m)], "--device", device, *(["--compile"] if compile_ else []),
            *(["--epoch-images", str(epoch_images)] if epoch_images else []), *(["--threads", str(threads)] if threads else []),
            *[x for o in only or [] for x in ("--only", o)], *(["--epoch-size", epoch_size] if epoch_size else []),
            *(["--epoch-batch", str(epoch_batch)] if epoch_batch else [])]
    if Path(sys.argv[0]).name == "lesionbench":  # the command as typed (e.g. by `make bench`)
        argv = ["lesionbench", *sys.argv[1:]]
    data = run_bench(out, settings, log=lambda msg: console.print(msg, markup=False, highlight=False), command=argv)
    for t in data["targets"]:
        console.print(f"{t['name']}: {t['measured']:.3g} (target {t['target']}) "
                      f"{'[green]met[/]' if t['met'] else '[red]missed[/]'}")
    console.print(f"written: {out / 'perf.md'}, {out / 'perf.json'}")


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option("--out", help="Folder for the replicas")] = Path("data/synthetic"),
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes)")] = 0,
    full_size: Annotated[bool, typer.Option("--full-size", help="Large images, for cache benchmarks")] = False,
) -> None:
    """Write synthetic replicas of every official dataset layout.

    Example: lesionbench data synth --out data/synthetic
    """
    from lesionbench.data.synthetic import write_all

    write_all(out, seed=seed, full_size=full_size)
    console.print(f"synthetic replicas written to {out}")


@data_app.command("verify")
def data_verify(
    name: Annotated[str, typer.Argument(help="isic2016 | isic2017 | isic2018 | isic2018-task2 | kvasir-seg | synthetic")],
    root: Annotated[Optional[Path], typer.Option("--root", help="Folder holding the unzipped archives")] = None,
) -> None:
    """Check counts, pairs, mask values, sizes and unreadable files; exit 1 on errors.

    Example: lesionbench data verify isic2018 --root ~/data
    """
    if root is not None and not root.is_dir():
        raise LesionBenchError(f"--root {root}: no such folder (give the folder holding the unzipped archives)")
    from lesionbench.data import resolve_root
    from lesionbench.data.verify import verify

    report = verify(name, resolve_root(name, str(root) if root else None))
    if not report.counts:  # a wrong root, not a damaged dataset
        raise LesionBenchError(report.errors[0])
    for line in report.lines():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    root: Annotated[Optional[Path], typer.Option("--root", help="Where to unpack the archives")] = None,
) -> None:
    """Download the official archives (resumable, checksummed), unpack, verify.

    Example: lesionbench data download kvasir-seg --root ~/data
    """
    from lesionbench.data.download import download

    target = root or settings().data or Path("data")
    download(name, target)


def _print_error(message: str) -> None:
    from rich.text import Text

    Console(stderr=True, soft_wrap=True).print(Text.assemble(("error: ", "bold red"), message), highlight=False)


def main() -> None:
    """Entry point: the exit code says what happened (see the module docstring), each with a message;
    user errors are one red line, never a traceback."""
    interrupted: list[int] = []

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.append(signum)  # Lightning turns Ctrl-C mid-fit into sys.exit(1): remember it was one
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        settings()  # a bad LESIONBENCH_* value is one line (exit 2) before any command starts
        app()  # typer: usage errors exit 2, typer.Exit(n) exits n, Ctrl-C inside a command exits 130
        code: int | str | None = 0
    except LesionBenchError as err:
        _print_error(str(err))
        code = EXIT_BAD_INPUT
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except SystemExit as err:
        code = EXIT_INTERRUPTED if interrupted else err.code
    if code == EXIT_INTERRUPTED:
        Console(stderr=True).print("interrupted: finished runs are kept; re-run the same command to resume",
                                   highlight=False)
    sys.exit(code)


if __name__ == "__main__":
    main()
