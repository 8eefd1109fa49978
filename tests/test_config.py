"""Config schema: good files load, bad keys and values fail with one line naming the key."""

from pathlib import Path

import pytest
import yaml

from lesionbench.config import ConfigError, ExperimentConfig, apply_overrides, load_config

EXPERIMENTS = sorted(p for p in (Path(__file__).parents[1] / "experiments").glob("*.yaml") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_file_validates(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert cfg.resolved_phases(), "at least one phase"
    assert all(p.epochs and p.optimizer for p in cfg.resolved_phases())


def test_defaults_and_overrides() -> None:
    cfg = load_config(None, ["optimizer.lr=1e-4", "trainer.epochs=3", "dataset.name=isic2018-task2"])
    assert cfg.optimizer.lr == pytest.approx(1e-4)
    assert cfg.trainer.epochs == 3
    assert cfg.num_classes == 5


def test_override_parses_yaml_scalars() -> None:
    data = apply_overrides({}, ["a.b=true", "a.c=[1, 2]", "d=hello"])
    assert data == {"a": {"b": True, "c": [1, 2]}, "d": "hello"}


def test_unknown_key_names_key_and_allowed(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("optimizer: {name: adam, learning_rate: 0.1}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    msg = str(exc.value)
    assert "optimizer.learning_rate" in msg and "lr" in msg and "weight_decay" in msg
    assert len(msg.splitlines()) == 1


def test_bad_value_lists_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["optimizer.name=adamax"])
    msg = str(exc.value)
    assert "optimizer.name" in msg and "'adamw'" in msg and "'adabelief'" in msg


def test_bad_set_syntax_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["optimizer.lr"])
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_config(tmp_path / "missing.yaml")


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("dataset:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: line"):
        load_config(f)


def test_phases_inherit_and_override() -> None:
    cfg = ExperimentConfig.model_validate({
        "optimizer": {"name": "adam", "lr": 1e-3},
        "trainer": {"epochs": 7},
        "phases": [{"name": "a", "freeze": ["encoder"]},
                   {"name": "b", "epochs": 2, "lr": 1e-4, "scheduler": {"name": "reduce-on-plateau"}}],
    })
    a, b = cfg.resolved_phases()
    assert (a.epochs, a.optimizer.lr, a.scheduler.name) == (7, 1e-3, "none")
    assert (b.epochs, b.optimizer.lr, b.scheduler.name) == (2, 1e-4, "reduce-on-plateau")


def test_config_hash_ignores_descriptions_only() -> None:
    a = ExperimentConfig()
    b = ExperimentConfig(description="words")
    c = ExperimentConfig(trainer={"seed": 1})
    assert a.config_hash() == b.config_hash() != c.config_hash()


# ----------------------------------------------------------------------------- one loader, --quick after validation

@pytest.mark.parametrize("override", ["trainer.epochs=ten", "trainer.epochs=-2", "trainer.batch_size=four",
                                      "dataset.image_size=big"])
def test_quick_never_hides_a_bad_value(override: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as exc:
        load_config(None, [override], quick=True, synthetic=True)
    assert len(str(exc.value).splitlines()) == 1


def test_quick_and_synthetic_apply_after_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LESIONBENCH_SYNTHETIC", str(tmp_path / "replica"))
    raw = {"name": "x", "trainer": {"epochs": 7, "batch_size": 16}, "dataset": {"image_size": 256},
           "model": {"name": "smp:Unet/resnet18", "options": {"weights": "imagenet"}},
           "phases": [{"name": "a", "epochs": 3, "early_stopping": {"patience": 9}}]}
    cfg = load_config(raw, ["optimizer.lr=1e-4"], quick=True, synthetic=True)
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.dataset.image_size, cfg.dataset.subset) == (1, 4, 64, 16)
    assert cfg.phases[0].epochs == 1 and cfg.phases[0].early_stopping.patience == 1
    assert cfg.model.options["weights"] == "none" and cfg.optimizer.lr == pytest.approx(1e-4)
    assert cfg.dataset.root == str(tmp_path / "replica")
    assert raw["trainer"] == {"epochs": 7, "batch_size": 16} and "root" not in raw["dataset"], "caller's dict untouched"
    assert load_config(raw) == load_config(raw, quick=False, synthetic=False)


def test_typed_values_use_the_same_setter_as_set(tmp_path: Path) -> None:
    cfg = load_config({"name": "t"}, ["trainer.epochs=3"], values={"optimizer.lr": 0.02, "loss.terms": [{"name": "dice"}]})
    assert cfg.trainer.epochs == 3 and cfg.optimizer.lr == 0.02 and [t.name for t in cfg.loss.terms] == ["dice"]
    with pytest.raises(ConfigError, match="tune.params optimizer.lr.x: 'lr' is not a section"):
        load_config({"optimizer": {"lr": 0.1}}, values={"optimizer.lr.x": 1})


# ----------------------------------------------------------------------------- names that stay under --out

@pytest.mark.parametrize("name", ["..", "../../x", "a/b", ".hidden", "with space", "", "a\\b"])
def test_folder_names_cannot_leave_out(name: str, tmp_path: Path) -> None:
    from lesionbench.config import safe_folder_name
    from lesionbench.studies.suite import load_suite

    with pytest.raises(ConfigError, match="--study-name"):
        safe_folder_name(name, "--study-name")
    with pytest.raises(ConfigError, match="name"):
        load_config(None, [f"name={name!r}"])
    suite = tmp_path / "s.yaml"
    suite.write_text(f"name: {name!r}\nexperiments: []\n")
    with pytest.raises(ConfigError, match="name"):
        load_suite(str(suite))


def test_good_folder_names_pass() -> None:
    from lesionbench.config import safe_folder_name

    for name in ("demo", "isic2018_fct_resnet50", "kvasir-seg_smp-Unet-resnet34", "demo+synthetic+quick", "a.b"):
        assert safe_folder_name(name, "--suite") == name


# ----------------------------------------------------------------------------- the environment, read in one place

@pytest.mark.timeout(60)
def test_weights_variable_is_recorded_in_the_config_and_its_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    """$LESIONBENCH_WEIGHTS is resolved into model.default_weights when a config is loaded: config.yaml says
    which weights a run used and the hash changes with them; a config read back keeps what it recorded."""
    from lesionbench.config import parse_config

    monkeypatch.delenv("LESIONBENCH_WEIGHTS", raising=False)
    plain = load_config(None)
    assert plain.model.default_weights == "imagenet" and plain.config_hash() == ExperimentConfig().config_hash()
    monkeypatch.setenv("LESIONBENCH_WEIGHTS", "none")
    offline = load_config(None)
    assert offline.model.default_weights == "none" and "default_weights: none" in offline.to_yaml()
    assert offline.config_hash() != plain.config_hash()
    monkeypatch.setenv("LESIONBENCH_WEIGHTS", "imagenet")  # a run folder's config.yaml, read in another shell
    again = parse_config(yaml.safe_load(offline.to_yaml()))
    assert again.model.default_weights == "none" and again.config_hash() == offline.config_hash()
    named = load_config(None, ["model.options.weights=imagenet"])  # weights the model names: the variable is unused
    monkeypatch.setenv("LESIONBENCH_WEIGHTS", "none")
    assert load_config(None, ["model.options.weights=imagenet"]).config_hash() == named.config_hash()


@pytest.mark.timeout(120)
def test_a_model_is_built_with_the_weights_its_config_records(monkeypatch: pytest.MonkeyPatch) -> None:
    from lesionbench.training.run import network_config
    from lesionbench.training.task import create_network

    monkeypatch.setenv("LESIONBENCH_WEIGHTS", "none")
    cfg = load_config(None, ["model.name=smp:Unet/resnet18", "dataset.image_size=32"])
    monkeypatch.setenv("LESIONBENCH_WEIGHTS", "imagenet")  # changed after loading: the recorded none is built
    assert create_network(network_config(cfg)).weights_id == "none"  # (imagenet would download here)
    scratch = load_config(None, ["model.name=unet"])  # takes no encoder weights: nothing is added
    assert network_config(scratch) is scratch


@pytest.mark.timeout(60)
def test_a_loaded_config_is_frozen() -> None:
    """Validated once, then read only: what a run was given is what it records (copies change it)."""
    from pydantic import ValidationError

    cfg = load_config(None, ["optimizer.lr=1e-3"], values={"phases": [{"name": "head", "lr": 1e-2}, {"name": "all"}]})
    with pytest.raises(ValidationError, match="frozen"):
        cfg.trainer.seed = 7
    with pytest.raises(ValidationError, match="frozen"):
        cfg.optimizer = cfg.optimizer.model_copy(update={"lr": 1.0})
    assert [p.optimizer.lr for p in cfg.resolved_phases()] == [1e-2, 1e-3] and cfg.optimizer.lr == 1e-3
    assert ExperimentConfig(engine="nnunet").nnunet.configuration == "2d"


def test_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from lesionbench.errors import LesionBenchError
    from lesionbench.settings import settings

    monkeypatch.delenv("LESIONBENCH_DATA", raising=False)
    with pytest.raises(LesionBenchError, match="LESIONBENCH_DATA is not set: export LESIONBENCH_DATA="):
        settings().data_root()
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "soon")
    with pytest.raises(LesionBenchError, match="WANDB_INIT_TIMEOUT='soon'"):
        settings()


def test_no_package_module_reads_the_environment_itself() -> None:
    root = Path(__file__).parents[1] / "lesionbench"
    readers = [p.relative_to(root) for p in root.rglob("*.py")
               if p.name != "settings.py" and any(s in p.read_text() for s in ("os.environ", "os.getenv"))]
    assert readers == [], f"read the environment through lesionbench.settings: {readers}"


def test_cli_flags_become_config_and_warnings_stay_on(tmp_path: Path) -> None:
    """--wandb-checkpoints is a config option (not an environment variable); no blanket warning filter."""
    import warnings

    from typer.testing import CliRunner

    from lesionbench.cli import app

    exp = tmp_path / "e.yaml"
    exp.write_text("name: e\n")
    before = list(warnings.filters)
    try:
        result = CliRunner().invoke(app, ["run", str(exp), "--wandb-checkpoints", "--logger", "csv", "--dry-run"])
        assert result.exit_code == 0, result.output
        assert not [f for f in warnings.filters if f[0] == "ignore" and f[1] is None and f[2] is Warning]
    finally:
        warnings.filters[:] = before
    assert "LESIONBENCH_WANDB_CHECKPOINTS" not in __import__("os").environ
    assert load_config(None, ["trainer.wandb_checkpoints=true"]).trainer.wandb_checkpoints


@pytest.mark.parametrize(("override", "says"), [
    ({"dataset": {"split": "seed002"}}, "dataset.split"),
    ({"dataset": {"augmentation": "seed004"}}, "dataset.augmentation"),
    ({"seed_ref": "004"}, "seed_ref"),
])
def test_names_that_meant_a_write_up_say_their_new_name(override: dict, says: str, tmp_path: Path) -> None:
    """17.9: "seed" is the random seed only; a write-up's recipe, split and augmentation are "paper"."""
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"name": "old", **override}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    line = str(err.value)
    assert "\n" not in line and says in line and "paper" in line, line


