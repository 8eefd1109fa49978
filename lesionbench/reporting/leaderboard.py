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

from lesionbench.bundled import experiments_dir
from lesionbench.data.decode import size_label
from lesionbench.data.layouts import LAYOUTS
from lesionbench.errors import LesionBenchError
from lesionbench.io import atomic_write_text
from lesionbench.reporting import generalisation, plots
from lesionbench.reporting.compare import (
    ALPHA,
    BOUNDARY,
    CONFIDENCE,
    METRICS,
    POWER,
    Entry,
    TableStats,
    build_entry,
    metric_for,
    rank,
)
from lesionbench.reporting.markdown import MISSING, duration, esc, pm, table
from lesionbench.reporting.references import DATASET_REFERENCES, NOT_COMPARABLE, recipe_published
from lesionbench.reporting.runs import RunRecord, collect_runs, error_line
from lesionbench.reporting.seedtest import FAILED_RULE, SEED_TEST, SEED_TEST_WHY
from lesionbench.reporting.stats import MEAN_CI
from lesionbench.reporting.trials import STUDY_FILE, ranked_trials, write_study_board, write_trials_table
from lesionbench.suitefolder import (
    ChanceRow,
    Costs,
    DatasetVerdicts,
    FailedSeed,
    Gap,
    Interval,
    LeaderboardVerdicts,
    ModelVerdict,
    write_verdicts,
)

__all__ = ["RunRecord", "collect_runs", "ranked_trials", "write_leaderboard", "write_trials_table"]

log = logging.getLogger(__name__)
#: What the table says of failed seeds (leaderboard.json: failed_in_mean).
FAILED_IN_MEAN = ("failed seeds count in the mean, the SD and their own row's test (a model that fails is less "
                  "reliable, and its row shows it); they stay out of the pooled seed variance the other rows' tests "
                  "share, so one collapse cannot hide every other difference")
#: Rows a suite cannot have on a dataset, said under its table rather than silently missing.
UNSUPPORTED = {"isic2018-task2": "nnU-Net (engine: nnunet) is not run on the five overlapping attribute masks: "
                                 "the engine trains binary datasets only (nnU-Net's region-based training is not wired in)"}
EXTRA = METRICS[2:]  # thresholded Jaccard, precision, recall: the second table


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else esc(v)


class _Published:
    """Each experiment's recipe scores, and what its runs changed against the recipe."""

    def __init__(self, dataset: str, recipes: Path | None) -> None:
        self.dataset, self.recipes = dataset, recipes
        self._seen: dict[str, tuple[list[Any], str]] = {}  # the table and the references read each recipe once

    def of(self, e: Entry) -> tuple[list[Any], str]:
        if self.dataset in NOT_COMPARABLE:
            return [], ""
        if e.experiment not in self._seen:
            scores, changed = [], ""
            for r in e.runs:
                scores, why = recipe_published(r.path, e.experiment, self.recipes)
                changed = changed or why
            self._seen[e.experiment] = (scores, changed)
        return self._seen[e.experiment]

    def cell(self, e: Entry) -> str:
        scores, changed = self.of(e)
        if not scores:
            return esc(changed) if changed else MISSING  # e.g. "recipe unreadable (...)"
        if changed:
            return esc(f"not comparable: {changed}")
        return esc("; ".join(f"{p.metric} {_value(p.value)}" for p in scores))


def _num(v: Any, digits: int = 4) -> str:
    return MISSING if v is None else f"{v:.{digits}f}"


def _iv(iv: Interval | None, digits: int = 4) -> tuple[str, str]:
    """("mean ± SD", "[low, high]") cells; one seed has no SD ("n/a"), never "± 0"."""
    if iv is None:
        return MISSING, MISSING
    spread = f"{iv.mean:.{digits}f} ± {iv.std:.{digits}f}" if iv.std is not None else f"{iv.mean:.{digits}f} (SD n/a)"
    ci = MISSING if iv.low is None else f"[{iv.low:.{digits}f}, {iv.high:.{digits}f}]"
    return spread, ci + (" (images only)" if iv.includes == "images only" else "")


def _verdict_cell(m: ModelVerdict) -> str:
    failed = f"; **{len(m.failed_seeds)} of {len(m.seeds)} seeds failed**" if m.failed_seeds else ""
    if m.verdict == "best":
        return "best" + failed
    if m.verdict == "significantly_worse":
        return f"* worse ({m.reason}){failed}"
    if m.verdict == "not_significant":
        return f"not significant ({m.reason}){failed}"
    return f"not tested: {m.reason or 'no test'}{failed}"


