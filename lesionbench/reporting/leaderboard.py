"""Markdown leaderboards regenerated from run folders (never edited by hand).

One table per dataset, ranked by the dataset's primary metric (the challenge's own; see
compare.py): seeds aggregated per experiment (mean ± std), bootstrap CIs over test images, a
seed-aware test against the best (none for single-seed tables), boundary distances, costs, and
published scores only beside runs of their recipe unchanged; then reference rows and plots.
Run folders that fail validation are skipped and named, one line each, and the rest still build.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from lesionbench.config import ConfigError
from lesionbench.data.decode import size_label
from lesionbench.data.layouts import LAYOUTS
from lesionbench.io import atomic_write_text
from lesionbench.reporting import generalisation, plots
from lesionbench.reporting.compare import (
    ALPHA,
    BOUNDARY,
    CI_SEED,
    METRICS,
    N_RESAMPLES,
    Entry,
    build_entry,
    metric_for,
    rank,
)
from lesionbench.reporting.markdown import MISSING, duration, esc, mean_of, param, pm, table
from lesionbench.reporting.references import DATASET_REFERENCES, NOT_COMPARABLE, recipe_published
from lesionbench.reporting.runs import RunRecord, collect_runs, error_line
from lesionbench.reporting.stats import CI_METHOD, SEED_TEST
from lesionbench.studies.suite import experiments_dir

__all__ = ["RunRecord", "collect_runs", "write_leaderboard", "write_trials_table"]

log = logging.getLogger(__name__)
#: Rows a suite cannot have on a dataset, said under its table rather than silently missing.
UNSUPPORTED = {"isic2018-task2": "nnU-Net (engine: nnunet) is not run on the five overlapping attribute masks: "
                                 "the engine trains binary datasets only (nnU-Net's region-based training is not wired in)"}
EXTRA = METRICS[2:]  # thresholded Jaccard, precision, recall: the second table


def _ci(ci: tuple[float, float] | None, digits: int = 4) -> str:
    return MISSING if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else esc(v)


class _Published:
    """Each experiment's recipe scores, and what its runs changed against the recipe."""

    def __init__(self, dataset: str, recipes: Path | None) -> None:
        self.dataset, self.recipes = dataset, recipes

    def of(self, e: Entry) -> tuple[list[Any], str]:
        if self.dataset in NOT_COMPARABLE:
            return [], ""
        scores, changed = [], ""
        for r in e.runs:
            scores, why = recipe_published(r.path, e.experiment, self.recipes)
            changed = changed or why
        return scores, changed

    def cell(self, e: Entry) -> str:
        scores, changed = self.of(e)
        if not scores:
            return esc(changed) if changed else MISSING  # e.g. "recipe unreadable (...)"
        if changed:
            return esc(f"not comparable: {changed}")
        return esc("; ".join(f"{p.metric} {_value(p.value)}" for p in scores))


def _row(rank_: int, e: Entry, published: _Published) -> list[str]:
    cost = [r.metrics.cost if r.metrics else {} for r in e.runs]
    size = next((r.image_size for r in e.runs if r.image_size), None)
    flops = mean_of([c.get("flops") for c in cost], 1e9)
    boundary = [MISSING if e.stats[k] is None else f"{pm(e.stats[k], 2)} {_ci(e.cis.get(k), 2)}" for k, _ in BOUNDARY]
    return [str(rank_), f"`{esc(e.experiment)}`", str(len(e.runs)), pm(e.stats["dice"]), _ci(e.ci),
            pm(e.stats["primary"]), _ci(e.cis.get("primary")), *boundary, pm(e.stats["iou"]),
            published.cell(e), mean_of([c.get("params") for c in cost], 1e6),
            flops if flops == MISSING or not size else f"{flops} @{size_label(size)}",
            mean_of([c.get("ms_per_image") for c in cost], fmt="{:.1f}"),
            mean_of([c.get("peak_mem_mb") for c in cost], fmt="{:.0f}"),
            duration([c.get("train_time_s", r.info.train_time_s if r.info else None)
                      for c, r in zip(cost, e.runs, strict=True)]),
            e.verdict]


def _references(dataset: str, entries: list[Entry], published: _Published) -> list[str]:
    """The "published" rows under a table: the challenge's references, then unchanged recipes' scores."""
    if dataset in NOT_COMPARABLE:
        return []
    refs = list(DATASET_REFERENCES.get(dataset, []))
    for e in entries:
        scores, changed = published.of(e)
        refs += [(f"{p.source} (for `{e.experiment}`)", p.metric, p.value, "as reported by the source", p.note)
                 for p in scores if not changed]
    if not refs:
        return []
    rows = [["published", esc(s), esc(m), "not reported" if v is None else _value(v), esc(d), esc(n or MISSING)]
            for s, m, v, d, n in refs]
    return (["Published references (reported elsewhere, not reproduced here):", ""]
            + table(rows, ["", "Source", "Metric", "Value", "Definition", "Split / note"]) + [""])


