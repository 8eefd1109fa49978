"""Markdown leaderboards regenerated from run folders (never edited by hand).

One table per dataset: seeds aggregated per experiment (mean ± std), a bootstrap CI over
test images, a paired Wilcoxon test against the best model (Holm-corrected), costs, and the
published scores beside ours, followed by the published reference rows and the plots.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lesionbench.reporting import plots
from lesionbench.reporting.markdown import MISSING, duration, esc, mean_of, param, pm, table
from lesionbench.io import atomic_write_text
from lesionbench.reporting.runs import RunRecord, collect_runs, error_line
from lesionbench.reporting.stats import CI_METHOD, bootstrap_ci, holm, mean_std, wilcoxon_p

__all__ = ["REFERENCES", "RunRecord", "collect_runs", "write_leaderboard", "write_trials_table"]

METRICS = [("dice", "Dice"), ("iou", "IoU"), ("thresholded_jaccard", "Thr. Jaccard"),
           ("precision", "Precision"), ("recall", "Recall")]
DEFINITIONS = {
    "dice": "mean over test images of 2|P∩G| / (|P|+|G|)",
    "iou": "mean over test images of |P∩G| / |P∪G|",
    "jaccard": "mean over test images of |P∩G| / |P∪G| (Jaccard index = IoU)",
    "thresholded_jaccard": "mean over test images of the Jaccard index, counted as 0 where below 0.65",
    "precision": "mean over test images of TP / (TP+FP)",
    "recall": "mean over test images of TP / (TP+FN)",
}
_WRITEUP = "as computed by the write-up's own code (image vs batch averaging not stated)"
ALPHA, N_RESAMPLES, CONFIDENCE, CI_SEED = 0.05, 2000, 0.95, 0

#: Published reference rows per dataset: (source, metric, value, definition, where the split differs).
REFERENCES: dict[str, list[tuple[str, str, float | None, str, str]]] = {
    "isic2016": [
        ("seed 001 MobileNetV2 U-Net, encoder fine-tuned", "dice", 0.9121, _WRITEUP,
         "official 379-image test set, at 128×128"),
        ("seed 001 MobileNetV2 U-Net, encoder fine-tuned", "iou", 0.8834, _WRITEUP,
         "official 379-image test set, at 128×128"),
    ],
    "isic2017": [
        ("ISIC 2017 Part 1 challenge winner", "jaccard", 0.765,
         "mean per-image Jaccard index (the challenge ranking metric)", "official 600-image test set"),
        ("seed 004 U-Net++", "dice", 0.7839, _WRITEUP, "test split not stated; 20 epochs at 767×1022"),
        ("seed 004 U-Net++", "iou", 0.6854, _WRITEUP, "test split not stated; 20 epochs at 767×1022"),
        ("seed 004 PSPNet", "dice", 0.6857, _WRITEUP, "test split not stated"),
        ("seed 004 U-Net", "dice", 0.6695, _WRITEUP, "test split not stated"),
    ],
    "isic2018": [
        ("ISIC 2018 Task 1 challenge winner", "thresholded_jaccard", 0.802, DEFINITIONS["thresholded_jaccard"],
         "official 1000-image challenge test set"),
        ("seed 000 FCT + ResNet-50 (approx. '~')", "dice", 0.90, _WRITEUP,
         "tested on a 15% carve-out of the training set (70/15/15, seed 42), not the official test set"),
        ("seed 000 FCT + ResNet-50 (approx. '~')", "iou", 0.84, _WRITEUP,
         "tested on a 15% carve-out of the training set (70/15/15, seed 42), not the official test set"),
    ],
    "isic2018-task2": [
        ("seed 003 ConvNeXt-T attention U-Net", "dice", 0.3213, _WRITEUP + "; over the five attributes",
         "official challenge test set"),
        ("seed 003 ConvNeXt-T attention U-Net", "jaccard", 0.2052, _WRITEUP + "; over the five attributes",
         "official challenge test set"),
    ],
    "kvasir-seg": [
        ("seed 002 ResNet-50 U-Net", "dice", None, "no test score reported", "880 / 60 / 60 split"),
    ],
}
NOT_COMPARABLE = {"synthetic": "generated replica data: published scores are not comparable"}
#: Rows a suite cannot have on a dataset, said under its table rather than silently missing.
UNSUPPORTED = {"isic2018-task2": "nnU-Net (engine: nnunet) is not run on the five overlapping attribute masks: "
                                 "the engine trains binary datasets only (nnU-Net's region-based training is not wired in)"}


@dataclass
class Entry:
    """One experiment on one dataset, aggregated over its seeds."""

    experiment: str
    runs: list[RunRecord]
    stats: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    image_dice: pd.Series | None = None
    ci: tuple[float, float] | None = None
    verdict: str = MISSING


def _seed_value(rec: RunRecord, key: str) -> float | None:
    v = (rec.metrics.get("per_image") or {}).get(key)
    if v is None and key == "thresholded_jaccard" and rec.per_image is not None and "iou" in rec.per_image:
        iou = rec.per_image["iou"].to_numpy(float)
        v = float(np.where(iou >= 0.65, iou, 0.0).mean())
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _agg(values: list[Any]) -> tuple[float, float] | None:
    """Mean ± std over the seeds that report the value (null / non-numeric entries skipped)."""
    vals = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)]
    return mean_std(vals) if vals else None


def _build_entry(experiment: str, runs: list[RunRecord], notes: list[str]) -> Entry:
    e = Entry(experiment, sorted(runs, key=lambda r: (r.seed is None, r.seed or 0, r.run)))
    for key, _ in METRICS:
        e.stats[key] = _agg([_seed_value(r, key) for r in e.runs])
    e.stats["challenge"] = _agg([(r.metrics.get("challenge") or {}).get("value") for r in e.runs])
    frames = [r.per_image["dice"].astype(float).rename(r.run) for r in e.runs if r.per_image is not None]
    if frames:
        wide = pd.concat(frames, axis=1)  # one column per seed, paired by image id
        complete = wide.dropna()
        if len(complete) < len(wide):
            notes.append(f"{experiment}: {len(wide) - len(complete)} image id(s) not in every seed, left out of CI/test")
        if len(complete):
            e.image_dice = complete.mean(axis=1)
            e.ci = bootstrap_ci(e.image_dice.to_numpy(), N_RESAMPLES, CONFIDENCE, CI_SEED)
    return e


def _rank(entries: list[Entry]) -> int:
    """Sort by mean Dice, then mark each entry against the best; returns the number of comparisons."""
    entries.sort(key=lambda e: -(e.stats["dice"] or (-1.0, 0))[0])
    best = entries[0]
    best.verdict = "best"
    pairs = []
    for e in entries[1:]:
        if best.image_dice is None or e.image_dice is None:
            continue
        ids = best.image_dice.index.intersection(e.image_dice.index)
        if len(ids):
            pairs.append((e, wilcoxon_p(best.image_dice[ids].to_numpy(), e.image_dice[ids].to_numpy())))
    for (e, _), p in zip(pairs, holm([p for _, p in pairs])):
        e.verdict = f"≈ best (p={p:.2g})" if p >= ALPHA else f"* (p={p:.2g})"
    return len(pairs)


def _published(runs: list[RunRecord]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for r in runs:
        for p in r.metrics.get("published") or []:
            key = (p.get("metric"), p.get("value"), p.get("source")) if isinstance(p, dict) else None
            if key is not None and key not in seen:
                seen.add(key)
                out.append(p)
    return out


def _row(rank: int, e: Entry) -> list[str]:
    cost = [r.metrics.get("cost") or {} for r in e.runs]
    size = next((r.image_size for r in e.runs if r.image_size), None)
    flops = mean_of([c.get("flops") for c in cost], 1e9)
    pub = "; ".join(f"{p.get('metric')} {_value(p.get('value'))}" for p in _published(e.runs)) or MISSING
    return [str(rank), f"`{esc(e.experiment)}`", str(len(e.runs))] + [pm(e.stats["dice"])] + [
        MISSING if e.ci is None else f"[{e.ci[0]:.4f}, {e.ci[1]:.4f}]"] + [
        pm(e.stats[k]) for k, _ in METRICS[1:]] + [
        pm(e.stats["challenge"]), esc(pub), mean_of([c.get("params") for c in cost], 1e6),
        flops if flops == MISSING or not size else f"{flops} @{size}px",
        mean_of([c.get("ms_per_image") for c in cost], fmt="{:.1f}"),
        mean_of([c.get("peak_mem_mb") for c in cost], fmt="{:.0f}"),
        duration([c.get("train_time_s", r.info.get("train_time_s")) for c, r in zip(cost, e.runs)]),
        e.verdict]


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else esc(v)


def _references(dataset: str, entries: list[Entry]) -> list[str]:
    """The "published" rows under a table: REFERENCES plus each experiment's own published scores."""
    if dataset in NOT_COMPARABLE:
        return []
    refs = list(REFERENCES.get(dataset, []))
    known = {(m, v) for _, m, v, _, _ in refs}
    for e in entries:
        for p in _published(e.runs):
            if (p.get("metric"), p.get("value")) not in known:
                known.add((p.get("metric"), p.get("value")))
                refs.append((f"{p.get('source', '?')} (for `{e.experiment}`)", p.get("metric", "?"), p.get("value"),
                             "as reported by the source", p.get("note", "")))
    if not refs:
        return []
    rows = [["published", esc(s), esc(m), "not reported" if v is None else _value(v), esc(d), esc(n or MISSING)]
            for s, m, v, d, n in refs]
    return (["Published references (reported elsewhere, not reproduced here):", ""]
            + table(rows, ["", "Source", "Metric", "Value", "Definition", "Split / note"]) + [""])


