"""Real images end to end (issue 22 §2): the full Kvasir-SEG dataset beside the repository
(``../shared/data/kvasir-seg``, or $LESIONBENCH_KVASIR_REAL), through the real CLI.

Original JPEGs 332-1920 px wide, RGB JPEG masks with compression noise: where a tool breaks.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lesionbench.cli import app

REAL = Path(os.environ.get("LESIONBENCH_KVASIR_REAL", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
                           / "kvasir-seg")).resolve()
OFFICIAL = Path(__file__).resolve().parents[1] / "experiments" / "splits" / "kvasir-seg"
pytestmark = pytest.mark.skipif(not (REAL / "Kvasir-SEG" / "images").is_dir(),
                                reason=f"real Kvasir-SEG not found at {REAL} (set LESIONBENCH_KVASIR_REAL)")


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_verify_all_1000_real_pairs() -> None:
    out = _cli("data", "verify", "kvasir-seg", "--root", str(REAL))
    assert "1000" in out


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny U-Net trained 2 epochs at 64 px on 40 real training pairs (split file), tested on the
    60 official test ids."""
    from lesionbench.data.splits import kvasir_official

    tmp = tmp_path_factory.mktemp("real")
    ids = [i for f in ("train.txt", "val.txt") for i in (OFFICIAL / f).read_text().split()]
    official = kvasir_official(ids)
    split = {"train": official["train"][:40], "val": official["train"][40:48], "test": official["test"]}
    (tmp / "split.json").write_text(json.dumps(split))
    (tmp / "exp.yaml").write_text(f"""name: real_tiny
dataset: {{name: kvasir-seg, root: {REAL}, image_size: 64, split: {tmp / 'split.json'}, augmentation: none,
          num_workers: 0}}
model: {{name: unet, options: {{base_channels: 8}}}}
loss: {{terms: [{{name: bce}}, {{name: dice}}]}}
optimizer: {{name: adam, lr: 1.0e-2}}
scheduler: {{name: none}}
trainer: {{epochs: 2, batch_size: 8, seed: 0}}
""")
    mp = pytest.MonkeyPatch()
    mp.setenv("LESIONBENCH_WORKDIR", str(tmp / "work"))
    try:
        _cli("run", str(tmp / "exp.yaml"), "--out", str(tmp / "out"))
    finally:
        mp.undo()
    return {"tmp": tmp, "run": tmp / "out" / "adhoc" / "real_tiny__s0", "test": split["test"]}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_predict_then_score_equals_the_test_loop(real_run: dict) -> None:
    run, tmp = real_run["run"], real_run["tmp"]
    images = [str(REAL / "Kvasir-SEG" / "images" / f"{i}.jpg") for i in real_run["test"]]
    _cli("predict", "--run", str(run), *images, "--out", str(tmp / "pred"))
    out = _cli("score", str(REAL / "Kvasir-SEG" / "masks"), str(tmp / "pred"), "--dataset", "kvasir-seg",
               "--output", "json")
    report = json.loads(out[out.index("{"):])
    scored = pd.DataFrame(report["per_image"]).T.sort_index()
    loop = pd.read_csv(run / "per_image.csv", index_col="id").sort_index()
    assert report["n_scored"] == 60 and list(scored.index) == list(loop.index)
    assert np.abs(loop["dice"].mean()) > 0.05  # the model predicts something: the comparison is not trivial
    for col in ("dice", "iou", "precision", "recall"):
        assert np.allclose(scored[col].astype(float), loop[col], atol=1e-6), col
    metrics = json.loads((run / "metrics.json").read_text())
    assert report["value"] == pytest.approx(metrics["challenge"]["value"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_evaluate_on_a_copy_reproduces_the_run_and_a_changed_copy_is_evaluated_again(real_run: dict) -> None:
    run, tmp = real_run["run"], real_run["tmp"]
    copy = tmp / "copy" / "kvasir-seg"
    shutil.copytree(REAL, copy, ignore=shutil.ignore_patterns("SHA256SUMS", "*.md"))
    _cli("evaluate", "--run", str(run), "--dataset", "kvasir-seg", "--root", str(copy))
    ev = run / "eval" / "kvasir-seg"
    own = json.loads((run / "metrics.json").read_text())
    got = json.loads((ev / "metrics.json").read_text())
    assert got["excluded"]["count"] == 0 and got["n_test"] == own["n_test"] == 60
    assert got["per_image"] == own["per_image"] and got["challenge"]["value"] == own["challenge"]["value"]
    # another folder with other content: evaluated again, never the stored result of the first
    victim = real_run["test"][0]
    from PIL import Image

    mask = copy / "Kvasir-SEG" / "masks" / f"{victim}.jpg"
    with Image.open(mask) as im:
        Image.new("RGB", im.size).save(mask)  # an empty mask
    out = _cli("evaluate", "--run", str(run), "--dataset", "kvasir-seg", "--root", str(copy))
    assert "skipped" not in out
    again = json.loads((ev / "metrics.json").read_text())
    assert again["per_image"]["dice"] != own["per_image"]["dice"]
    assert again["evaluation"]["target_content"] != got["evaluation"]["target_content"]