def _footer(metric_name: str, definition: str, k: int, multi_seed: bool) -> str:
    tests = (f"vs best: {SEED_TEST}, {N_RESAMPLES} resamples, seed {CI_SEED}, on {metric_name} against rank 1, "
             f"Holm-corrected over {k} comparison(s); ≈ best = not significant at {ALPHA}, * = significantly "
             "worse; not tested = fewer than two seeds with per_image.csv on one side."
             if multi_seed else "vs best: single seed: differences not tested.")
    return (f"Ranked by **{metric_name}**: {definition}. Metrics: mean ± std over seeds (sample std, ddof=1; "
            f"0 for one seed). 95% CIs: {CI_METHOD} bootstrap (scipy.stats.bootstrap, {N_RESAMPLES} resamples, "
            f"seed {CI_SEED}) over the test images, each image's value averaged across seeds (a pooled metric "
            f"resamples each image's counts and recomputes the pooled value). {tests} HD95 / ASSD: 95th-percentile "
            "Hausdorff and average symmetric surface distance in pixels at the ground truth's size (lower is "
            "better; both masks empty 0, one empty the image diagonal). Costs are means over seeds; GMACs = "
            "multiply-accumulates of one forward pass (fvcore) at the recipe's resolution.")


def _extra(entries: list[Entry]) -> list[str]:
    rows = [[f"`{esc(e.experiment)}`", *[pm(e.stats[k]) for k, _ in EXTRA]] for e in entries]
    header = ["Model", *[n for _, n in EXTRA]]
    return ["More overlap metrics (mean ± std over seeds):", ""] + table(rows, header) + [""]


def _per_attribute(entries: list[Entry]) -> list[str]:
    """Multi-label datasets (ISIC 2018 Task 2): pooled Jaccard / Dice per attribute (the 2019 scorer)."""
    names: list[str] = []
    values: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for e in entries:
        for r in e.runs:
            challenge = r.metrics.challenge if r.metrics else None
            per = (challenge.per_attribute if challenge else None) or {}
            for attr, v in per.items():
                if isinstance(v, dict) and "jaccard" in v and "dice" in v:
                    names += [attr] if attr not in names else []
                    values.setdefault(e.experiment, {}).setdefault(attr, []).append((v["jaccard"], v["dice"]))
    if not values:
        return []
    rows = []
    for e in entries:
        cells = []
        for attr in names:
            pairs = values.get(e.experiment, {}).get(attr)
            cells.append(MISSING if not pairs else
                         f"{np.mean([p[0] for p in pairs]):.4f} / {np.mean([p[1] for p in pairs]):.4f}")
        rows.append([f"`{esc(e.experiment)}`", *cells])
    return (["Per attribute: pooled Jaccard / Dice (each image's counts divided by its pixel count, "
             "then summed; mean over seeds):", ""] + table(rows, ["Model", *names]) + [""])


def _dataset_section(dataset: str, runs: list[RunRecord], suite: Path, notes: list[str], make_plots: bool,
                     recipes: Path | None) -> list[str]:
    metric = metric_for(dataset)
    by_exp: dict[str, list[RunRecord]] = defaultdict(list)
    for r in runs:
        by_exp[r.experiment or r.run].append(r)
    entries = [build_entry(x, rs, metric, notes) for x, rs in sorted(by_exp.items())]
    k, multi_seed = rank(entries)
    published = _Published(dataset, recipes)
    header = ["Rank", "Model", "Seeds", "Dice", "Dice 95% CI", f"{metric.name} (ranks)", f"{metric.name} 95% CI",
              *[f"{n} [95% CI]" for _, n in BOUNDARY], "IoU", "Published", "Params (M)", "GMACs", "ms/image",
              "Peak mem (MB)", "Train time", "vs best"]
    out = [f"## Dataset `{dataset}`", ""]
    if dataset in NOT_COMPARABLE:
        out += [f"> **Note:** `{dataset}` is {NOT_COMPARABLE[dataset]}.", ""]
    if dataset in UNSUPPORTED:
        out += [f"> **Unsupported:** {UNSUPPORTED[dataset]}.", ""]
    if dataset not in LAYOUTS:
        notes.append(f"{dataset}: not a dataset this version knows; ranked by mean Dice")
    out += table([_row(i, e, published) for i, e in enumerate(entries, 1)], header)
    out += ["", _footer(metric.name, metric.definition, k, multi_seed), ""]
    out += _extra(entries)
    out += _per_attribute(entries)
    out += _references(dataset, entries, published)
    if make_plots:
        out += _plots(dataset, entries, suite, notes)
    return out


