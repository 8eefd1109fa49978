"""Recipe and label gaps found by a line-by-line review of the write-ups (issue 21, section 5)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from runs import write_scored_run

from lesionbench.config import ExperimentConfig, load_config
from lesionbench.data.layouts import Sample
from lesionbench.data.splits import make_split
from lesionbench.metrics.challenge import primary_metric
from lesionbench.reporting.references import DATASET_REFERENCES, recipe_published

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
SEEDS = REPO.parent / "shared" / "seeds"
PAPER004 = ["isic2017_unet", "isic2017_unetplusplus", "isic2017_pspnet"]
#: What the tests below need from the write-ups, kept here so a clone without ../shared runs them; each
#: fact is checked against the write-up's own text by test_recorded_write_up_facts_hold (skipped there).
WRITE_UP = {
    "003": {"reports": "Jaccard index of 0.2052", "defines_jaccard": False},
    "004": {"input_size": {"isic2017_unet": "767×1022", "isic2017_pspnet": "767×1022", "isic2017_unetplusplus": None},
            "says_official_test_set": False},
}
needs_write_ups = pytest.mark.skipif(not SEEDS.is_dir(), reason=f"the write-ups are not beside this clone ({SEEDS}); "
                                                                 "the facts the other tests use are in WRITE_UP")


def _recipe(name: str) -> ExperimentConfig:
    return load_config(EXPERIMENTS / f"{name}.yaml")


def _published(name: str) -> list[dict]:
    return yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text(encoding="utf-8"))["published"]


def _run(run_dir: Path, cfg: ExperimentConfig) -> Path:
    """A finished run folder of ``cfg`` (its config.yaml as train() writes it), without building a model."""
    from lesionbench.metrics.scores import summarize

    ids = ["img0", "img1"]
    stats = torch.tensor([[[1.0, 1.0, 1.0, 1.0]] * cfg.num_classes] * len(ids))
    summary, rows = summarize(stats, ids, cfg.dataset.name, [f"class{i}" for i in range(cfg.num_classes)])
    return write_scored_run(run_dir, experiment=cfg.name, dataset=cfg.dataset.name, seed=cfg.trainer.seed, rows=rows,
                            metrics={**summary, "image_size": cfg.dataset.image_size}, model=cfg.model.name,
                            config_yaml=cfg.to_yaml(), config_hash=cfg.config_hash())


# -- 1. paper 004 keeps the last of its 20 epochs ----------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", PAPER004)
def test_paper004_recipes_keep_the_last_epoch(name: str) -> None:
    """The write-up's loop has no validation and keeps the weights of its last epoch."""
    cfg = _recipe(name)
    assert cfg.trainer.checkpoint == "last" and cfg.trainer.epochs == 20
    assert cfg.early_stopping is None and all(p.early_stopping is None for p in cfg.resolved_phases())


