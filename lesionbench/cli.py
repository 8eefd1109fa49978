"""The `lesionbench` command: parse, call, print. All work happens in the package's rooms.

Exit codes: 0 all good; 1 a run or check failed (after the summary); 2 bad input (one line);
130 interrupted (finished runs are kept).
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

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


# Not a terminal (a pipe, a log): lines are never wrapped at 80 columns, so scripts and grep see whole lines.
console = Console(quiet=not _rank_zero(), soft_wrap=not sys.stdout.isatty())
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


SuiteOpt = Annotated[Optional[str], typer.Option("--suite", help="Suite: a bundled name (demo, matrix, ...; found "
                     "from any folder), a suite file's path, or the name `run --models` printed")]


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _planned(experiments: Optional[list[Path]], suite: Optional[str], models: Optional[str], dataset: Optional[str],
             seeds: Optional[str], overrides: list[str], quick: bool, synthetic: bool) -> tuple:
    """(the suite or None, every planned run): from --suite, --models/--dataset, and experiment files or names."""
    from lesionbench.studies.suite import expand_experiment, expand_suite, load_suite, models_suite

    example = "e.g. lesionbench run --models unet,unet-residual,pspnet --dataset kvasir-seg"
    if (models or dataset or seeds) and not (models and dataset):
        raise LesionBenchError(f"--models and --dataset go together ({example})")
    if models and suite:
        raise LesionBenchError("give --suite or --models, not both")
    if not (experiments or suite or models):
        raise LesionBenchError(f"give experiment files or names, --suite NAME or --models ({example}; "
                               "lesionbench run --suite demo)")
    if seeds and not all(s.lstrip("-").isdigit() for s in _csv(seeds)):
        raise LesionBenchError(f"--seeds {seeds!r}: give integers, e.g. --seeds 0,1,2")
    loaded = (models_suite(_csv(models), _csv(dataset), [int(s) for s in _csv(seeds)] if seeds else None)
              if models else load_suite(suite) if suite else None)
    runs = expand_suite(loaded, overrides, quick, synthetic) if loaded is not None else []
    for exp in experiments or []:
        runs += expand_experiment(exp, overrides, quick, synthetic)
    return loaded, runs


def _preflight(runs: list, check_data: bool) -> None:
    """Every problem that would stop a run, one line each, then exit 2: before anything trains."""
    from lesionbench.studies.preflight import problems

    found = problems(runs, check_data=check_data)
    for line in found:
        _print_error(line)
    if found:
        raise typer.Exit(EXIT_BAD_INPUT)


def _plan_row(r) -> list[str]:
    c = r.config
    return [r.name, c.dataset.name, c.model.name, str(c.dataset.image_size),
            str(sum(p.epochs for p in c.resolved_phases())), str(len(c.resolved_phases())), str(c.trainer.seed)]


def _for_workers(experiments: Optional[list[Path]], suite: Optional[str], built, suite_dir: Path) -> tuple:
    """Experiments and suite as files a worker process finds from anywhere; a --models suite is saved in its
    results folder (`status --suite NAME` and the workers read it back)."""
    from lesionbench.bundled import find_experiment, find_suite

    experiments = [find_experiment(e).resolve() for e in experiments or []]
    if built is not None:
        from lesionbench.io import atomic_write_text
        from lesionbench.studies.status import SUITE_FILE

        suite_dir.mkdir(parents=True, exist_ok=True)
        path = atomic_write_text(suite_dir / SUITE_FILE, "# written by `lesionbench run --models`\n"
                                 + _yaml(built.model_dump(exclude_defaults=True)))
        return experiments, str(path.resolve())
    path = find_suite(suite) if suite else None
    return experiments, str(path.resolve()) if path is not None and (Path(suite).suffix or "/" in suite) else suite


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


@app.command()
def run(
    experiments: Annotated[Optional[list[Path]], typer.Argument(help="Experiment YAML files or bundled names, "
                                                                "e.g. kvasir_resnet50_unet")] = None,
    suite: SuiteOpt = None,
    models: Annotated[Optional[str], typer.Option("--models", help="Compare these models on --dataset with the "
                      "fair recipe (experiments/_fair_base.yaml), e.g. unet,unet-residual,pspnet")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Dataset(s) of --models, e.g. kvasir-seg")] = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Seeds of --models (default 0,1,2)")] = None,
    out: Out = Path("results"),
    set_: SetOpt = None,
    quick: Quick = False,
    synthetic: Synth = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and list the runs, train nothing")] = False,
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
    """Train and test experiments, a suite, or a few models on one dataset; finished runs are skipped on re-run.

    Experiments and suites are files or bundled names, found from any folder. Every run is checked (model,
    options, weights, data root) before the first trains. Any number of `run` processes may share one --out.
    Example: lesionbench run --models unet,unet-residual,pspnet --dataset kvasir-seg ;
    lesionbench run --suite demo ; lesionbench run isic2018_fct_resnet50 --synthetic --quick ;
    lesionbench run --suite path/to/my_suite.yaml --dry-run
    Scale out: lesionbench run --suite matrix --workers 4 --gpus 0,1,2,3 ; lesionbench run --suite matrix --slurm
    """
    from lesionbench.studies.preflight import fetch_all
    from lesionbench.studies.suite import cross_evaluate, leaderboard_due, run_all, suite_dir_name

    _quiet()
    overrides = list(set_ or []) + _logger_overrides(logger, wandb_checkpoints)
    loaded, runs = _planned(experiments, suite, models, dataset, seeds, overrides, quick, synthetic)
    name = loaded.name if loaded is not None else "adhoc"
    suite_dir = out / suite_dir_name(name, quick, synthetic)
    _preflight(runs, check_data=not slurm)
    if dry_run:
        from lesionbench.cli_scale import print_rows

        print_rows(console, f"{len(runs)} runs → {suite_dir}", ["run", "dataset", "model", "size", "epochs", "phases",
                                                                "seed"], [_plan_row(r) for r in runs])
        return
    experiments, suite = _for_workers(experiments, suite, loaded if models else None, suite_dir)
    if not (slurm or worker):
        fetch_all(runs)  # weights an offline machine lacks: one line before anything trains
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

    with RunProgress(runs, str(suite_dir), console) as view:
        statuses = run_all(runs, suite_dir, name, view.update, progress=view.bars)
        cross_evaluate(runs, suite_dir, view.update)  # runs finished earlier whose evaluations are missing
    due = leaderboard_due(statuses, suite_dir)  # whoever completes the suite writes it, once
    written = _write_leaderboard(suite_dir) if due else None
    board = suite_dir / "leaderboard.md"
    failed = view.finish(statuses, f"{written} (written)" if written else f"{board} (unchanged)" if board.is_file()
                         else "not written (no run finished)")
    if models:
        flags = " --quick" * quick + " --synthetic" * synthetic + (f" --out {out}" if out != Path("results") else "")
        view.plain(f"this comparison is the suite {name}: lesionbench status --suite {name}{flags} ; "
                   f"lesionbench leaderboard --suite {name}{flags}")
    if failed:
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
    suite: Annotated[str, typer.Option("--suite", help="As given to `run` (a bundled name or a suite file), the name "
                                       "`run --models` printed, or a results folder's name (a tune study's)")] = "demo",
    out: Out = Path("results"),
    quick: Quick = False,
    synthetic: Synth = False,
) -> None:
    """Regenerate results/<suite>/leaderboard.md from the run folders.

    Example: lesionbench leaderboard --suite demo ; lesionbench leaderboard --suite path/to/my_suite.yaml --quick
    """
    from lesionbench.studies.status import suite_folder

    found = suite_folder(suite, out, quick, synthetic)
    if not found.folder.is_dir():
        raise LesionBenchError(f"{found.folder}: no such results folder (run `lesionbench run --suite {suite}` first)")
    if found.note:
        _print_note(found.note)
    path = _write_leaderboard(found.folder)
    console.print(path.read_text() if path else "")
    console.print(f"written: {path}")


@app.command()
def plan(
    suite: Annotated[str, typer.Option("--suite", help="A finished suite (the pilot): a bundled name, a suite "
                                       "file or a results folder's name")],
    detect: Annotated[float, typer.Option("--detect", help="The true gap in the primary metric to find 80% of "
                                          "the time, e.g. 0.02")] = 0.02,
    out: Out = Path("results"),
    quick: Quick = False,
    synthetic: Synth = False,
) -> None:
    """Seeds per model the leaderboard's test needs to find a gap, from a finished suite's own seed SD.

    Example: lesionbench plan --suite kvasir-cpu --detect 0.02
    """
    from lesionbench.cli_scale import print_rows
    from lesionbench.reporting.seedplan import plan_seeds
    from lesionbench.studies.status import suite_folder

    found = suite_folder(suite, out, quick, synthetic)
    if not found.folder.is_dir():
        raise LesionBenchError(f"{found.folder}: no such results folder (run `lesionbench run --suite {suite}` first)")
    try:
        plans = plan_seeds(found.folder, detect)
    except ValueError as err:
        raise LesionBenchError(str(err)) from None
    if not plans:
        raise LesionBenchError(f"{found.folder}: no finished runs to plan from (run the suite first)")

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    rows = [[p.dataset, p.metric, str(p.rows), str(p.seeds_now), num(p.pooled_seed_sd, ".4f"), num(p.detect_sd, ".2f"),
             "-" if p.seeds_needed is None else str(p.seeds_needed), num(p.power_at_needed, ".0%"),
             num(p.power_now, ".0%"), num(p.gap_found_now, ".4f"), p.note] for p in plans]
    print_rows(console, f"seeds to find a gap of {detect:g} 80% of the time ({found.folder})",
               ["Dataset", "Metric", "Rows", "Seeds now", "Seed SD (pooled)", "Gap in SDs", "Seeds needed",
                "Power then", "Power now", "Gap found now (80%)", "Note"], rows)
    for p in plans:
        if p.seeds_needed is not None:
            console.print(f"{p.dataset}: {p.seeds_needed} seeds per model find a gap of {detect:g} in {p.metric} "
                          f"{p.power_at_needed:.0%} of the time (simulated, this suite's seed SD "
                          f"{p.pooled_seed_sd:.4f}); today's {p.seeds_now} find {p.gap_found_now:.4f}.",
                          markup=False, highlight=False)


def _print_note(text: str) -> None:
    """A note beside a command's output, on stderr: scripts reading stdout see only the output."""
    Console(stderr=True, soft_wrap=True).print(f"note: {text}", markup=False, highlight=False)