def _gap_cell(m: ModelVerdict) -> str:
    if m.verdict == "best":
        return "rank 1"
    g = m.gap_to_best
    return MISSING if g is None else f"{g.estimate:.4f} [{g.low:.4f}, {g.high:.4f}]"


def _row(m: ModelVerdict, show_dice: bool) -> list[str]:
    c = m.costs
    size = MISSING if m.image_size is None else size_label(m.image_size)
    dice = list(_iv(m.dice)) if show_dice else []
    boundary = [" ".join(_iv(m.nsd, 4))] + [" ".join(_iv(getattr(m, k), 2)) for k, _ in BOUNDARY]
    gmacs = _num(c.gmacs, 2)
    return [str(m.rank), f"`{esc(m.experiment)}`", esc(m.weights or MISSING), missing_int(m.epochs), size,
            str(len(m.seeds)), *_iv(m.primary), _gap_cell(m), _num(m.p_rank1, 2), *dice, *boundary,
            _iv(m.iou)[0], esc(m.published or MISSING), _num(c.params_m, 2), gmacs,
            _num(c.ms_per_image, 1), _num(c.peak_mem_mb, 0), _count(c.images_seen),
            duration([c.train_time_s]), _verdict_cell(m)]


def missing_int(v: int | None) -> str:
    return MISSING if v is None else str(v)


def _count(v: float | None) -> str:
    return MISSING if v is None else f"{v:,.0f}"