@pytest.mark.timeout(60)
def test_checkpoint_choice_is_hashed_only_when_changed() -> None:
    """trainer.checkpoint: last is another result (another hash); leaving it at best keeps every recorded hash."""
    best = load_config(None, ["trainer.seed=1"])
    last = load_config(None, ["trainer.seed=1", "trainer.checkpoint=last"])
    assert last.config_hash() != best.config_hash()
    recorded = sorted((REPO / "results" / "demo").glob("*/run.json"))
    assert recorded, "results/demo holds the committed demo runs"
    for info in recorded[:5]:
        cfg = ExperimentConfig.model_validate(yaml.safe_load((info.parent / "config.yaml").read_text()))
        assert cfg.trainer.checkpoint == "best"
        assert cfg.config_hash() == json.loads(info.read_text())["config_hash"], info.parent.name


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_checkpoint_last_keeps_the_final_weights_and_reports_their_score(synthetic_env: Path, tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import Callback
    from safetensors.torch import load_file

    from lesionbench.runfolder import read_metrics
    from lesionbench.training.run import train

    class Ruin(Callback):
        """Breaks the model as the last epoch starts (every weight 0, the head's bias -10: all background),
        so that epoch scores no better on validation than the first (a tie keeps the earlier): best on
        validation keeps epoch 1, keeping the last must not."""

        def __init__(self) -> None:
            self.final: dict[str, torch.Tensor] = {}

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if trainer.current_epoch == trainer.max_epochs - 1:
                for p in pl_module.model.parameters():
                    p.data.zero_()
                pl_module.model.head.bias.data.fill_(-10.0)
                for g in trainer.optimizers[0].param_groups:
                    g["lr"] = 0.0  # the ruined weights stay as they are through the last epoch

        def on_train_end(self, trainer, pl_module) -> None:
            self.final = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}

    kept = {}
    for choice in ("best", "last"):
        cfg = ExperimentConfig.model_validate({
            "name": f"keep-{choice}", "dataset": {"name": "synthetic", "image_size": 32, "augmentation": "none"},
            "model": {"name": "unet", "options": {"base_channels": 8}},
            "trainer": {"epochs": 2, "batch_size": 4, "accelerator": "cpu", "devices": 1, "checkpoint": choice},
        })
        ruin = Ruin()
        run = tmp_path / choice
        train(cfg, run, callbacks=[ruin], progress=False)
        weights = load_file(str(run / "model.safetensors"))
        same = all(torch.equal(weights[f"model.{k}"] if f"model.{k}" in weights else weights[k], v)
                   for k, v in ruin.final.items() if v.is_floating_point())
        kept[choice] = same
        if choice == "last":
            import pandas as pd

            log = pd.read_csv(run / "logs" / "metrics.csv")
            last_val = log["val/primary"].dropna().iloc[-1]
            assert read_metrics(run).best_val["val/primary"] == pytest.approx(last_val)
    assert kept == {"best": False, "last": True}


# -- 2. published scores only beside the recipe unchanged, never on synthetic data ------------------------------

RECIPE = """name: rec
dataset: {name: isic2018, image_size: 64, augmentation: paper000}
model: {name: unet, options: {base_channels: 8}}
loss: {terms: [{name: bce}, {name: dice}]}
optimizer: {name: adam, lr: 1.0e-3}
trainer: {epochs: 3, batch_size: 4, seed: 42}
published:
  - {metric: dice, value: 0.9, source: "paper 000 write-up", note: "15% carve-out"}
"""


@pytest.fixture()
def recipes(tmp_path: Path) -> Path:
    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "rec.yaml").write_text(RECIPE)
    return folder


@pytest.mark.timeout(60)
@pytest.mark.parametrize("override, field", [
    ("optimizer.lr=2e-3", "optimizer.lr"),
    ("loss.terms=[{name: bce}]", "loss.terms"),
    ("dataset.augmentation=none", "dataset.augmentation"),
    ("trainer.batch_size=8", "trainer.batch_size"),
    ("trainer.precision=bf16-mixed", "trainer.precision"),
    ("scheduler.name=cosine", "scheduler.name"),
    ("trainer.checkpoint=last", "trainer.checkpoint"),
])
def test_a_changed_recipe_shows_no_published_score(recipes: Path, tmp_path: Path, override: str, field: str) -> None:
    run = _run(tmp_path / "suite" / "rec__s42", load_config(recipes / "rec.yaml", [override]))
    scores, why = recipe_published(run, "rec", recipes)
    assert [s.value for s in scores] == [0.9]
    assert why.startswith("changed ") and field in why


@pytest.mark.timeout(60)
def test_the_unchanged_recipe_shows_its_score_whatever_the_seed_and_the_speed_settings(recipes: Path,
                                                                                        tmp_path: Path) -> None:
    for i, extra in enumerate([[], ["trainer.seed=7"], ["trainer.accelerator=cpu", "dataset.num_workers=4",
                                                        "trainer.logger=wandb", "dataset.root=/data/isic"]]):
        run = _run(tmp_path / "suite" / f"rec__{i}", load_config(recipes / "rec.yaml", extra))
        scores, why = recipe_published(run, "rec", recipes)
        assert why == "" and [(s.metric, s.value) for s in scores] == [("dice", 0.9)], extra


