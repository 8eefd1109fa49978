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


def test_json_has_every_section_with_positive_numbers(bench_out: Path) -> None:
    data = json.loads((bench_out / "perf.json").read_text())
    for section in ("machine", "load", "settings", "training", "loader", "consumption", "inference", "epoch", "targets"):
        assert section in data, section
    assert data["command"].startswith("lesionbench bench --quick")
    t = data["training"]["test-unet"]
    assert t["lightning_img_s"] > 0 and t["bare_img_s"] > 0
    assert math.isclose(t["ratio"], t["bare_s"][0] / t["lightning_s"][0])  # one repetition: its own ratio
    assert math.isclose(t["ratio"], t["lightning_img_s"] / t["bare_img_s"])
    assert len(t["lightning_s"]) == len(t["bare_s"]) == 1 and t["threads"] == [1]
    for size in ("128", "224", "256"):
        cell = data["loader"]["sizes"][size]
        for aug in ("seed002", "basic"):
            assert cell[aug]["cached_img_s"] > 0 and cell[aug]["uncached_img_s"] > 0
            assert math.isclose(cell[aug]["speedup"], cell[aug]["cached_img_s"] / cell[aug]["uncached_img_s"])
        assert math.isclose(cell["loader_model_ratio"], cell["seed002"]["cached_img_s"] / cell["model_img_s"])
    inf = data["inference"]["test-unet"]
    assert inf["ms_per_image_b1"] > 0 and inf["ms_per_image_b32"] > 0
    assert data["epoch"]["images"] == 4 and data["epoch"]["epoch_s"] > 0
    for section in ("training", "loader", "consumption", "inference", "epoch"):
        assert all(v >= 0 for v in _numbers(data[section])), section
    assert data["load"]["start"] and data["machine"]["cores"] >= 1


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
        "loader": {"augmentations": ["seed002"], "sizes": {
            "128": {"seed002": {"speedup": 8.0}}, "224": {"seed002": {"speedup": 4.0},
                                                        "model": "b", "loader_model_ratio": 2.5}}},
    }
    ratio, cache, feed = evaluate(data)
    assert (ratio["measured"], ratio["met"], "b" in ratio["where"]) == (0.90, False, True)
    assert (cache["measured"], cache["met"], "224 px" in cache["where"]) == (4.0, False, True)
    assert (feed["measured"], feed["met"]) == (2.5, True)
