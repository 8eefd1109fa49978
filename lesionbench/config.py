"""Experiment schema: one validated pydantic model per YAML file under ``experiments/``.

Every object is named in config and built from name + options, so a run folder's
``config.yaml`` alone reproduces the run. Unknown keys are errors (``extra="forbid"``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lesionbench.errors import LesionBenchError
from lesionbench.settings import settings

DatasetName = Literal["isic2016", "isic2017", "isic2018", "isic2018-task2", "kvasir-seg", "synthetic"]
OptimizerName = Literal["adam", "adamw", "sgd", "rmsprop", "adagrad", "adabelief"]
SchedulerName = Literal[
    "none", "reduce-on-plateau", "cosine", "cosine-restarts", "step", "exponential",
    "one-cycle", "cosine-warmup",
]
LossName = Literal["bce", "dice", "jaccard", "focal", "tversky"]
InitName = Literal["none", "xavier", "kaiming", "orthogonal", "normal"]
Precision = Literal["32-true", "32", "16-mixed", "bf16-mixed", "64-true"]

#: Number of target channels per dataset (ISIC 2018 Task 2 has five attribute masks).
NUM_CLASSES: dict[str, int] = {
    "isic2016": 1, "isic2017": 1, "isic2018": 1, "isic2018-task2": 5, "kvasir-seg": 1, "synthetic": 1,
}


class ConfigError(LesionBenchError):
    """A config problem, already phrased as one line for the user."""


def check_folder_name(name: str) -> str:
    """A name that becomes one folder under ``--out`` (experiment, suite, study): nothing that leaves it.

    Raises ValueError (pydantic turns it into a located message); callers outside a model use
    :func:`safe_folder_name`.
    """
    if not name or name.startswith(".") or any(c in name for c in "/\\") or any(c.isspace() or not c.isprintable()
                                                                               for c in name):
        raise ValueError(f"{name!r} must be non-empty, without spaces or slashes and not start with '.' "
                         "(it names a folder under --out)")
    return name


def safe_folder_name(name: str, what: str) -> str:
    """:func:`check_folder_name` for a CLI option or file key: one line naming ``what``."""
    try:
        return check_folder_name(name)
    except ValueError as err:
        raise ConfigError(f"{what}: {err}") from None


class _Strict(BaseModel):
    """Unknown keys are errors; a validated config is frozen (change one with ``model_copy(update=...)``
    or by loading it again), so what a run was given is what it records."""

    model_config = ConfigDict(extra="forbid", frozen=True)


#: Names that meant a write-up by the word "seed" before 0.3 (the random seed keeps that word).
RENAMED = {f"seed00{i}": f"paper00{i}" for i in range(5)} | {"seed_ref": "paper", "seeds": "papers"}


def _not_renamed(value: Any) -> Any:
    if isinstance(value, str) and value in RENAMED:
        raise ValueError(f"'{value}' is now called '{RENAMED[value]}'; rename it in the config")
    return value


class DatasetConfig(_Strict):
    name: DatasetName = "synthetic"
    root: str | None = Field(None, description="Folder holding the unzipped archives; default $LESIONBENCH_DATA")
    image_size: int | tuple[int, int] = Field(
        224, description="Network input: S for S×S, or [H, W] (e.g. paper 004's [767, 1022]); 16 to 2048 each")
    split: str = Field("official", description="official | paper000 | paper001 | paper002 (the write-ups' splits) | a split file path")
    augmentation: str = Field("none", description="Name of an albumentations recipe in data/transforms.py")
    normalize: Literal["imagenet", "dataset"] = Field(
        "imagenet", description="Input mean/std: ImageNet's, or the training split's own (data/stats.py)")
    subset: int | None = Field(None, ge=1, description="Use at most this many images per split (smoke runs)")
    num_workers: int = Field(0, ge=0)
    cache: bool = Field(True, description="Pre-resized memory-mapped cache")
    leakage: Literal["report", "exclude", "ignore"] = "report"

    _renamed = field_validator("split", "augmentation", mode="before")(_not_renamed)

    @field_validator("image_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        """S or [H, W], each an integer 16..2048; a square pair is stored as S (one config, one hash)."""
        sides = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(sides) not in (1, 2) or not all(isinstance(v, int) and not isinstance(v, bool) for v in sides):
            raise ValueError(f"give one size S or a pair [H, W] of integers, got {value!r}")
        if not all(16 <= v <= 2048 for v in sides):
            raise ValueError(f"each side must be 16 to 2048 pixels, got {value!r}")
        return sides[0] if len(set(sides)) == 1 else tuple(sides)


def default_weights() -> str:
    """$LESIONBENCH_WEIGHTS (read through settings), else imagenet."""
    return settings().weights.strip() or "imagenet"


class ModelConfig(_Strict):
    name: str = "smp:Unet/resnet34"
    options: dict[str, Any] = Field(default_factory=dict)
    init: InitName = Field("none", description="Init of decoder/head weights; pretrained encoders untouched")
    default_weights: str = Field(
        default_factory=default_weights,
        description="Encoder weights of a model that takes them when options.weights is not set: imagenet | "
                    "none | PATH. Taken from $LESIONBENCH_WEIGHTS when a config without it is loaded, so "
                    "config.yaml and the config hash record the weights the run was built with")


class LossTerm(_Strict):
    name: LossName
    weight: float = 1.0
    options: dict[str, float] = Field(default_factory=dict)


class LossConfig(_Strict):
    terms: list[LossTerm] = Field(default_factory=lambda: [LossTerm(name="bce"), LossTerm(name="dice")])
    deep_supervision_weights: list[float] | None = Field(
        None, description="Per-head weights, coarsest first; default: the model's own, else equal"
    )


class OptimizerConfig(_Strict):
    name: OptimizerName = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)


class SchedulerConfig(_Strict):
    name: SchedulerName = "none"
    options: dict[str, Any] = Field(default_factory=dict)
    warmup_fraction: float = Field(0.1, ge=0, lt=1, description="cosine-warmup: share of steps warming up")


class EarlyStoppingConfig(_Strict):
    patience: int = Field(12, ge=1)
    monitor: str = Field("val/primary", description="A logged validation metric; val/primary: the dataset's own")
    mode: Literal["min", "max"] = "max"
    min_delta: float = 0.0


class PhaseConfig(_Strict):
    """One stage of a recipe; unset fields inherit the experiment-level settings."""

    name: str = "train"
    epochs: int | None = Field(None, ge=1)
    freeze: list[str] = Field(default_factory=list, description="Stage names to freeze, e.g. [encoder]")
    unfreeze: list[str] = Field(default_factory=list, description="Stage names to unfreeze after freezing")
    optimizer: OptimizerConfig | None = None
    lr: float | None = Field(None, gt=0, description="Shortcut: override only the learning rate")
    scheduler: SchedulerConfig | None = None
    early_stopping: EarlyStoppingConfig | None = None


class TrainerConfig(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
    precision: Precision = "32-true"
    seed: int = 42
    deterministic: bool = False
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = Field(1, ge=1)
    limit_train_batches: float | int | None = None
    limit_val_batches: float | int | None = None
    check_val_every_n_epoch: int = Field(1, ge=1)
    logger: Literal["csv", "wandb"] = "csv"
    wandb_checkpoints: bool = Field(False, description="W&B: upload the best checkpoint as a model artifact")
    channels_last: bool = False
    compile: bool = False
    checkpoint: Literal["best", "last"] = Field(
        "best", description="Weights each phase keeps: best on the selection metric (validation), or the last "
                            "epoch's (write-ups that keep the last epoch, e.g. paper 004)")


class PublishedScore(_Strict):
    """A score reported by a write-up or a challenge, shown beside ours on the leaderboard."""

    metric: str
    value: float
    approximate: bool = Field(False, description="The source gives the value as approximate (e.g. '~0.90')")
    source: str
    note: str = ""


class SearchParam(_Strict):
    name: str = Field(..., description="Dotted config key, e.g. optimizer.lr")
    type: Literal["float", "int", "categorical"] = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None


class TuneConfig(_Strict):
    sampler: Literal["grid", "tpe", "random"] = "tpe"
    pruner: Literal["none", "median", "hyperband"] = "none"
    n_trials: int | None = Field(None, ge=1)
    metric: str = Field("val/primary", description="Must be what checkpoints select on (val/primary by default)")
    direction: Literal["maximize", "minimize"] = "maximize"
    params: list[SearchParam] = Field(default_factory=list)


NnUNetPlans = Literal["nnUNetPlans", "nnUNetResEncUNetMPlans", "nnUNetResEncUNetLPlans", "nnUNetResEncUNetXLPlans"]


class NnUNetConfig(_Strict):
    """nnU-Net v2 as the run's engine (engine: nnunet): its own planning, trainer and inference."""

    configuration: Literal["2d"] = "2d"
    plans: NnUNetPlans = Field("nnUNetPlans", description="Plans (and so planner): default or a ResEnc preset")
    trainer: str = Field("auto", description="auto: nnU-Net's fixed-length trainer closest to trainer.epochs; "
                                             "or a trainer class name, e.g. nnUNetTrainer_100epochs")
    iterations_per_epoch: int | None = Field(None, ge=1, description="Override nnU-Net's 250 (tests, smoke runs)")
    val_iterations: int | None = Field(None, ge=1, description="Override nnU-Net's 50 validation batches per epoch")
    workers: int | None = Field(None, ge=0, description="Augmentation/preprocessing processes; 0 = in-process "
                                                        "(seeded, so a CPU run repeats bit for bit); default: 0 on "
                                                        "CPU, nnU-Net's own choice on a GPU (not reproducible)")
    budget: Literal["recipe", "nnunet"] = Field(
        "recipe", description="recipe: iterations per epoch set so nnU-Net sees about trainer.epochs x training "
                              "images (as a Lightning run of the recipe); nnunet: its own 250 per epoch. "
                              "iterations_per_epoch, when set, wins")
    postprocessing: bool = Field(True, description="Determine nnU-Net's postprocessing on fold 0's validation "
                                                   "(find_best_configuration -f 0) and apply it to the test split")
    native_resolution: bool = Field(False, description="Export images at their own size (nnU-Net plans on "
                                                       "them) instead of resized to dataset.image_size")