@app.command()
def status(
    suite: SuiteOpt,
    out: Out = Path("results"),
    set_: SetOpt = None,
    quick: Quick = False,
    synthetic: Synth = False,
) -> None:
    """Finished / running (worker, host) / failed / waiting runs of a suite, read from its run folders alone.

    The same --suite as `run` (name or file); a run finished with other --set values is listed as finished.
    Example: lesionbench status --suite demo ; lesionbench status --suite matrix --out /shared/results
    """
    from lesionbench.cli_scale import print_states
    from lesionbench.studies.status import flag_failed, suite_folder, suite_status
    from lesionbench.studies.suite import expand_suite, load_suite

    found = suite_folder(suite, out, quick, synthetic)
    if found.suite is None:
        load_suite(suite)  # not a suite: its one-line error, with the known names
    if found.note:
        _print_note(found.note)
    runs = expand_suite(found.suite, list(set_ or []), found.quick, found.synthetic)
    print_states(console, flag_failed(suite_status(runs, found.folder), found.folder), str(found.folder))


@app.command()
def models(
    smp_counts: Annotated[bool, typer.Option("--smp-counts/--no-smp-counts",
                          help="Also count the smp matrix rows (builds each one: about a minute)")] = False,
) -> None:
    """List every registered model with its input size, parameters and deep-supervision heads.

    Example: lesionbench models --smp-counts
    """
    from lesionbench.cli_scale import print_rows
    from lesionbench.models import list_models

    rows = [[info.name, info.source, str(info.input_size), f"{info.params:,}" if info.params else "—", str(info.heads)]
            for info in list_models(with_params="all" if smp_counts else True)]
    print_rows(console, "LesionBench models", ["name", "from", "input", "params", "heads"], rows)
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
    experiment: Annotated[Path, typer.Argument(help="Experiment with a tune: section: a YAML file or a bundled "
                                               "name, e.g. kvasir_resnet50_unet")],
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

    Example: lesionbench tune kvasir_resnet50_unet --synthetic --quick
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
    from lesionbench.cli_scale import print_rows
    from lesionbench.reporting.trials import ranked_trials

    metric = result.metric
    rows = [[str(t["number"]), t["state"], str(t["params"]), f"{t['value']:.4f}" if t["value"] is not None else "",
             f"{t['test']:.4f}" if t.get("test") is not None else "", t.get("reason") or ""]
            for t in ranked_trials(result.trials, result.direction)]
    print_rows(console, f"Study {result.study_name}: {len(rows)} trials, best first",
               ["trial", "state", "params", metric, "test dice", "note"], rows)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    if result.best:
        console.print(f"best: trial {result.best['number']} {metric}={result.best['value']:.4f} {result.best['params']}",
                      markup=False, highlight=False)
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
    except OSError as err:  # a read-only folder or a full disk met outside the commands' own checks: one line
        from lesionbench.io import refused_write

        refused = refused_write(err)
        if refused is None:
            raise
        _print_error(str(refused))
        code = EXIT_BAD_INPUT
    if code == EXIT_INTERRUPTED:
        Console(stderr=True).print("interrupted: finished runs are kept; re-run the same command to resume",
                                   highlight=False)
    sys.exit(code)


if __name__ == "__main__":
    main()