@pytest.mark.timeout(60)
def test_synthetic_runs_never_show_published_scores(recipes: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from lesionbench.data.synthetic import MARKER

    replica = tmp_path / "replica"
    replica.mkdir()
    (replica / MARKER).write_text("{}")
    monkeypatch.setenv("LESIONBENCH_SYNTHETIC", str(tmp_path / "elsewhere"))
    # as `lesionbench run ... --synthetic` makes it: same recipe, dataset.root = the replica
    run = _run(tmp_path / "a" / "rec__s42", load_config(recipes / "rec.yaml", synthetic=False,
                                                          overrides=[f"dataset.root={replica}"]))
    assert "synthetic" in recipe_published(run, "rec", recipes)[1]
    monkeypatch.setenv("LESIONBENCH_SYNTHETIC", str(tmp_path / "default-replica"))
    run = _run(tmp_path / "b" / "rec__s42", load_config(recipes / "rec.yaml", synthetic=True))
    assert "synthetic" in recipe_published(run, "rec", recipes)[1]
    run = _run(tmp_path / "c" / "rec__s42", load_config(recipes / "rec.yaml", ["dataset.root=synthetic"]))
    assert "synthetic" in recipe_published(run, "rec", recipes)[1]
    # read back elsewhere (no replica on this machine): the suite folder still says --synthetic
    run = _run(tmp_path / "demo+synthetic" / "rec__s42", load_config(recipes / "rec.yaml", ["dataset.root=/gone"]))
    assert "synthetic" in recipe_published(run, "rec", recipes)[1]


# -- 3. paper 003's 0.2052 is an undefined Jaccard ---------------------------------------------------------------

@pytest.mark.timeout(60)
def test_paper003_scores_are_labelled_undefined(tmp_path: Path) -> None:
    published = _published("isic2018_task2_convnext")
    jaccard = next(p for p in published if p["value"] == 0.2052)
    assert "undefined" in jaccard["metric"] and jaccard["metric"] != "iou"
    assert "challenge Jaccard" not in jaccard["note"] and "does not define" in jaccard["note"]
    cfg = _recipe("isic2018_task2_convnext")
    scores, why = recipe_published(_run(tmp_path / "s" / "r", cfg), cfg.name, EXPERIMENTS)
    assert why == "" and {s.metric for s in scores} == {"dice (undefined)", "jaccard (undefined)"}
    assert not WRITE_UP["003"]["defines_jaccard"] and "0.2052" in WRITE_UP["003"]["reports"]


# -- 4. paper 004: which test set and which input size are known -------------------------------------------------

@pytest.mark.timeout(60)
def test_paper004_notes_say_only_what_the_write_up_says() -> None:
    facts = WRITE_UP["004"]
    for name in PAPER004:
        for p in _published(name):
            assert ("official" in p["note"]) == facts["says_official_test_set"] and "not stated" in p["note"]
            size = facts["input_size"][name]
            assert (size is not None and size in p["note"]) == (size is not None), (name, p["note"])
            assert size is not None or "767×1022" not in p["note"], (name, p["note"])


@needs_write_ups
@pytest.mark.timeout(60)
def test_recorded_write_up_facts_hold() -> None:
    """WRITE_UP above says what the write-ups say (run wherever ../shared/seeds is beside the clone)."""
    text003 = next(SEEDS.glob("003_*.txt")).read_text(encoding="utf-8")
    assert WRITE_UP["003"]["reports"] in text003
    defines = bool(re.search(r"Jaccard\s*=|Jaccard is (defined|computed)", text003))
    assert defines == WRITE_UP["003"]["defines_jaccard"]
    text = next(SEEDS.glob("004_*.txt")).read_text(encoding="utf-8")
    body = text.split("\nModel 1: U-Net\n")[-1]  # past the contents list, which names the models too
    sections = {"isic2017_unet": body.split("\nModel 2: U-Net++")[0],
                "isic2017_unetplusplus": body.split("\nModel 2: U-Net++")[-1].split("\nModel 3: PSPNet")[0],
                "isic2017_pspnet": body.split("\nModel 3: PSPNet")[-1]}
    for name, section in sections.items():
        size = WRITE_UP["004"]["input_size"][name]
        assert ("Height = 767, Width = 1022" in section) == (size == "767×1022"), name
        assert size is not None or "767" not in section, name
    assert ("official" in text.lower()) == WRITE_UP["004"]["says_official_test_set"]


@pytest.mark.timeout(60)
def test_the_write_ups_nested_unet_fails_at_767_but_ours_runs() -> None:
    """Why the U-Net++ note cannot say "767×1022 input": the listing's pool/upsample pair breaks on odd sides."""
    pool, up = torch.nn.MaxPool2d(2, 2), torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
    x0 = torch.zeros(1, 1, 767, 32)
    with pytest.raises(RuntimeError, match="Expected size 767 but got size 766"):
        torch.cat([x0, up(pool(x0))], 1)
    from lesionbench.models.registry import create_model

    model = create_model("unetplusplus", num_classes=1, deep_supervision=False)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 47, 62)).shape[-2:] == (47, 62)  # odd sides padded and cropped back