class ExperimentConfig(_Strict):
    name: str = "experiment"
    description: str = ""
    paper: str | None = Field(None, description="Which write-up this reproduces, e.g. '000'")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    early_stopping: EarlyStoppingConfig | None = None
    phases: list[PhaseConfig] = Field(default_factory=list)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    published: list[PublishedScore] = Field(default_factory=list)
    tune: TuneConfig | None = None
    engine: Literal["lightning", "nnunet"] = Field("lightning", description="Who trains: our Lightning loop or nnU-Net v2")
    nnunet: NnUNetConfig | None = Field(None, description="Options of engine: nnunet")

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "seed_ref" in data:
            raise ValueError("key 'seed_ref' is now called 'paper' (which write-up a recipe reproduces); "
                             "rename it in the config")
        if isinstance(data, dict) and data.get("engine") == "nnunet" and data.get("nnunet") is None:
            data = {**data, "nnunet": {}}  # engine: nnunet with nnU-Net's defaults
        return data

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return check_folder_name(v)

    @model_validator(mode="after")
    def _check_weights(self) -> ExperimentConfig:
        w = self.loss.deep_supervision_weights
        if w is not None and (not w or any(x < 0 for x in w)):
            raise ValueError("loss.deep_supervision_weights must be non-negative and non-empty")
        if self.engine == "nnunet":
            if self.num_classes != 1:
                raise ValueError(f"engine: nnunet supports binary datasets only; {self.dataset.name} has "
                                 f"{self.num_classes} overlapping masks (use engine: lightning)")
        elif self.nnunet is not None:
            raise ValueError("nnunet: options given but engine is lightning (set engine: nnunet or drop them)")
        return self

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.dataset.name]

    def resolved_phases(self) -> list[PhaseConfig]:
        """Phases with every inherited field filled in; one phase when none are given."""
        phases = self.phases or [PhaseConfig(name="train")]
        out = []
        for p in phases:
            opt = p.optimizer or self.optimizer
            if p.lr is not None:
                opt = opt.model_copy(update={"lr": p.lr})
            out.append(p.model_copy(update={
                "epochs": p.epochs or self.trainer.epochs,
                "optimizer": opt,
                "lr": opt.lr,
                "scheduler": p.scheduler or self.scheduler,
                "early_stopping": p.early_stopping or self.early_stopping,
            }))
        return out

    def config_hash(self) -> str:
        """Stable hash of everything that changes the result (skips finished runs, ties resumable
        checkpoints to their config); the fields in HASH_EXCLUDED are left out."""
        exclude: dict[str, Any] = {}
        for dotted in HASH_EXCLUDED:
            if dotted in HASH_NULLED:
                continue
            section, _, key = dotted.partition(".")
            if key:
                exclude.setdefault(section, set()).add(key)
            else:
                exclude[section] = True
        if self.engine == "lightning":  # hashes from before engines existed stay valid
            exclude |= {"engine": True, "nnunet": True}
        data = self.model_dump(mode="json", exclude=exclude)
        for dotted in HASH_NULLED:  # hashed as unset, so a hash from before the field was left out stays valid
            section, _, key = dotted.partition(".")
            data[section][key] = None
        if "weights" in self.model.options:  # the model's own weights win: the default is not used
            data["model"].pop("default_weights", None)
        for dotted, default in HASH_DEFAULTS.items():  # a field added later: left out at its default (old hashes hold)
            section, _, key = dotted.partition(".")
            if data.get(section, {}).get(key, default) == default:
                data.get(section, {}).pop(key, None)
        payload = json.dumps(data, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


#: Config fields that do not change a run's numbers, so changing them neither retrains a finished
#: run nor invalidates a resumable one. Everything else is hashed, including what changes numbers
#: through the hardware path: precision, devices / num_nodes / strategy (the effective batch size
#: and each process's data), deterministic, limits. ``trainer.accelerator`` is left out: where a run
#: trained is provenance (run.json "device"), like the machine, and its rounding-level differences
#: are those of any other machine; channels_last and compile likewise only change speed.
HASH_EXCLUDED: dict[str, str] = {
    "name": "names the run folder; the folder already separates runs",
    "description": "free text for readers",
    "paper": "which write-up a recipe reproduces: a label",
    "published": "scores shown beside ours, not inputs",
    "tune": "the search space of a study, not the settings of one run",
    "dataset.root": "where the data lives, not what it holds: run.json records the data's content hash",
    "dataset.num_workers": "loader parallelism: speed only (workers are seeded from the run seed)",
    "dataset.cache": "the cache holds the same resized pixels the loader would compute",
    "trainer.logger": "where curves are sent (CSV always, W&B on request)",
    "trainer.wandb_checkpoints": "uploads the checkpoints to W&B: no effect on the result",
    "trainer.accelerator": "the device kind: provenance, recorded in run.json",
    "trainer.channels_last": "memory layout: speed only",
    "trainer.compile": "torch.compile: speed only",
}

#: Left out by hashing them as unset (null), so configs that never set them keep their old hash.
HASH_NULLED = ("dataset.root",)

#: Fields added after hashes were recorded: hashed only when set to something other than this
#: default, so every config that leaves them alone keeps its old hash.
HASH_DEFAULTS: dict[str, Any] = {"trainer.checkpoint": "best", "model.default_weights": "imagenet"}

# ----------------------------------------------------------------------------- loading

#: What ``--quick`` shrinks a validated config to: a smoke run in seconds.
QUICK = {"image_size": 64, "subset": 16, "epochs": 1, "batch_size": 4, "nnunet_iterations": 10}


def _parse_value(text: str) -> Any:
    """`--set` values are YAML scalars: 1e-3 -> float, true -> bool, [a, b] -> list."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_key(data: dict[str, Any], key: str, value: Any, what: str = "--set") -> dict[str, Any]:
    """Put a typed ``value`` at dotted ``key`` of a raw config dict (sections are created as needed)."""
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{what} {key}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (``--set``, a suite's ``set:``) to a raw config dict, before validation."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set optimizer.lr=1e-4")
        key, _, raw = item.partition("=")
        set_key(data, key, _parse_value(raw))
    return data


def quick_size(size: int | list[int] | tuple[int, int]) -> int | list[int]:
    """--quick's image size: at most QUICK px on the longest side, the aspect ratio kept (sides a
    multiple of 8, at least 16), e.g. [767, 1022] -> [48, 64]."""
    if isinstance(size, int):
        return min(size, QUICK["image_size"])
    h, w = (int(v) for v in size)
    scale = min(1.0, QUICK["image_size"] / max(h, w))
    return [h, w] if scale == 1.0 else [max(16, round(h * scale / 8) * 8), max(16, round(w * scale / 8) * 8)]


def _names_a_file(weights: str) -> bool:
    """A weights value that is a path (not a tag such as imagenet or convnext_tiny.fb_in1k)."""
    return any(c in weights for c in "/\\") or weights.startswith("~") or \
        Path(weights).suffix.lower() in (".pth", ".pt", ".ckpt", ".safetensors", ".bin")


def shrink(data: dict[str, Any]) -> dict[str, Any]:
    """--quick on a validated config's dict: small images, a subset, one epoch per phase, no download."""
    ds = data.setdefault("dataset", {})
    ds["image_size"] = quick_size(ds.get("image_size", 224))
    ds["subset"] = QUICK["subset"]
    ds["num_workers"] = 0
    tr = data.setdefault("trainer", {})
    tr["epochs"] = QUICK["epochs"]
    tr["batch_size"] = min(int(tr.get("batch_size", 8)), QUICK["batch_size"])
    options = data.setdefault("model", {}).setdefault("options", {})
    weights = options.get("weights")
    if weights not in (None, "none") and not Path(str(weights)).expanduser().is_file():
        if _names_a_file(str(weights)):  # a mistyped path must fail as it would without --quick
            raise ConfigError(f"{weights}: encoder weights file not found (model.options.weights: use imagenet, "
                              "none, or the path of a .pth/.safetensors file)")
        options["weights"] = "none"  # imagenet or an exact tag: a smoke run downloads nothing
    for phase in data.get("phases") or []:
        phase["epochs"] = QUICK["epochs"]
        if phase.get("early_stopping"):
            phase["early_stopping"]["patience"] = 1
    if data.get("engine") == "nnunet":  # nnU-Net's epoch is 250 batches whatever the data: a few suffice
        nn = data.setdefault("nnunet", {}) or {}
        data["nnunet"] = {**nn, "iterations_per_epoch": QUICK["nnunet_iterations"],
                          "val_iterations": QUICK["nnunet_iterations"]}
    return data


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Names the allowed keys of the section holding an unknown key."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return ""
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nxt = None
        for c in candidates:
            for inner in [c, *getattr(c, "__args__", ())]:
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    nxt = inner
        if nxt is None:
            return ""
        current = nxt
    return ", ".join(getattr(current, "model_fields", {}))


