"""Scale-out printing for the `lesionbench` command: local workers, SLURM submission, `status`.

Kept apart from cli.py (which parses) so the command file stays thin; all work happens in studies/.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lesionbench.errors import LesionBenchError
from lesionbench.studies.slurm import SlurmOptions
from lesionbench.studies.status import RunState, suite_status, summary
from lesionbench.studies.suite import PlannedRun, leaderboard_due, run_all


def run_args(experiments: list[Path] | None, suite: str | None, out: Path, overrides: list[str], quick: bool,
             synthetic: bool) -> list[str]:
    """`run` arguments a worker repeats, with absolute paths (SLURM tasks start in the same folder anyway)."""
    args = [str(Path(e).resolve()) for e in experiments or []]
    if suite:
        args += ["--suite", str(Path(suite).resolve()) if Path(suite).suffix else suite]
    args += ["--out", str(out.resolve())]
    for item in overrides:
        args += ["--set", item]
    return args + (["--quick"] if quick else []) + (["--synthetic"] if synthetic else [])


def state_table(states: list[RunState], title: str) -> Table:
    table = Table(title=title, caption=summary(states))
    for col in ("run", "state", "worker", "host", "detail"):
        table.add_column(col, overflow="fold")
    colours = {"finished": "green", "running": "cyan", "stale": "yellow", "failed": "red", "waiting": "dim"}
    for s in states:
        table.add_row(s.run, f"[{colours[s.state]}]{s.state}[/]", s.worker, s.host, s.detail)
    return table


def print_states(console: Console, states: list[RunState], title: str) -> None:
    """A table on a terminal; one tab-separated line per run otherwise (for scripts and logs)."""
    if console.is_terminal:
        console.print(state_table(states, title))
        return
    for s in states:  # Rich would expand the tabs
        print("\t".join([s.run, s.state, s.worker, s.host, s.detail]), file=console.file)
    print(f"{title}: {summary(states)}", file=console.file, flush=True)


def print_rows(console: Console, title: str, header: list[str], rows: list[list[str]]) -> None:
    """Any table, as `status` prints its own: a Rich table on a terminal; elsewhere (a pipe, a file) one
    tab-separated line per row, never wrapped or cut, then the title (``... | grep NAME`` finds whole rows)."""
    if console.is_terminal:
        table = Table(title=title)
        for col in header:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))  # cells are plain text, never markup
        console.print(table)
        return
    for row in rows:
        print("\t".join(" ".join(cell.split()) for cell in row), file=console.file)
    print(title, file=console.file, flush=True)


def run_workers(console: Console, args: list[str], n: int, gpus: str | None, runs: list[PlannedRun],
                suite_dir: Path) -> None:
    """`run --workers N`: one combined view fed by the run folders; the exit code says whether all succeeded."""
    from lesionbench.studies.workers import launch

    devices = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else None
    title = f"LesionBench · {suite_dir} · {n} workers"
    seen: dict[str, str] = {}
    live = Live(console=console, refresh_per_second=2) if console.is_terminal else None

    def on_poll(states: list[RunState]) -> None:
        if live is not None:
            live.update(state_table(states, title))
            return
        for s in states:  # plain lines: each change once
            if seen.get(s.run) != s.state:
                seen[s.run] = s.state
                console.print(f"{s.run}: {s.state} {s.worker} {s.detail}".rstrip(), markup=False, highlight=False)

    if live is not None:
        live.start()
    try:
        ends = launch(args, n, devices, runs, suite_dir, on_poll)
    finally:
        if live is not None:
            live.stop()
    console.print(f"worker logs: {suite_dir / 'workers'}; per-run logs: <run>/logs/worker.log; "
                  f"leaderboard: {suite_dir / 'leaderboard.md'}", markup=False, highlight=False)
    for end in ends:
        if end.code:
            console.print(end.describe(), markup=False, highlight=False, soft_wrap=True)
    ours = {end.worker: end.index for end in ends}  # all have exited: a claim of theirs is left, not running
    left = [f"{s.run} (left by worker {ours[s.worker]})" if s.worker in ours else f"{s.run} ({s.state})"
            for s in suite_status(runs, suite_dir) if s.state != "finished"]
    if left:
        console.print(f"{len(left)} of {len(runs)} runs not finished: {', '.join(left)}; re-run the same command to "
                      "finish them", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if any(end.code for end in ends):
        console.print(f"all {len(runs)} runs finished: the other workers took over", markup=False, highlight=False)


def run_worker(console: Console, runs: list[PlannedRun], suite_dir: Path, suite: str, worker: str, index: int,
               exit_when_idle: bool = False) -> None:
    """One worker (started by --workers or a SLURM array task): plain lines, logs in each run folder.

    It returns once every run of the suite is settled, waiting for runs other workers hold so that it takes over one
    they release or leave silent (a cancelled or killed task); whichever worker settles the last run writes the
    leaderboard. (``--exit-when-idle``, in submit scripts written before, means the same now.)
    """
    signal.signal(signal.SIGTERM, _interrupt)  # scancel / requeue: release the claim, keep last.ckpt
    import torch

    from lesionbench.settings import settings

    env = settings()
    if env.threads:
        torch.set_num_threads(env.threads)
    print(f"[{worker}] started: {torch.get_num_threads()} CPU threads, "
          f"CUDA_VISIBLE_DEVICES={env.cuda_visible_devices or '(all)'}", flush=True)

    def update(name: str, status: str, extra: dict) -> None:
        detail = extra.get("error") or (f"dice {extra['dice']:.4f}" if extra.get("dice") is not None else "")
        print(f"[{worker}] {name}: {status} {detail}".rstrip(), flush=True)

    statuses = run_all(runs, suite_dir, suite, update, progress=False, worker=worker, run_logs=True, offset=index)
    if leaderboard_due(statuses, suite_dir):
        from lesionbench.reporting.leaderboard import write_leaderboard

        print(f"[{worker}] suite complete: leaderboard {write_leaderboard(suite_dir)}", flush=True)
    if "failed" in statuses.values():
        raise typer.Exit(1)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def submit_slurm(console: Console, args: list[str], runs: list[PlannedRun], suite_dir: Path,
                 base: SlurmOptions | None, status_hint: str, **flags) -> None:
    """`run --slurm`: one job array, then return with the job id and how to watch it."""
    from lesionbench.lifecycle import is_finished
    from lesionbench.studies.slurm import array_size, merge, render_script, submit

    if not runs:
        raise LesionBenchError("--slurm: the suite has no runs to submit")
    left = [r for r in runs if not is_finished(suite_dir / r.name, r.config)]
    if not left:
        console.print(f"--slurm: all {len(runs)} runs in {suite_dir} are finished; nothing submitted "
                      f"(`lesionbench leaderboard` rewrites the board)", markup=False, highlight=False, soft_wrap=True)
        return
    opts = merge(base, **flags)
    script = render_script(opts, [sys.executable, "-m", "lesionbench.cli", "run", *args], len(left), suite_dir,
                           Path.cwd())
    job, path = submit(script, suite_dir)
    tasks = array_size(opts, len(left))
    console.print(f"submitted job array {job} ({tasks} task{'s' if tasks > 1 else ''} for {len(left)} of "
                  f"{len(runs)} runs left): {path}", markup=False, highlight=False)
    console.print(f"watch: squeue -j {job}   |   lesionbench status {status_hint}   |   "
                  f"logs: {suite_dir / 'slurm'}/{job}_<task>.out", markup=False, highlight=False, soft_wrap=True)
