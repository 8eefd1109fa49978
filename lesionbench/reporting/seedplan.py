"""`lesionbench plan`: from a finished suite (a pilot), the seeds per model its test needs to find a
gap, and the gap today's seeds can find; and the failed seeds `status` names.

Both read the suite's run folders through the leaderboard's own code (compare.build_entry / rank),
so the planner plans for exactly the test the leaderboard runs, at this suite's pooled seed SD.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from lesionbench.reporting.compare import ALPHA, POWER, Entry, build_entry, find_failed_seeds, metric_for, rank
from lesionbench.reporting.runs import RunRecord, collect_runs
from lesionbench.reporting.seedtest import detectable_gap, power_at, seeds_needed


class SeedPlan(BaseModel):
    """One dataset table of the pilot suite and what it would take to find ``detect``."""

    dataset: str
    metric: str
    rows: int
    seeds_now: int
    pooled_seed_sd: float | None
    detect: float
    detect_sd: float | None  # ``detect`` in pooled seed-SDs
    seeds_needed: int | None  # per row, for POWER; None: more than 50 (or no seed variance to plan with)
    power_at_needed: float | None  # simulated power at that many seeds
    power_now: float | None  # simulated power of today's seeds for ``detect``
    gap_found_now: float | None  # the gap today's seeds find POWER of the time
    note: str = ""


def _tables(suite_dir: Path) -> dict[str, list[Entry]]:
    by_ds: dict[str, list[RunRecord]] = defaultdict(list)
    for r in collect_runs(suite_dir):
        if r.ok:
            by_ds[str(r.dataset)].append(r)
    tables = {}
    for ds, runs in sorted(by_ds.items()):
        by_exp: dict[str, list[RunRecord]] = defaultdict(list)
        for r in runs:
            by_exp[r.experiment or r.run].append(r)
        tables[ds] = [build_entry(x, rs, metric_for(ds), []) for x, rs in sorted(by_exp.items())]
    return tables


def plan_seeds(suite_dir: str | Path, detect: float, max_seeds: int = 50) -> list[SeedPlan]:
    """Per dataset: seeds per model to find a true gap of ``detect`` (in the primary metric) 80% of the time."""
    if not detect > 0:
        raise ValueError("--detect: the gap to find must be positive, e.g. 0.02")
    plans = []
    for ds, entries in _tables(Path(suite_dir)).items():
        table = rank(entries)
        metric = metric_for(ds).name
        tested = [e for e in entries if len(e.seed_scores) >= 2]
        seeds_now = int(np.median([len(e.seed_scores) for e in entries])) if entries else 0
        if table.pooled_sd is None or not table.pooled_sd > 0 or table.rows_tested < 2:
            why = ("fewer than two rows with two or more seeds: run at least 2 seeds of 2 models as a pilot"
                   if len(tested) < 2 else "the seeds do not vary: no seed-to-seed SD to plan with")
            plans.append(SeedPlan(dataset=ds, metric=metric, rows=len(entries), seeds_now=seeds_now,
                                  pooled_seed_sd=table.pooled_sd, detect=detect, detect_sd=None, seeds_needed=None,
                                  power_at_needed=None, power_now=None, gap_found_now=None, note=why))
            continue
        k, sd = table.rows_tested, table.pooled_sd
        gap_sd = detect / sd
        need = seeds_needed(k, gap_sd, ALPHA, POWER, max_seeds)
        plans.append(SeedPlan(
            dataset=ds, metric=metric, rows=k, seeds_now=table.seeds, pooled_seed_sd=sd, detect=detect,
            detect_sd=gap_sd, seeds_needed=need,
            power_at_needed=None if need is None else power_at(k, need, gap_sd, ALPHA, seed=1),
            power_now=power_at(k, table.seeds, gap_sd, ALPHA, seed=1),
            gap_found_now=sd * detectable_gap(k, table.seeds, ALPHA, POWER),
            note="" if need is not None else f"more than {max_seeds} seeds per row: plan for a larger gap"))
    return plans


def failed_runs(suite_dir: str | Path) -> dict[str, str]:
    """run name -> why it is a failed training (seedtest.FAILED_RULE), over every table of the suite."""
    out: dict[str, str] = {}
    for entries in _tables(Path(suite_dir)).values():
        find_failed_seeds(entries)
        for e in entries:
            out.update(e.failed)
    return out