def _costs(e: Entry) -> Costs:
    cost = [r.metrics.cost if r.metrics else {} for r in e.runs]

    def avg(key: str, scale: float = 1.0) -> float | None:
        vals = [float(v) for v in (c.get(key) for c in cost) if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return float(np.mean(vals)) / scale if vals else None

    train = [c.get("train_time_s", r.info.train_time_s if r.info else None) for c, r in zip(cost, e.runs, strict=True)]
    train = [float(t) for t in train if isinstance(t, (int, float))]
    devices = sorted({r.info.device for r in e.runs if r.info and r.info.device})
    counters = sorted({str(c.get("macs_counter", "fvcore")) for c in cost if c.get("flops") is not None})
    return Costs(macs_counter="; ".join(counters) or None, params_m=avg("params", 1e6), gmacs=avg("flops", 1e9), ms_per_image=avg("ms_per_image"),
                 peak_mem_mb=avg("peak_mem_mb"), train_time_s=float(np.mean(train)) if train else None,
                 measured_on="; ".join(devices) or None, images_seen=avg("images_seen"))


def _verdicts(dataset: str, entries: list[Entry], stats: TableStats, published: _Published,
              suite: str) -> DatasetVerdicts:
    metric = metric_for(dataset)
    models = []
    for i, e in enumerate(entries, 1):
        first = e.runs[0]
        seeds = {r.run: r.seed for r in e.runs}
        models.append(ModelVerdict(
            experiment=e.experiment, model=first.model, weights=first.weights, epochs=first.epochs,
            image_size=first.image_size, seeds=[r.seed for r in e.runs], seed_scores=e.seed_scores,
            primary=e.intervals.get("primary"), dice=e.intervals.get("dice"), iou=e.intervals.get("iou"),
            hd95=e.intervals.get("hd95"), assd=e.intervals.get("assd"), nsd=e.intervals.get("nsd"), rank=i,
            rank_probabilities=e.rank_probabilities, p_rank1=e.rank_probabilities[0] if e.rank_probabilities else None,
            p_values=e.p_values, verdict=e.verdict,  # type: ignore[arg-type]
            significantly_worse=None if e.verdict in ("not_tested", "best") else e.verdict == "significantly_worse",
            reason=e.reason, published=published.cell(e), costs=_costs(e),
            gap_to_best=None if e.gap is None else Gap(estimate=e.gap[0], low=e.gap[1], high=e.gap[2],
                                                       confidence=1 - ALPHA),
            failed_seeds=[FailedSeed(run=run, seed=seeds.get(run), why=why) for run, why in e.failed.items()]))
    finite = stats.detectable is not None and np.isfinite(stats.detectable)
    return DatasetVerdicts(dataset=dataset, metric=metric.name, metric_definition=metric.definition, test=SEED_TEST,
                           test_why=SEED_TEST_WHY, interval=MEAN_CI, alpha=ALPHA, comparisons=stats.comparisons,
                           detectable_difference=stats.detectable if finite else None,
                           detectable_note=stats.detectable_note, rank_resamples=stats.rank_resamples,
                           kendall_tau_median=stats.kendall_tau, models=models, rows_tested=stats.rows_tested,
                           seeds_per_row=stats.seeds or None, pooled_seed_sd=stats.pooled_sd,
                           detectable_sd=stats.detectable_sd if finite else None, seeds_for_80=stats.seeds_for,
                           plan_command=f"lesionbench plan --suite {suite} --detect 0.02" if stats.comparisons else None,
                           failed_rule=FAILED_RULE, failed_in_mean=FAILED_IN_MEAN,
                           nsd_tolerance_px=_nsd_tolerance(entries), chance=_chance(entries),
                           rank1_equal_models=list(stats.rank1_null) if stats.rank1_null else None)


def _nsd_tolerance(entries: list[Entry]) -> float | None:
    tols = {r.metrics.nsd_tolerance for e in entries for r in e.runs if r.metrics and r.metrics.nsd_tolerance}
    return tols.pop() if len(tols) == 1 else None


def _chance(entries: list[Entry]) -> list[ChanceRow]:
    """The chance floor of the table's test images: from the rank-1 row's runs, a run with the mean-mask
    floor first (runs before issue 30 give the empty and full floors from their per_image.csv). Read from
    the run records already loaded, not from the folders again."""
    from lesionbench.metrics.chance import floors_from_rows

    if not entries:
        return []
    best: tuple[str, dict] | None = None
    for r in entries[0].runs:
        if r.metrics is not None and r.metrics.chance is not None:
            floors = dict(r.metrics.chance.scores)
        elif r.per_image is not None:
            try:
                floors = floors_from_rows(r.per_image, str(r.dataset))
            except (KeyError, LesionBenchError) as err:  # no counts (an older run): no floor, never a lost board
                log.debug("chance floor of %s: %s", r.path, err)
                continue
        else:
            continue
        if best is None or (any(f.mean_mask is not None for f in floors.values())
                            and all(f.mean_mask is None for f in best[1].values())):
            best = (r.run, floors)
    if best is None:
        return []
    return [ChanceRow(metric=m, empty=f.empty, full=f.full, mean_mask=f.mean_mask, source=best[0])
            for m, f in best[1].items()]


def _chance_lines(dv: DatasetVerdicts) -> list[str]:
    if not dv.chance:
        return []
    rows = [[esc(c.metric), f"{c.empty:.4f}", f"{c.full:.4f}",
             "not recorded (run made before the floor was computed)" if c.mean_mask is None else f"{c.mean_mask:.4f}"]
            for c in dv.chance]
    return ([f"**Chance floor** (computed, not trained, on the same test images; from `{esc(dv.chance[0].source)}`): "
             "what trivial predictions score: every mask empty, every mask full, and the training masks' per-pixel "
             "mean thresholded at 0.5 for every image. A model near these has learned little.", ""]
            + table(rows, ["Metric", "All empty", "All full", "Mean training mask"]) + [""])


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


def _power_sentence(dv: DatasetVerdicts) -> str:
    """What the table's own test can find, simulated, and how many seeds would find more."""
    if dv.detectable_difference is None or dv.detectable_difference > 1.0:
        return (f"**Too few seeds for any mark:** with {dv.seeds_per_row} seeds per row this test cannot find even "
                f"a gap of the metric's whole range; run more seeds (`{dv.plan_command}`).")
    need = ", ".join(f"{k}: {'more than 50' if v is None else v}" for k, v in dv.seeds_for_80.items())
    return (f"**Power (simulated, this test):** with {dv.seeds_per_row} seeds per row and pooled seed-to-seed SD "
            f"{dv.pooled_seed_sd:.4f}, a row {dv.detectable_difference:.4f} in {dv.metric} "
            f"({dv.detectable_sd:.1f} SDs) below the others is marked {POWER:.0%} of the time; smaller gaps can hide "
            "behind 'not significant' (the gap column's simultaneous interval shows how large, and 'not "
            f"significant' is not evidence that models are equal). Seeds per row to find a gap 80% of the time: "
            f"{need}. Plan a suite for a gap you care about: `{dv.plan_command}`.")


def _rank1_sentence(dv: DatasetVerdicts) -> str:
    if dv.kendall_tau_median is None:
        return ""
    reference = ""
    if dv.rank1_equal_models:
        median, p90 = dv.rank1_equal_models
        reference = (f" It is the share of bootstrap leaderboards in which a row ranks first, not the chance that "
                     f"it is the best model: with {len(dv.models)} equal models and these seeds the observed leader "
                     f"still shows a median P(rank 1) of {median:.2f} ({p90:.2f} in one suite in ten, simulated), so "
                     f"only a leader's P(rank 1) well above {p90:.2f} sets it apart; the 'vs best' column is the test.")
    return (f"**Rank stability:** P(rank 1) and the rank plot come from {dv.rank_resamples} bootstrap "
            f"leaderboards (test images resampled for all models at once, each model's seeds resampled); "
            f"median Kendall tau between this ranking and the resampled ones: {dv.kendall_tau_median:.2f} "
            f"(1 = the order never changes).{reference}")


def _footer(dv: DatasetVerdicts) -> list[str]:
    level = f"{CONFIDENCE:.0%}"
    if dv.comparisons:
        tests = (f"**vs best:** {dv.test}; {dv.rows_tested} rows, * = significantly worse than rank 1 at family-wise "
                 f"alpha {dv.alpha}. **Gap to rank 1**: rank 1's mean minus the row's, with its simultaneous "
                 f"{1 - dv.alpha:.0%} interval from the same test. Why this test: {dv.test_why}. {_power_sentence(dv)}")
    else:
        tests = ("**vs best:** not tested: a significance test needs at least two seeds on both sides (one run "
                 "cannot separate a model from its training noise).")
    failed = [m for m in dv.models if m.failed_seeds]
    failures = ""
    if failed:
        named = "; ".join(f"`{esc(m.experiment)}`: {len(m.failed_seeds)} of {len(m.seeds)} seeds ("
                          + ", ".join(f"seed {f.seed}: {esc(f.why)}" for f in m.failed_seeds) + ")" for m in failed)
        failures = f"**Failed seeds:** {named}. Rule: {dv.failed_rule}; {dv.failed_in_mean}."
    stability = _rank1_sentence(dv)
    return [f"Ranked by **{dv.metric}**: {dv.metric_definition}. Mean ± SD over seeds (sample SD; 'SD n/a' for "
            f"one seed). **{level} CI** of the mean: {dv.interval}; with one seed only image noise is counted "
            "(marked 'images only').", "", tests, ""] + ([failures, ""] if failures else []) + (
            [stability, ""] if stability else []) + [
            f"NSD: Normalized Surface Dice (Metrics Reloaded), the share of both boundaries within "
            f"{'an unrecorded tolerance' if dv.nsd_tolerance_px is None else f'{dv.nsd_tolerance_px:g} px'} of the "
            "other at the ground truth's size (1% of the dataset's typical image diagonal, metrics/boundary.py; both "
            "masks empty 1, one empty 0; '—' for runs made before it was computed). "
            "HD95 / ASSD: 95th-percentile Hausdorff and average symmetric surface distance in pixels at the ground "
            "truth's size (lower is better; both masks empty 0, one empty the image diagonal). Costs are means "
            "over seeds; GMACs = multiply-accumulates of one forward pass "
            f"({'; '.join(sorted({m.costs.macs_counter for m in dv.models if m.costs.macs_counter})) or 'not counted'})"
            " at the recipe's resolution; "
            "images seen = training images drawn over all epochs; train time on "
            f"{'; '.join(sorted({m.costs.measured_on for m in dv.models if m.costs.measured_on})) or 'an unrecorded device'}"
            ", wall clock, whatever else the machine was running.", ""]


def _extra(entries: list[Entry]) -> list[str]:
    def cell(stat: tuple[float, float] | None, seeds: int) -> str:
        return pm(stat) if stat is None or seeds > 1 else f"{stat[0]:.4f} (SD n/a)"

    rows = [[f"`{esc(e.experiment)}`", *[cell(e.stats[k], len(e.runs)) for k, _ in EXTRA]] for e in entries]
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
                     recipes: Path | None) -> tuple[list[str], DatasetVerdicts]:  # suite: the folder
    """One dataset's table: the verdicts are computed into the typed model first, the markdown rendered from it."""
    metric = metric_for(dataset)
    by_exp: dict[str, list[RunRecord]] = defaultdict(list)
    for r in runs:
        by_exp[r.experiment or r.run].append(r)
    entries = [build_entry(x, rs, metric, notes) for x, rs in sorted(by_exp.items())]
    published = _Published(dataset, recipes)
    dv = _verdicts(dataset, entries, rank(entries), published, suite.name)
    show_dice = metric.name != "dice"
    header = ["Rank", "Model", "Weights", "Epochs", "Size", "Seeds", f"{metric.name} (ranks)",
              f"{metric.name} 95% CI", "Gap to rank 1 [simult. 95%]", "P(rank 1)", *(["Dice", "Dice 95% CI"] if show_dice else []),
              "NSD [95% CI]", *[f"{n} [95% CI]" for _, n in BOUNDARY], "IoU", "Published", "Params (M)", "GMACs", "ms/image",
              "Peak mem (MB)", "Images seen", "Train time", "vs best"]
    out = [f"## Dataset `{dataset}`", ""]
    if dataset in NOT_COMPARABLE:
        out += [f"> **Note:** `{dataset}` is {NOT_COMPARABLE[dataset]}.", ""]
    if dataset in UNSUPPORTED:
        out += [f"> **Unsupported:** {UNSUPPORTED[dataset]}.", ""]
    if dataset not in LAYOUTS:
        notes.append(f"{dataset}: not a dataset this version knows; ranked by mean Dice")
    out += table([_row(m, show_dice) for m in dv.models], header)
    out += ["", *_footer(dv), *_chance_lines(dv)]
    out += _extra(entries)
    out += _per_attribute(entries)
    out += _references(dataset, entries, published)
    if make_plots:
        out += _plots(dv, entries, suite, notes)
    return out, dv


