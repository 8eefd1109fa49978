"""Reporting: statistics against scipy and hand-computed values; leaderboards from fake run folders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from runs import write_failed_run, write_scored_run

from lesionbench.errors import LesionBenchError
from lesionbench.reporting.leaderboard import collect_runs, write_leaderboard, write_trials_table
from lesionbench.reporting.plots import read_curves
from lesionbench.reporting.stats import mean_ci

PNG = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- fake run folders

IDS = [f"img{i:02d}" for i in range(16)]
BASE = {"good": 0.86, "bad": 0.62, "corrupt": 0.5}


def _per_image(exp: str, seed: int) -> pd.DataFrame:
    """Per-image scores; "twin" is "good" shifted by symmetric +-offsets (not significantly worse)."""
    rng = np.random.default_rng([seed, sum(map(ord, exp))])
    if exp == "twin":
        signs = np.resize([1.0, -1.0], len(IDS))
        dice = _per_image("good", seed)["dice"].to_numpy() - 0.002 + signs * np.linspace(0.01, 0.03, len(IDS))
    else:
        dice = np.clip(BASE[exp] + rng.normal(0, 0.04, len(IDS)), 0.0, 1.0)
    iou = dice / (2 - dice)
    return pd.DataFrame({"id": IDS, "dice": dice, "iou": iou, "precision": np.clip(dice + 0.02, 0, 1),
                         "recall": np.clip(dice - 0.01, 0, 1), "specificity": 0.97, "accuracy": 0.95})


def _curves(path: Path, epochs: int = 3) -> None:
    rows = []
    for e in range(epochs):
        rows.append({"epoch": e, "step": 10 * e + 9, "train/loss": 1.0 / (e + 1), "lr-Adam": 1e-3, "phase": "frozen"})
        rows.append({"epoch": e, "step": 10 * e + 9, "val/loss": 1.2 / (e + 1), "val/dice": 0.5 + 0.1 * e,
                     "phase": "frozen"})
    path.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path, index=False)


RECIPE = """name: good
dataset: {name: isic2018, image_size: 64}
published:
  - {metric: dice, value: 0.9, source: "paper 000 write-up", note: "15% carve-out of the training set"}
"""


def make_run(suite: Path, dataset: str, exp: str, seed: int) -> pd.DataFrame:
    d = suite / f"{dataset}-{exp}-s{seed}"
    df = _per_image(exp, seed)
    iou = df["iou"].to_numpy()
    per_image = {k: float(df[k].mean()) for k in ["dice", "iou", "precision", "recall", "specificity", "accuracy"]}
    per_image["thresholded_jaccard"] = float(np.where(iou >= 0.65, iou, 0).mean())
    write_scored_run(d, experiment=exp, dataset=dataset, seed=seed, rows=df.to_dict("records"),
                     info={"train_time_s": 600}, config_yaml=f"name: {exp}\ndataset:\n  name: {dataset}\n  image_size: 64\n",
                     metrics={
        "per_image": per_image, "pooled": {"dice": per_image["dice"]},
        "challenge": {"metric": "thresholded_jaccard", "value": per_image["thresholded_jaccard"],
                      "definition": "mean per-image Jaccard, 0 below 0.65"},
        "cost": {"params": 24_400_000, "flops": 8.2e9, "ms_per_image": 3.5, "peak_mem_mb": 512,
                 "train_time_s": 600} if exp != "twin" else {},
    })
    _curves(d / "logs" / "metrics.csv")
    return df


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("results") / "demo"
    frames = {}
    for dataset, exps in [("isic2018", ["good", "bad"]), ("synthetic", ["good", "twin"])]:
        for exp in exps:
            for seed in (0, 1):
                frames[(dataset, exp, seed)] = make_run(root, dataset, exp, seed)
    write_failed_run(root / "isic2018-oom-s0", experiment="oom", seed=0,
                     error="Traceback (most recent call last):\n  File x\nRuntimeError: CUDA out of memory")
    make_run(root, "isic2018", "corrupt", 0)
    (root / "isic2018-corrupt-s0" / "metrics.json").write_text('{"experiment": "corrupt", ')  # a copy cut short
    recipes = root.parent / "experiments"  # the published scores' one source: the recipe YAML
    recipes.mkdir()
    (recipes / "good.yaml").write_text(RECIPE)
    path = write_leaderboard(root, recipes=recipes)
    return root, {"frames": frames, "md": path.read_text(), "recipes": recipes}


def _section(md: str, dataset: str) -> str:
    return md.split(f"## Dataset `{dataset}`")[1].split("\n## ")[0]


def _rows(section: str) -> list[list[str]]:
    table = section.split("| Rank |")[1].split("\n\n")[0].splitlines()[2:]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in table]


def _cells(section: str) -> list[dict[str, str]]:
    """The main table's rows as {header: cell}."""
    lines = ("| Rank |" + section.split("| Rank |")[1].split("\n\n")[0]).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    return [dict(zip(header, row, strict=True)) for row in _rows(section)]