# -- 5. Keras's ResNet-50 weights are not torchvision's ----------------------------------------------------------

@pytest.mark.timeout(60)
def test_keras_resnet50_weights_are_called_the_closest_available() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    recipe = (EXPERIMENTS / "isic2018_fct_resnet50.yaml").read_text(encoding="utf-8")
    assert "Keras ResNet50 `imagenet` = torchvision" not in readme
    assert not re.search(r"Keras ResNet50 'imagenet' =", recipe)
    for text in (readme, recipe):
        assert "closest available" in text and "v1.5" in text and "caffe" in text.lower()


# -- 6. SOURCE.md states the salt the code uses ------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_kvasir_halving_follows_source_md_literally() -> None:
    folder = EXPERIMENTS / "splits" / "kvasir-seg"
    doc = (folder / "SOURCE.md").read_text(encoding="utf-8")
    keys = re.findall(r"`([^`]*<id>[^`]*)`", doc)
    assert len(keys) == 1, keys  # the one text whose sha256 orders the 120
    key = keys[0]
    assert re.search(r"sha256 digest of the UTF-8 text", doc) and "ascending" in doc and "first 60" in doc
    train = (folder / "train.txt").read_text().split()
    held = (folder / "val.txt").read_text().split()
    ordered = sorted(held, key=lambda i: (hashlib.sha256(key.replace("<id>", i).encode("utf-8")).hexdigest(), i))
    samples = [Sample(id=i, image=Path(f"{i}.jpg")) for i in train + held]
    split = make_split("kvasir-seg", "paper002", {"all": samples})
    assert split["train"] == sorted(train)
    assert split["val"] == sorted(ordered[:60]) and split["test"] == sorted(ordered[60:])


# -- 7. Kvasir-SEG's ranking metric, with its source -------------------------------------------------------------

@pytest.mark.timeout(60)
def test_kvasir_ranking_metric_is_cited() -> None:
    assert primary_metric("kvasir-seg").name == "dice"
    cited = [r for r in DATASET_REFERENCES["kvasir-seg"] if "Jha et al." in r[0] and "MMM 2020" in r[0]]
    assert len(cited) == 1 and cited[0][1] == "dice" and "mIoU" in cited[0][3] and "Medico 2020" in cited[0][4]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ranks = readme.split("**What ranks.**")[1].split("**Leaderboards**")[0]
    assert "Kvasir-SEG has no organisers' ranking" in ranks and "MMM 2020" in ranks and "Medico 2020" in ranks


# -- 8. paper 000's "~0.90" keeps its "~" ------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_paper000_approximate_scores_are_shown_as_approximate(tmp_path: Path) -> None:
    from lesionbench.reporting.leaderboard import write_leaderboard

    assert all(p["approximate"] for p in _published("isic2018_fct_resnet50"))
    cfg = _recipe("isic2018_fct_resnet50")
    suite = tmp_path / "papers"
    _run(suite / f"{cfg.name}__s42", cfg)
    scores, why = recipe_published(suite / f"{cfg.name}__s42", cfg.name, EXPERIMENTS)
    assert why == "" and [s.value for s in scores] == ["~0.90", "~0.84", "~0.91", "~0.92"]
    md = write_leaderboard(suite, make_plots=False, recipes=EXPERIMENTS).read_text()
    assert "dice ~0.90; iou ~0.84; precision ~0.91; recall ~0.92" in md
    assert re.search(r"\| paper 000 \(DermSeg\) .*\| dice \| ~0\.90 \|", md)
    assert not re.search(r"\| dice \| 0\.9 \|", md)
