"""`lesionbench bench --quick`: both files, every section with positive figures, targets judged."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lesionbench.cli import app
from lesionbench.studies.bench_report import evaluate


def _numbers(x: object) -> list[float]:
    if isinstance(x, bool):
        return []
    if isinstance(x, (int, float)):
        return [float(x)]
    if isinstance(x, dict):
        return [v for y in x.values() for v in _numbers(y)]
    if isinstance(x, list):
        return [v for y in x for v in _numbers(y)]
    return []


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("perf")
    result = CliRunner().invoke(app, ["bench", "--quick", "--out", str(out), "--models", "test-unet",
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_json_has_every_section_with_positive_numbers(bench_out: Path) -> None:
    data = json.loads((bench_out / "perf.json").read_text())
    for section in ("machine", "load", "settings", "training", "loader", "consumption", "inference", "epoch", "targets"):
        assert section in data, section
    assert data["command"].startswith("lesionbench bench --quick")
    t = data["training"]["test-unet"]
    assert t["lightning_img_s"] > 0 and t["bare_img_s"] > 0
    logs = [math.log(b / a) for a, b in zip(t["lightning_s"], t["bare_s"], strict=True)]
    assert math.isclose(t["ratio"], math.exp(sum(logs) / len(logs)))  # geometric mean of the blocks' ratios
    assert math.isclose(t["lightning_img_s"], 2 * 2 * 2 / sum(t["lightning_s"]))  # 2 blocks × 2 steps × batch 2
    assert math.isclose(t["bare_img_s"], 2 * 2 * 2 / sum(t["bare_s"]))
    lo, hi = t["ratio_ci95"]
    assert 0 < lo < t["ratio"] < hi and math.isclose(t["ci_halfwidth"], (hi - lo) / 2 / t["ratio"])
    assert t["precise"] == (t["ci_halfwidth"] <= 0.01)
    assert len(t["lightning_s"]) == len(t["bare_s"]) == t["blocks"] == 2 and t["threads"] == [1]
    for size in ("128", "224", "256"):
        cell = data["loader"]["sizes"][size]
        for aug in ("paper002", "none"):
            assert cell[aug]["cached_img_s"] > 0 and cell[aug]["uncached_img_s"] > 0
            assert math.isclose(cell[aug]["speedup"], cell[aug]["cached_img_s"] / cell[aug]["uncached_img_s"])
        assert math.isclose(cell["loader_model_ratio"], cell["paper002"]["cached_img_s"] / cell["model_img_s"])
    inf = data["inference"]["test-unet"]
    assert inf["ms_per_image_b1"] > 0 and inf["ms_per_image_b32"] > 0
    assert data["epoch"]["images"] == 4 and data["epoch"]["epoch_s"] > 0
    for section in ("training", "loader", "consumption", "inference", "epoch"):
        assert all(v >= 0 for v in _numbers(data[section])), section
    assert data["load"]["start"] and data["machine"]["cores"] >= 1


@pytest.mark.slow
def test_markdown_states_each_target_with_its_number(bench_out: Path) -> None:
    data = json.loads((bench_out / "perf.json").read_text())
    md = (bench_out / "perf.md").read_text()
    assert len(data["targets"]) == 3
    for t in data["targets"]:
        row = next(line for line in md.splitlines() if line.startswith(f"| {t['name']} |"))
        assert f"{round(t['measured'], 3):.3g}" in row
        assert ("**met**" if t["met"] else "**missed**") in row
    for heading in ("## Training throughput", "## Data loader", "## Inference latency", "## One ISIC 2018"):
        assert heading in md
    assert "load average" in md and "lesionbench bench --quick" in md


def test_targets_are_judged_against_the_thresholds() -> None:
    data = {
        "settings": {"rate_size": 224},
        "training": {"a": {"ratio": 0.97}, "b": {"ratio": 0.90}},
        "loader": {"augmentations": ["paper002"], "sizes": {
            "128": {"paper002": {"speedup": 8.0}}, "224": {"paper002": {"speedup": 4.0},
                                                        "model": "b", "loader_model_ratio": 2.5}}},
    }
    ratio, cache, feed = evaluate(data)
    assert (ratio["measured"], ratio["met"], "b" in ratio["where"]) == (0.90, False, True)
    assert (cache["measured"], cache["met"], "224 px" in cache["where"]) == (4.0, False, True)
    assert (feed["measured"], feed["met"]) == (2.5, True)


def test_ratio_ci_is_a_t_interval_of_the_log_ratios() -> None:
    from scipy import stats

    from lesionbench.studies.bench_measure import ratio_ci

    light, bare = [1.00, 1.02, 0.98, 1.01], [0.99, 1.00, 0.97, 1.00]
    est = ratio_ci(light, bare)
    logs = [math.log(b / a) for a, b in zip(light, bare, strict=True)]
    lo, hi = stats.t.interval(0.95, len(logs) - 1, loc=sum(logs) / 4, scale=stats.sem(logs))
    assert est["ci95"] == pytest.approx([math.exp(lo), math.exp(hi)])
    assert est["ratio"] == pytest.approx(math.exp(sum(logs) / 4)) and est["blocks"] == 4
    assert ratio_ci([1.0], [0.9])["halfwidth"] == math.inf  # one block: no interval


@pytest.mark.parametrize(("ratio", "halfwidth", "met", "note"), [
    (0.995, 0.005, True, "±0.5%)"), (0.985, 0.005, False, "±0.5%)"), (0.995, 0.02, False, "inconclusive"),
])
def test_ratio_target_needs_the_ci_to_be_within_one_percent(ratio: float, halfwidth: float, met: bool,
                                                             note: str) -> None:
    ci = [ratio * (1 - halfwidth), ratio * (1 + halfwidth)]
    data = {"settings": {"rate_size": 224},
            "training": {"a": {"ratio": ratio, "ratio_ci95": ci, "ci_halfwidth": halfwidth}},
            "loader": {"augmentations": ["paper002"], "sizes": {
                "224": {"paper002": {"speedup": 8.0}, "model": "a", "loader_model_ratio": 2.5}}}}
    target = evaluate(data)[0]
    assert target["met"] is met and note in target["where"] and target["target"].startswith(">= 0.99")


def test_ratio_target_is_inconclusive_when_any_model_s_ci_is_wide() -> None:
    """The worst ratio can be precise while another model's interval is too wide to say anything."""
    data = {"settings": {"rate_size": 224},
            "training": {"a": {"ratio": 0.995, "ratio_ci95": [0.99, 1.0], "ci_halfwidth": 0.005},
                         "b": {"ratio": 1.06, "ratio_ci95": [0.94, 1.2], "ci_halfwidth": 0.121}},
            "loader": {"augmentations": ["paper002"], "sizes": {
                "224": {"paper002": {"speedup": 8.0}, "model": "a", "loader_model_ratio": 2.5}}}}
    target = evaluate(data)[0]
    assert target["met"] is False and "a" in target["where"] and "b (±12.1%)" in target["where"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_only_epoch_at_a_non_square_size_writes_just_that_section(tmp_path: Path) -> None:
    """The GPU check's shape (`make gpu-check`: --only epoch --epoch-size HxW --epoch-batch), run on CPU."""
    out = tmp_path / "gpu"
    result = CliRunner().invoke(app, ["bench", "--quick", "--out", str(out), "--models", "test-unet", "--threads", "1",
                                      "--only", "epoch", "--epoch-size", "48x64", "--epoch-batch", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "perf.json").read_text())
    assert [k for k in ("loader", "training", "consumption", "inference", "epoch") if k in data] == ["epoch"]
    e = data["epoch"]
    assert e["size"] == [48, 64] and e["batch"] == 2 and e["precision"] == "32-true" and e["peak_gpu_mb"] is None
    assert data["targets"] == [] and "--epoch-size 48x64" in data["command"]
    md = (out / "perf.md").read_text()
    assert "48x64 px, batch 2" in md and "## Training throughput" not in md


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args", [["--epoch-size", "7x9"], ["--epoch-size", "big"], ["--only", "gpu"]])
def test_bad_bench_options_are_one_line(args: list[str], tmp_path: Path) -> None:
    """A LesionBenchError, which `main` prints as one line with exit 2, before anything runs."""
    from lesionbench.errors import LesionBenchError

    result = CliRunner().invoke(app, ["bench", "--quick", "--out", str(tmp_path), *args])
    assert isinstance(result.exception, LesionBenchError), result.output
    assert str(result.exception).startswith(f"bench {args[0]} ") and "\n" not in str(result.exception)
    assert not (tmp_path / "perf.json").exists()