def test_the_seeds_suite_is_now_papers() -> None:
    from lesionbench.studies.suite import load_suite
    assert load_suite("papers").name == "papers"
    with pytest.raises(ConfigError, match="'seeds' is now called 'papers'"):
        load_suite("seeds")


def test_image_size_is_a_side_or_a_height_and_width(tmp_path: Path) -> None:
    """16.3: paper 004 ran at 767×1022 (H×W); a square pair is the same config (and hash) as one side."""
    pair = ExperimentConfig.model_validate({"dataset": {"image_size": [767, 1022]}})
    assert pair.dataset.image_size == (767, 1022)
    square = ExperimentConfig.model_validate({"dataset": {"image_size": [64, 64]}})
    assert square.dataset.image_size == 64
    assert square.config_hash() == ExperimentConfig.model_validate({"dataset": {"image_size": 64}}).config_hash()
    assert "image_size: 64\n" in ExperimentConfig.model_validate({"dataset": {"image_size": 64}}).to_yaml()
    for bad in ([0, 5], [1, 2, 3], "big", [True, 20], 4096):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({"name": "bad", "dataset": {"image_size": bad}}))
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert "dataset.image_size" in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_paper004_recipes_run_at_767x1022_and_quick_keeps_the_aspect() -> None:
    from lesionbench.config import quick_size
    for name in ("isic2017_unet", "isic2017_unetplusplus", "isic2017_pspnet"):
        path = Path(__file__).parents[1] / "experiments" / f"{name}.yaml"
        assert load_config(path).dataset.image_size == (767, 1022), name
        assert load_config(path, quick=True).dataset.image_size == (48, 64), name
    assert quick_size(224) == 64 and quick_size(32) == 32 and quick_size([40, 60]) == [40, 60]
