"""What `lesionbench run` shows while a suite runs: a live table on a terminal, plain lines elsewhere.

On a terminal the Rich table redraws in place (and a single run shows Lightning's bar). When
stdout is a pipe or a file (``make demo > log``, CI, SLURM) a live table draws nothing until the
end, so each run event is one plain, flushed line instead. Failure reasons are never cut: the
table shows the start of each, and the full lines follow the table.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

#: Characters of a failure reason shown inside the table (the full line follows it).
CELL = 80


class _Run(Protocol):
    name: str
    config: Any


class RunProgress:
    """Receives run_all's events (``update``) and prints them; ``finish`` prints the summary."""

    def __init__(self, runs: list[_Run], title: str, console: Console) -> None:
        self.console, self.title = console, title
        self.rows = {r.name: [r.name, r.config.dataset.name, r.config.model.name, "queued", "", ""] for r in runs}
        self.order = {r.name: i + 1 for i, r in enumerate(runs)}
        self.errors: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.live: Live | None = None

    @property
    def terminal(self) -> bool:
        return self.console.is_terminal

    @property
    def bars(self) -> bool:
        """Lightning's own progress bar: only for a single run on a terminal."""
        return self.terminal and len(self.rows) == 1

    def __enter__(self) -> RunProgress:
        if self.terminal and len(self.rows) > 1:
            self.live = Live(self.table(), console=self.console, refresh_per_second=2)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None

    def table(self) -> Table:
        table = Table(title=f"LesionBench · {self.title}")
        for col in ("run", "dataset", "model", "status", "test dice", "time"):
            table.add_column(col, overflow="fold")
        for row in self.rows.values():
            table.add_row(*row)
        return table

    def update(self, run_name: str, status: str, extra: dict[str, Any]) -> None:
        row = self.rows[run_name]
        self.started.setdefault(run_name, time.perf_counter())
        if status == "failed":
            self.errors[run_name] = extra.get("error") or "unknown error"
            cut = self.errors[run_name]
            row[3] = f"[red]failed[/]: {escape(cut[:CELL])}{'…' if len(cut) > CELL else ''}"
        else:
            row[3] = status
        if extra.get("dice") is not None:
            row[4] = f"{extra['dice']:.4f}"
        if "seconds" in extra:
            row[5] = f"{extra['seconds']:.0f}s"
        if not self.terminal:
            self._line(run_name, status, extra)
        elif self.live is not None:
            self.live.update(self.table())
        elif status != "running":
            self.console.print(f"{run_name}: {row[3]} {row[4]}")

    def _line(self, run_name: str, status: str, extra: dict[str, Any]) -> None:
        """One plain line per event, for logs: ``[2/8] run: finished, test dice 0.8123 (41 s)``."""
        what = {"running": "started", "failed": f"failed: {self.errors.get(run_name, '')}"}.get(status, status)
        if status == "finished":
            dice = f", test dice {extra['dice']:.4f}" if extra.get("dice") is not None else ""
            what = f"finished{dice} ({extra.get('seconds', 0):.0f} s)"
        self.plain(f"[{self.order[run_name]}/{len(self.rows)}] {run_name}: {what}")

    def plain(self, text: str) -> None:
        """A line printed as is: no markup, no wrapping, no cutting."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def finish(self, statuses: dict[str, str], leaderboard: str) -> list[str]:
        """The summary after the table, every failure in full; returns the failed runs."""
        failed = [k for k, v in statuses.items() if v == "failed"]
        self.console.print(f"[bold]{len(statuses) - len(failed)}/{len(statuses)} runs done[/]; leaderboard: "
                           f"{escape(leaderboard)}")
        if failed:
            self.console.print(f"[red]{len(failed)} failed[/] (full error in each run's error.log):")
            for name in failed:
                self.plain(f"  {name}: {self.errors.get(name, 'failed')}")
        return failed