def format_validation_error(err: ValidationError, source: str, model: type[BaseModel] = ExperimentConfig) -> str:
    """One line per problem: ``source: key: what is wrong (allowed: ...)``."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            allowed = _allowed(model, tuple(e["loc"]))
            lines.append(f"{source}: unknown key '{key}' (allowed here: {allowed})")
        elif e["type"] == "literal_error":
            lines.append(f"{source}: {key}: {e['input']!r} is not allowed ({e['msg'].removeprefix('Input should be ')})")
        else:
            lines.append(f"{source}: {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such experiment file (see experiments/ for examples)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}:{where} is not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections (dataset:, model:, ...)")
    return data


def absolute_root(data: dict[str, Any]) -> dict[str, Any]:
    """Make a relative ``dataset.root`` absolute against the current directory (``~`` expanded), so the
    run folder's config.yaml names the same folder for `evaluate`, `predict` and `status` run from
    anywhere. The keyword ``synthetic`` (the replica) is kept as written."""
    dataset = data.get("dataset")
    root = dataset.get("root") if isinstance(dataset, dict) else None
    if isinstance(root, str) and root.strip() and root != "synthetic":
        dataset["root"] = str(Path(root).expanduser().absolute())
    return data


def load_config(
    source: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    values: dict[str, Any] | None = None,
    quick: bool = False,
    synthetic: bool = False,
    label: str | None = None,
) -> ExperimentConfig:
    """The one way to make an experiment config (CLI, suites, tune, tests).

    ``source`` is a YAML path (its stem is the default name), a raw dict (not modified) or None
    (the defaults). Then ``--set`` strings, then typed dotted ``values`` (a tuning trial's
    parameters); the result is validated as written, and only then shrunk by ``quick`` and pointed
    at the synthetic replica by ``synthetic``, so ``--quick`` never hides a bad value.
    """
    if isinstance(source, dict):
        data = copy.deepcopy(source)  # never edit the caller's nested dicts
    elif source is not None:
        data = read_yaml(source)
        data.setdefault("name", Path(source).stem)
    else:
        data = {}
    where = label or (str(source) if source is not None and not isinstance(source, dict) else "--set")
    apply_overrides(data, list(overrides))
    for key, value in (values or {}).items():
        set_key(data, key, value, what="tune.params")
    absolute_root(data)
    cfg = parse_config(data, where)
    if not (quick or synthetic):
        return cfg
    if quick:
        shrink(data)
    if synthetic:
        data.setdefault("dataset", {})["root"] = str(settings().synthetic_root())
    return parse_config(data, where)