def _plots(dv: DatasetVerdicts, entries: list[Entry], suite: Path, notes: list[str]) -> list[str]:
    """Draw this dataset's figures; a plotting failure becomes a note, never a lost leaderboard."""
    out: list[str] = []
    dataset = dv.dataset
    try:
        rows = [m for m in dv.models if m.primary is not None]
        if rows:
            bars = plots.plot_metric_bars([m.experiment for m in rows], [m.primary.mean for m in rows],
                                          [m.primary.low if m.primary.low is not None else np.nan for m in rows],
                                          [m.primary.high if m.primary.high is not None else np.nan for m in rows],
                                          suite / "plots" / f"{dataset}_{dv.metric}.png", title=dataset,
                                          ylabel=dv.metric, seeds=[m.seed_scores for m in rows])
            out.append(f"![{dv.metric} per model, {dataset}]({bars.relative_to(suite).as_posix()})")
        ranked = [m for m in dv.models if m.rank_probabilities]
        if ranked:
            blob = plots.plot_rank_blobs([m.experiment for m in ranked], [m.rank_probabilities for m in ranked],
                                         suite / "plots" / f"{dataset}_ranks.png",
                                         title=f"{dataset}: rank over {dv.rank_resamples} bootstrap leaderboards")
            out.append(f"![rank distribution, {dataset}]({blob.relative_to(suite).as_posix()})")
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
    except LesionBenchError:  # no experiments folder at all: no recipe, no published column
        return None


def write_leaderboard(suite_dir: str | Path, title: str | None = None, make_plots: bool = True,
                      recipes: Path | None = None) -> Path:
    """Regenerate ``<suite_dir>/leaderboard.md`` (and its plots) from the run folders.

    ``recipes``: the experiments/ folder whose ``published:`` scores are shown (default: the usual one).
    Run folders that fail validation are skipped: one warning line each here and a row under "Failed runs".
    """
    suite = Path(suite_dir)
    if (suite / STUDY_FILE).is_file():  # an Optuna study: its trials are configurations, not seeds of one model
        return write_study_board(suite)
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
    verdicts = LeaderboardVerdicts(suite=suite.name)
    for ds in sorted(by_ds):
        section, dv = _dataset_section(ds, by_ds[ds], suite, notes, make_plots, recipes)
        lines += section
        verdicts.datasets.append(dv)
    write_verdicts(suite, verdicts)
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