def test_collect_runs_records_broken_and_failed(suite):
    root, _ = suite
    recs = {r.run: r for r in collect_runs(root)}
    assert len(recs) == 10
    assert recs["isic2018-oom-s0"].status == "failed"
    assert recs["isic2018-oom-s0"].error == "RuntimeError: CUDA out of memory"
    assert recs["isic2018-corrupt-s0"].status == "broken"
    assert "metrics.json: not valid JSON" in recs["isic2018-corrupt-s0"].error
    with pytest.raises(LesionBenchError, match="no such suite"):
        collect_runs(root / "missing")


def test_leaderboard_tables(suite):
    root, ctx = suite
    md, frames = ctx["md"], ctx["frames"]
    assert "`lesionbench leaderboard --suite demo`" in md and "do not edit by hand" in md
    assert md.count("| Rank |") == 2 and md.count("## Dataset `") == 2
    for dataset, best, other in [("isic2018", "good", "bad"), ("synthetic", "good", "twin")]:
        rows = _cells(_section(md, dataset))
        assert len(rows) == 2
        assert (rows[0]["Rank"], rows[0]["Model"], rows[0]["Seeds"]) == ("1", f"`{best}`", "2")
        assert rows[1]["Model"] == f"`{other}`"
        seeds = [frames[(dataset, best, s)]["dice"].mean() for s in (0, 1)]
        assert rows[0]["Dice"] == f"{np.mean(seeds):.4f} ± {np.std(seeds, ddof=1):.4f}"
        num = np.stack([frames[(dataset, best, s)]["dice"].to_numpy() for s in (0, 1)])
        _, lo, hi = mean_ci(num, np.ones_like(num))
        assert rows[0]["Dice 95% CI"] == f"[{max(lo, 0):.4f}, {min(hi, 1):.4f}]"  # seed and image noise
        assert rows[0]["vs best"] == "best" and rows[0]["Epochs"] == "—" and rows[0]["Size"] == "64px"
    isic = _cells(_section(md, "isic2018"))
    assert isic[1]["vs best"].startswith("* worse (gap ")  # 0.62 vs 0.86 with 2 seeds each: significantly worse
    assert [isic[0][k] for k in ("Params (M)", "GMACs", "ms/image", "Peak mem (MB)", "Train time")] == \
        ["24.40", "8.20", "3.5", "512", "10.0 min"]
    assert isic[0]["Published"] == "dice 0.9"
    synth = _cells(_section(md, "synthetic"))
    assert synth[1]["Params (M)"] == "—" and synth[1]["Published"] == "—"
    assert synth[1]["vs best"].startswith("not significant (gap ")  # symmetric differences: not significant


def test_leaderboard_references_failures_and_plots(suite):
    root, ctx = suite
    md = ctx["md"]
    isic = _section(md, "isic2018")
    assert "| published | ISIC 2018 Task 1 challenge winner | thresholded_jaccard | 0.802 |" in isic
    assert re.search(r"\| published \| paper 000 .*\| dice \| 0\.9 \|.*15% carve-out", isic)
    synth = _section(md, "synthetic")
    assert "published scores are not comparable" in synth and "| published |" not in synth
    failed = md.split("## Failed runs")[1]
    assert "| `isic2018-oom-s0` | — | failed | RuntimeError: CUDA out of memory |" in failed
    assert "`isic2018-corrupt-s0`" in failed and "not valid JSON" in failed
    for rel in ["plots/isic2018_thresholded_jaccard.png", "plots/isic2018_ranks.png", "plots/synthetic_curves.png", "isic2018-good-s0/plots/curves.png"]:
        assert f"]({rel})" in md
        assert (root / rel).read_bytes()[:8] == PNG


def test_leaderboard_is_deterministic_and_trials_are_embedded(suite, tmp_path):
    root, ctx = suite
    assert write_leaderboard(root, recipes=ctx["recipes"]).read_text() == ctx["md"]
    path = write_trials_table(tmp_path / "study", [
        {"number": 1, "state": "TrialState.PRUNED", "params": {"lr": 1e-4}, "value": None},
        {"number": 0, "state": "COMPLETE", "params": {"lr": 0.001, "batch": 8}, "value": 0.8},
    ])
    text = path.read_text()  # a study's board lists its trials, best first (issue 25 item 2: never as seeds)
    assert "## Optuna trials" in text and "Seeds" not in text
    assert text.index("| 1 | 0 | 8 | 0.001 | 0.8000 | — | COMPLETE |") < text.index("| — | 1 | — | 0.0001 | — | — | PRUNED |")


