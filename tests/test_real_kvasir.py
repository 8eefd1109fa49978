"""Real images end to end (issue 22 §2): the full Kvasir-SEG dataset beside the repository
(``../shared/data/kvasir-seg``, or $LESIONBENCH_KVASIR_REAL), through the real CLI.

Original JPEGs 332-1920 px wide, RGB JPEG masks with compression noise: where a tool breaks. A
tiny U-Net is trained 1 epoch at 64 px on 40 real training pairs (a split file) and tested on the
60 ids of the official Kvasir-SEG test half; its predictions are scored again by `score`, and
`evaluate` on a copy of just those 60 pairs (the test set alone, no training images) must give the
run's own test numbers exactly.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from runs import center_logits
from typer.testing import CliRunner

from lesionbench.cli import app
from lesionbench.config import load_config
from lesionbench.studies.train import train

REPO = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("LESIONBENCH_KVASIR_REAL") or REPO / ".." / "shared" / "data" / "kvasir-seg").resolve()
OFFICIAL = REPO / "experiments" / "splits" / "kvasir-seg"
pytestmark = pytest.mark.skipif(not (REAL / "Kvasir-SEG" / "images").is_dir(),
                                reason=f"real Kvasir-SEG not found at {REAL} (set LESIONBENCH_KVASIR_REAL)")


@pytest.fixture(scope="module", autouse=True)
def _workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Splits, caches and check markers go to a temporary folder, never beside the shared data; one
    torch thread (on 2 cores shared with other work, two spinning threads ran these convolutions 60x
    slower), the same for the run's test loop and for `evaluate`."""
    import torch

    mp, threads = pytest.MonkeyPatch(), torch.get_num_threads()
    mp.setenv("LESIONBENCH_WORKDIR", str(tmp_path_factory.mktemp("work")))
    mp.delenv("LESIONBENCH_DATA", raising=False)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    mp.undo()


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{result.output}{result.exception!r}"
    return result.output


def _copy_pairs(ids: list[str], dest: Path) -> Path:
    """A Kvasir-SEG folder (official layout) holding only these pairs."""
    for sub in ("images", "masks"):
        (dest / "Kvasir-SEG" / sub).mkdir(parents=True)
        for i in ids:
            shutil.copy2(REAL / "Kvasir-SEG" / sub / f"{i}.jpg", dest / "Kvasir-SEG" / sub / f"{i}.jpg")
    return dest


@pytest.mark.timeout(120)
def test_verify_all_1000_real_pairs() -> None:
    out = _cli("data", "verify", "kvasir-seg", "--root", str(REAL))
    assert "OK (all 1000; 0 error(s)" in out, out


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny U-Net trained 1 epoch at 64 px on 32 + 8 real training pairs (a split file), tested
    on the 60 ids of the official test half."""
    from lesionbench.data.splits import kvasir_official

    tmp = tmp_path_factory.mktemp("real")
    ids = [i for f in ("train.txt", "val.txt") for i in (OFFICIAL / f).read_text().split()]
    official = kvasir_official(ids)
    assert official is not None
    split = {"train": official["train"][:32], "val": official["train"][32:40], "test": official["test"]}
    (tmp / "split.json").write_text(json.dumps(split))
    (tmp / "exp.yaml").write_text(f"""name: real_tiny
dataset: {{name: kvasir-seg, root: {REAL}, image_size: 64, split: {tmp / 'split.json'}, augmentation: none,
          num_workers: 0}}
model: {{name: unet, options: {{base_channels: 8}}}}
loss: {{terms: [{{name: bce}}, {{name: dice}}]}}
optimizer: {{name: adam, lr: 1.0e-2}}
scheduler: {{name: none}}
trainer: {{epochs: 1, batch_size: 4, seed: 0}}
""")
    # trained as `lesionbench run exp.yaml --out out` trains it, with the head's bias centred on the test
    # logits (runs.center_logits), so its masks differ per image on any CPU, whatever one epoch learned
    run = tmp / "out" / "adhoc" / "real_tiny__s0"
    train(load_config(tmp / "exp.yaml"), run, callbacks=[center_logits()], progress=False)
    return {"tmp": tmp, "run": run, "test": split["test"]}


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_predict_then_score_equals_the_runs_per_image_csv(real_run: dict) -> None:
    run, tmp = real_run["run"], real_run["tmp"]
    images = [str(REAL / "Kvasir-SEG" / "images" / f"{i}.jpg") for i in real_run["test"]]
    # `--format isic` is refused for a Kvasir-SEG run (not an ISIC dataset): predict's own <id>_mask.png
    _cli("predict", "--run", str(run), *images, "--out", str(tmp / "pred"), "--overlays", str(tmp / "overlays"))
    assert sorted(p.name for p in (tmp / "pred").iterdir()) == sorted(f"{i}_mask.png" for i in real_run["test"])
    # the truths are Kvasir's own RGB JPEG masks (<id>.jpg), paired by id with <id>_mask.png
    out = _cli("score", str(REAL / "Kvasir-SEG" / "masks"), str(tmp / "pred"), "--dataset", "kvasir-seg",
               "--output", "json")
    report = json.loads(out[out.index("{"):])
    scored = pd.DataFrame(report["per_image"]).T.sort_index()
    loop = pd.read_csv(run / "per_image.csv", index_col="id").sort_index()
    assert report["n_scored"] == 60 and list(scored.index) == list(loop.index)
    assert loop["dice"].std() > 0.01  # centred logits: predictions differ per image, the comparison has teeth
    for col in ("dice", "iou", "precision", "recall"):
        assert np.allclose(scored[col].astype(float), loop[col], rtol=0, atol=1e-6), col
    metrics = json.loads((run / "metrics.json").read_text())
    assert report["value"] == pytest.approx(metrics["challenge"]["value"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_evaluate_on_a_copy_of_the_test_set_reproduces_the_run_not_another_roots_result(real_run: dict) -> None:
    run, tmp, test = real_run["run"], real_run["tmp"], real_run["test"]
    # another root first: the same 60 ids, one truth emptied
    other = _copy_pairs(test, tmp / "other" / "kvasir-seg")
    from PIL import Image

    mask = other / "Kvasir-SEG" / "masks" / f"{test[0]}.jpg"
    with Image.open(mask) as im:
        Image.new("RGB", im.size).save(mask)
    assert _cli("evaluate", "--run", str(run), "--dataset", "kvasir-seg", "--root", str(other)).startswith("evaluated")
    ev = run / "eval" / "kvasir-seg"
    stored = json.loads((ev / "metrics.json").read_text())
    # a copy of the test set alone (no training images): evaluated, and exactly the run's own test numbers
    copy = _copy_pairs(test, tmp / "copy" / "kvasir-seg")
    out = _cli("evaluate", "--run", str(run), "--dataset", "kvasir-seg", "--root", str(copy))
    assert out.startswith("evaluated"), out
    own = json.loads((run / "metrics.json").read_text())
    got = json.loads((ev / "metrics.json").read_text())
    assert got["excluded"]["count"] == 0 and got["n_test"] == own["n_test"] == 60
    assert got["per_image"] == own["per_image"] and got["challenge"] == own["challenge"]
    assert got["evaluation"]["target_content"] != stored["evaluation"]["target_content"]
    assert got["per_image"] != stored["per_image"]
    rows = pd.read_csv(ev / "per_image.csv", index_col="id").sort_index()
    loop = pd.read_csv(run / "per_image.csv", index_col="id").sort_index()
    pd.testing.assert_frame_equal(rows[loop.columns], loop, check_exact=True)