def _plots(dataset: str, entries: list[Entry], suite: Path, notes: list[str]) -> list[str]:
    """Draw this dataset's figures; a plotting failure becomes a note, never a lost leaderboard."""
    out: list[str] = []
    try:
        ok = [e for e in entries if e.stats["dice"]]
        lo = [e.ci[0] if e.ci else np.nan for e in ok]
        hi = [e.ci[1] if e.ci else np.nan for e in ok]
        bars = plots.plot_metric_bars([e.experiment for e in ok], [e.stats["dice"][0] for e in ok], lo, hi,
                                      suite / "plots" / f"{dataset}_dice.png", title=dataset)
        out.append(f"![Dice per model, {dataset}]({bars.relative_to(suite).as_posix()})")
        runs = {r.run: r.path for e in entries for r in e.runs}
        overlay = plots.plot_overlay(runs, suite / "plots" / f"{dataset}_curves.png", title=f"{dataset}: val/dice")
        if overlay:
            out.append(f"![val/dice per epoch, {dataset}]({overlay.relative_to(suite).as_posix()})")
        links = []
        for name, path in sorted(runs.items()):
            png = plots.plot_run_curves(path)
            if png:
                links.append(f"[{name}]({png.relative_to(suite).as_posix()})")
        if links:
            out += ["", "Training curves per run: " + " · ".join(links)]
        reports = [f"[{name}]({(path / 'report' / 'index.md').relative_to(suite).as_posix()})"
                   for name, path in sorted(runs.items()) if (path / "report" / "index.md").is_file()]
        if reports:
            out += ["", "Visual reports (test predictions, error maps, best/worst images): " + " · ".join(reports)]
    except Exception as err:
        notes.append(f"plots for {dataset} failed: {error_line(err)}")
    return out + [""]


def _recipes_dir() -> Path | None:
    try:
        return experiments_dir()
    except ConfigError:  # results read away from the repository: no recipe, no published column
        return None


def write_leaderboard(suite_dir: str | Path, title: str | None = None, make_plots: bool = True,
                      recipes: Path | None = None) -> Path:
    """Regenerate ``<suite_dir>/leaderboard.md`` (and its plots) from the run folders.

    ``recipes``: the experiments/ folder whose ``published:`` scores are shown (default: the usual one).
    Run folders that fail validation are skipped: one warning line each here and a row under "Failed runs".
    """
    suite = Path(suite_dir)
    records = collect_runs(suite)
    good = [r for r in records if r.ok]
    bad = [r for r in records if not r.ok]
    for r in bad:
        if r.status == "broken":
            log.warning("leaderboard: skipped run folder %s: %s", r.path, r.error)
    recipes = recipes or _recipes_dir()
    notes = [w for r in good for w in r.warnings]
    lines = [f"# {title or f'LesionBench leaderboard: suite `{suite.name}`'}", "",
             "<!-- GENERATED FILE: do not edit by hand; regenerate it instead. -->",
             f"> Generated from the run folders by `lesionbench leaderboard --suite {suite.name}`; "
             "do not edit by hand, every number traces back to a run folder's config.yaml.", "",
             f"{len(good)} finished run(s), {len(bad)} failed or unreadable.", ""]
    by_ds: dict[str, list[RunRecord]] = defaultdict(list)
    for r in good:
        by_ds[str(r.dataset)].append(r)
    if not by_ds:
        lines += ["_No finished runs yet._", ""]
    for ds in sorted(by_ds):
        lines += _dataset_section(ds, by_ds[ds], suite, notes, make_plots, recipes)
    lines += generalisation.section(suite, make_plots)
    if bad:
        lines += ["## Failed runs", ""]
        lines += table([[f"`{esc(r.run)}`", esc(r.dataset or MISSING), r.status, esc(r.error or MISSING)] for r in bad],
                        ["Run", "Dataset", "Status", "Error"]) + [""]
    if notes:
        lines += ["## Notes", ""] + [f"- {esc(n)}" for n in notes] + [""]
    trials = suite / "trials.md"
    if trials.is_file():
        lines += [trials.read_text(encoding="utf-8").rstrip(), ""]
    return atomic_write_text(suite / "leaderboard.md", "\n".join(lines))


def write_trials_table(study_dir: str | Path, trials: list[dict[str, Any]]) -> Path:
    """Save the Optuna trials as ``trials.md`` and regenerate the leaderboard that embeds it.

    Each trial: {"number", "state", "params": {name: value}, "value"}; returns leaderboard.md.
    """
    study = Path(study_dir)
    rows = []
    for t in sorted(trials, key=lambda t: t.get("number", 0)):
        value = t.get("value")
        params = ", ".join(f"{k}={param(v)}" for k, v in sorted((t.get("params") or {}).items()))
        rows.append([str(t.get("number", "?")), str(t.get("state", "?")).split(".")[-1], esc(params or MISSING),
                     f"{value:.4f}" if isinstance(value, (int, float)) else MISSING])
    text = "\n".join(["## Optuna trials", ""] + table(rows, ["Trial", "State", "Params", "Value"]))
    atomic_write_text(study / "trials.md", text + "\n")
    return write_leaderboard(study)
