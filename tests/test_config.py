"""Config schema: good files load, bad keys and values fail with one line naming the key."""

from pathlib import Path

import pytest

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
