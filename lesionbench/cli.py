"""The `lesionbench` command: parse, call, print. All work happens in the package's rooms."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from lesionbench.errors import LesionBenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reproducible, fair benchmarks of lesion segmentation architectures.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: synthetic replicas, verification, downloads.")
app.add_typer(data_app, name="data")
# DDP workers re-run this command (Lightning's subprocess launcher): only rank zero prints.
console = Console(quiet=os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0")

Out = Annotated[Path, typer.Option("--out", help="Results folder (one sub-folder per suite)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: --set optimizer.lr=1e-4")]
Quick = Annotated[bool, typer.Option("--quick", help="Smoke run: 64 px, 16 images per split, 1 epoch per phase")]
Synth = Annotated[bool, typer.Option("--synthetic", help="Use the synthetic replica of every dataset")]


def _quiet() -> None:
    """Keep the terminal for our own progress; Lightning's tips go to the log files."""
    warnings.filterwarnings("ignore")
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
) -> None:
    """Train and test experiments or a whole suite; finished runs are skipped on re-run.

    Example: lesionbench run --suite demo ; lesionbench run experiments/isic2018_fct_resnet50.yaml --synthetic --quick
    """
    from lesionbench.studies.suite import expand_experiment, expand_suite, load_suite, run_all, suite_dir_name

    _quiet()
    if not experiments and not suite:
        raise LesionBenchError("give experiment files or --suite NAME (e.g. lesionbench run --suite demo)")
    overrides = list(set_ or [])
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
            table.add_column(col)
        for r in runs:
            c = r.config
            table.add_row(r.name, c.dataset.name, c.model.name, str(c.dataset.image_size),
                          str(sum(p.epochs for p in c.resolved_phases())), str(len(c.resolved_phases())), str(c.trainer.seed))
        console.print(table)
        return
    _ensure_synthetic(runs)
    rows: dict[str, list[str]] = {r.name: [r.name, r.config.dataset.name, r.config.model.name, "queued", "", ""] for r in runs}
    single = len(runs) == 1

    def render() -> Table:
        table = Table(title=f"LesionBench · {suite_dir}")
        for col in ("run", "dataset", "model", "status", "test dice", "time"):
            table.add_column(col)
        for row in rows.values():
            table.add_row(*row)
        return table

    started: dict[str, float] = {}

    def update(run_name: str, status: str, extra: dict) -> None:
        row = rows[run_name]
        started.setdefault(run_name, time.perf_counter())
        row[3] = status if status != "failed" else f"[red]failed[/]: {extra.get('error', '')[:80]}"
        if extra.get("dice") is not None:
            row[4] = f"{extra['dice']:.4f}"
        if "seconds" in extra:
            row[5] = f"{extra['seconds']:.0f}s"
        if live is not None:
            live.update(render())
        elif status != "running":
            console.print(f"{run_name}: {row[3]} {row[4]}")

    live = None
    if single:
        statuses = run_all(runs, suite_dir, name, update, progress=True)
    else:
        with Live(render(), console=console, refresh_per_second=2) as live:
            statuses = run_all(runs, suite_dir, name, update, progress=False)
    _write_leaderboard(suite_dir)
    failed = [k for k, v in statuses.items() if v == "failed"]
    console.print(f"[bold]{len(statuses) - len(failed)}/{len(statuses)} runs done[/]; leaderboard: {suite_dir / 'leaderboard.md'}")
    if failed:
        console.print(f"[red]{len(failed)} failed[/] (errors in each run's run.json / error.log): {', '.join(failed)}")
        raise typer.Exit(1)


def _ensure_synthetic(runs) -> None:
    from lesionbench.data.synthetic import default_root, ensure

    root = default_root().resolve()
    if any(r.config.dataset.name == "synthetic" or (r.config.dataset.root and Path(r.config.dataset.root).resolve() == root)
           for r in runs):
        ensure(root)


def _write_leaderboard(suite_dir: Path) -> Path | None:
    from lesionbench.reporting.leaderboard import write_leaderboard

    from lightning.fabric.utilities.rank_zero import rank_zero_only

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
    suite_dir = out / suite
    if not suite_dir.is_dir():
        raise LesionBenchError(f"{suite_dir}: no such results folder (run `lesionbench run --suite {suite}` first)")
    path = _write_leaderboard(suite_dir)
    console.print(path.read_text() if path else "")
    console.print(f"written: {path}")


@app.command()
def models() -> None:
    """List every registered model with its input size, parameters and deep-supervision heads.

    Example: lesionbench models
    """
    from lesionbench.models import list_models

    table = Table(title="LesionBench models")
    for col in ("name", "from", "input", "params", "heads"):
        table.add_column(col)
    for info in list_models():
        table.add_row(info.name, info.source, str(info.input_size),
                      f"{info.params:,}" if info.params else "—", str(info.heads))
    console.print(table)
    console.print("Any segmentation-models-pytorch model: smp:<Arch>/<encoder>, e.g. smp:DeepLabV3Plus/resnet50")


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
    from lesionbench.data import resolve_root
    from lesionbench.data.verify import verify

    report = verify(name, resolve_root(name, str(root) if root else None))
    for line in report.lines():
        console.print(line, markup=False, highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    root: Annotated[Optional[Path], typer.Option("--root", help="Where to unpack the archives")] = None,
) -> None:
    """Download the official archives (resumable, checksummed), unpack, verify.

    Example: lesionbench data download kvasir-seg --root ~/data
    """
    from lesionbench.data.download import download

    target = root or Path(os.environ.get("LESIONBENCH_DATA", "data"))
    download(name, target)


def main() -> None:
    """Entry point: user errors become one red line, never a traceback."""
    try:
        app(standalone_mode=False)
    except LesionBenchError as err:
        from rich.text import Text

        Console(stderr=True).print(Text.assemble(("error: ", "bold red"), str(err)), highlight=False)
        sys.exit(2)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted: finished runs are kept; re-run the same command to resume")
        sys.exit(130)
    except Exception as err:  # click usage errors
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