def test_read_curves_merges_train_and_val_rows(tmp_path):
    csv = tmp_path / "metrics.csv"
    pd.DataFrame([
        {"epoch": 0, "step": 4, "train/loss": 0.9, "phase": "frozen"},
        {"epoch": 0, "step": 4, "val/dice": 0.5, "phase": "frozen"},
        {"epoch": 0, "step": 9, "train/loss": 0.5, "phase": "finetune"},
        {"epoch": 0, "step": 9, "val/dice": 0.7, "phase": "finetune"},
    ]).to_csv(csv, index=False)
    c = read_curves(csv)
    assert c["x"].tolist() == [0, 1] and c["phase"].tolist() == ["frozen", "finetune"]
    assert c["train/loss"].tolist() == [0.9, 0.5] and c["val/dice"].tolist() == [0.5, 0.7]


def test_single_seed_without_per_image_csv_degrades_gracefully(tmp_path):
    suite = tmp_path / "one"
    make_run(suite, "kvasir-seg", "good", 3)
    run = suite / "kvasir-seg-good-s3"
    (run / "per_image.csv").unlink()
    m = json.loads((run / "metrics.json").read_text())
    m["cost"] = [1, 2]  # wrong type: ignored with a note, not a crash
    (run / "metrics.json").write_text(json.dumps(m))
    md = write_leaderboard(suite, title="One run", make_plots=False).read_text()
    assert md.startswith("# One run\n") and "![" not in md
    row = _cells(_section(md, "kvasir-seg"))[0]
    metric = next(k for k in row if k.endswith("(ranks)"))
    assert row[metric].endswith("(SD n/a)") and "± 0.0000" not in md and row["vs best"] == "best"
    assert row["Params (M)"] == "—" and row["Train time"] == "10.0 min"  # train time falls back to run.json
    assert "| published | paper 002 ResNet-50 U-Net | dice | not reported |" in md
    assert "per_image.csv missing" in md and "'cost' is not a dict" in md


def test_task2_per_attribute_table_means_over_seeds(tmp_path):
    suite = tmp_path / "t2"
    for seed, (j, d) in enumerate([(0.2, 0.3), (0.4, 0.5)]):
        make_run(suite, "isic2018-task2", "good", seed)
        path = suite / f"isic2018-task2-good-s{seed}" / "metrics.json"
        m = json.loads(path.read_text())
        m["challenge"]["per_attribute"] = {"globules": {"jaccard": j, "dice": d},
                                           "streaks": {"jaccard": j / 2, "dice": d / 2}}
        path.write_text(json.dumps(m))
    md = write_leaderboard(suite, make_plots=False).read_text()
    assert "| Model | globules | streaks |" in md
    assert "| `good` | 0.3000 / 0.4000 | 0.1500 / 0.2000 |" in md


# ----------------------------------------------------------------------------- what ranks, and what is tested

def _write_scored_run(suite: Path, dataset: str, exp: str, seed: int, stats, boundary, classes) -> None:
    """A run folder as train() writes it, from per-image counts (the real summarize)."""
    from lesionbench.metrics.scores import summarize

    ids = [f"ISIC_{i:07d}" for i in range(len(stats))]
    metrics, rows = summarize(stats, ids, dataset, classes, boundary=boundary)
    write_scored_run(suite / f"{exp}-s{seed}", experiment=exp, dataset=dataset, seed=seed, rows=rows, metrics=metrics,
                     config_yaml=f"name: {exp}\ndataset:\n  name: {dataset}\n")


def test_task2_blank_model_ranks_last(tmp_path):
    """Per-image Dice scores an empty-vs-empty attribute 1, so a model that predicts nothing ranked first."""
    import torch

    from lesionbench.data.layouts import TASK2_ATTRIBUTES

    suite, n = tmp_path / "t2", 12
    for seed in (0, 1):
        gen = torch.Generator().manual_seed(seed)
        truth = 100 + torch.randint(0, 20, (n,), generator=gen).double()  # attribute 0 present, the rest absent
        blank = torch.zeros(n, 5, 4, dtype=torch.float64)
        blank[..., 3] = 1000.0
        blank[:, 0, 2], blank[:, 0, 3] = truth, 1000.0 - truth  # misses every lesion pixel
        found = blank.clone()
        found[:, 0] = torch.stack([0.6 * truth, 0.2 * truth, 0.4 * truth, 1000 - 1.2 * truth], -1)
        found[:, 1] = torch.tensor([0.0, 30.0, 0.0, 970.0])  # and a false alarm on an absent attribute
        hd = torch.full((n, 5, 2), 0.0, dtype=torch.float64)
        for exp, stats in [("blank", blank), ("finds-lesions", found)]:
            _write_scored_run(suite, "isic2018-task2", exp, seed, stats, hd + (5.0 if exp == "blank" else 2.0),
                              TASK2_ATTRIBUTES)
    md = write_leaderboard(suite, make_plots=False).read_text()
    section = _section(md, "isic2018-task2")
    rows = _cells(section)
    assert [r["Model"] for r in rows] == ["`finds-lesions`", "`blank`"]
    assert "jaccard_pooled_normalised (ranks)" in section and "Ranked by **jaccard_pooled_normalised**" in section
    metric = "jaccard_pooled_normalised (ranks)"
    assert rows[1][metric] == "0.0000 ± 0.0000" and rows[1]["Dice"] > rows[0]["Dice"]  # last, although its Dice is higher
    assert rows[1]["vs best"].startswith("* worse (gap ")  # two seeds each: tested, and clearly worse
    assert rows[1]["vs best"].endswith("**2 of 2 seeds failed**")  # it predicts no lesion pixel: a collapse
    hd95 = "HD95 (px) [95% CI]"
    assert (rows[0][hd95], rows[1][hd95]) == ("2.00 ± 0.00 [2.00, 2.00]", "5.00 ± 0.00 [5.00, 5.00]")