def _per_attribute(entries: list[Entry]) -> list[str]:
    """Multi-label datasets (ISIC 2018 Task 2): pooled Jaccard / Dice per attribute (the 2019 scorer)."""
    names: list[str] = []
    values: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for e in entries:
        for r in e.runs:
            per = (r.metrics.get("challenge") or {}).get("per_attribute") or {}
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


def _dataset_section(dataset: str, runs: list[RunRecord], suite: Path, notes: list[str], make_plots: bool) -> list[str]:
    by_exp: dict[str, list[RunRecord]] = defaultdict(list)
    for r in runs:
        by_exp[r.experiment or r.run].append(r)
    entries = [_build_entry(x, rs, notes) for x, rs in sorted(by_exp.items())]
    k = _rank(entries)
    challenge = next((r.metrics["challenge"] for r in runs if isinstance(r.metrics.get("challenge"), dict)), {})
    header = ["Rank", "Model", "Seeds", "Dice", "Dice 95% CI"] + [n for _, n in METRICS[1:]] + [
        f"Challenge ({challenge.get('metric', MISSING)})", "Published", "Params (M)", "GMACs", "ms/image",
        "Peak mem (MB)", "Train time", "vs best"]
    out = [f"## Dataset `{dataset}`", ""]
    if dataset in NOT_COMPARABLE:
        out += [f"> **Note:** `{dataset}` is {NOT_COMPARABLE[dataset]}.", ""]
    if dataset in UNSUPPORTED:
        out += [f"> **Unsupported:** {UNSUPPORTED[dataset]}.", ""]
    out += table([_row(i, e) for i, e in enumerate(entries, 1)], header)
    out += ["", f"Ranked by mean Dice. Metrics: mean ± std over seeds (sample std, ddof=1; 0 for one seed). "
            f"Dice 95% CI: {CI_METHOD} bootstrap (scipy.stats.bootstrap, {N_RESAMPLES} resamples, seed {CI_SEED}) "
            f"of the mean per-image Dice over the test images, each image's Dice averaged across seeds. "
            f"vs best: two-sided Wilcoxon signed-rank test on per-image Dice paired by image id against rank 1, "
            f"Holm-corrected over {k} comparison(s); ≈ best = not significant at {ALPHA}, * = significantly worse. "
            f"Challenge: {challenge.get('definition', MISSING)}. Costs are means over seeds; GMACs = multiply-accumulates of one forward pass (fvcore) at the recipe's resolution.", ""]
    out += _per_attribute(entries)
    out += _references(dataset, entries)
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


def write_leaderboard(suite_dir: str | Path, title: str | None = None, make_plots: bool = True) -> Path:
    """Regenerate ``<suite_dir>/leaderboard.md`` (and its plots) from the run folders."""
    suite = Path(suite_dir)
    records = collect_runs(suite)
    good = [r for r in records if r.ok]
    bad = [r for r in records if not r.ok]
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
        lines += _dataset_section(ds, by_ds[ds], suite, notes, make_plots)
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