def test_single_seed_table_prints_no_significance(tmp_path, suite):
    one = tmp_path / "one-seed"
    for exp in ("good", "bad"):
        make_run(one, "kvasir-seg", exp, 0)
    md = write_leaderboard(one, make_plots=False).read_text()
    rows = _rows(_section(md, "kvasir-seg"))
    assert [r[-1] for r in rows] == ["best", "not tested: fewer than two seeds"]
    assert "needs at least two seeds on both sides" in md and "* worse (" not in md and "not significant" not in md
    assert "studentized range critical value" in suite[1]["md"]  # several seeds: the footer names the test


def test_bad_run_folders_are_skipped_and_named(tmp_path, caplog):
    root = tmp_path / "mixed"
    for exp in ("good", "bad"):
        make_run(root, "kvasir-seg", exp, 0)
    (root / "kvasir-seg-bad-s0").rename(root / "_bad-first")  # a leading "_" is still a run
    make_run(root, "kvasir-seg", "good", 1)
    (root / "kvasir-seg-good-s1").rename(root / "kvasir-seg-typo-s0")
    m = json.loads((root / "kvasir-seg-typo-s0" / "metrics.json").read_text())
    m["per_image"]["dice"] = "high"
    (root / "kvasir-seg-typo-s0" / "metrics.json").write_text(json.dumps(m))
    make_run(root, "kvasir-seg", "good", 2)
    (root / "kvasir-seg-good-s2").rename(root / "kvasir-seg-cut-s0")
    csv = root / "kvasir-seg-cut-s0" / "per_image.csv"
    csv.write_text("\n".join(csv.read_text().splitlines()[:11]) + "\n")  # 10 of 16 rows
    with caplog.at_level("WARNING"):
        md = write_leaderboard(root, make_plots=False).read_text()
    assert [r[1] for r in _rows(_section(md, "kvasir-seg"))] == ["`good`", "`bad`"]
    failed = md.split("## Failed runs")[1]
    assert "`kvasir-seg-typo-s0`" in failed and "metrics.json: key 'per_image.dice'" in failed
    assert "`kvasir-seg-cut-s0`" in failed and "10 rows but metrics.json says n_test=16" in failed
    assert "2 finished run(s), 2 failed or unreadable" in md
    warned = [r.getMessage() for r in caplog.records if "skipped run folder" in r.getMessage()]
    assert len(warned) == 2 and any("kvasir-seg-cut-s0" in w for w in warned)


def test_published_scores_only_beside_the_unchanged_recipe(tmp_path):
    root, recipes = tmp_path / "s", tmp_path / "experiments"
    recipes.mkdir()
    (recipes / "good.yaml").write_text(RECIPE.replace("image_size: 64", "image_size: 224"))
    for seed in (0, 1):
        make_run(root, "isic2018", "good", seed)
        path = root / f"isic2018-good-s{seed}" / "metrics.json"
        m = json.loads(path.read_text())
        m["published"] = [{"metric": "dice", "value": 0.9, "source": "paper 000 write-up", "note": ""}]  # a stale copy
        path.write_text(json.dumps(m))
    md = write_leaderboard(root, make_plots=False, recipes=recipes).read_text()
    row = _cells(_section(md, "isic2018"))[0]
    assert row["Published"] == "not comparable: changed dataset.image_size 224→64"
    assert "paper 000 write-up" not in md  # nor among the references under the table
    (recipes / "good.yaml").write_text(RECIPE)
    md = write_leaderboard(root, make_plots=False, recipes=recipes).read_text()
    assert _cells(_section(md, "isic2018"))[0]["Published"] == "dice 0.9"
