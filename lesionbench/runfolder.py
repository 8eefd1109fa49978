"""The run-folder contract: run.json, metrics.json and per_image.csv as pydantic models.

Why: training writes these files and reporting, inference, the tuner and the tests read them;
one definition (with a schema version) keeps writer and readers in step, and a bad file fails
with one line naming it instead of a ``KeyError`` three calls later. The claim a worker takes
on a run (studies/claim.py) is a separate file: nothing here depends on who trains the run.

Files written before the contract existed carry no ``schema_version``; they have this layout
and read as version 1.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lesionbench.config import PublishedScore
from lesionbench.errors import LesionBenchError
from lesionbench.io import atomic_write_csv, atomic_write_json, read_json

SCHEMA_VERSION = 1
RUN_INFO, METRICS, PER_IMAGE = "run.json", "metrics.json", "per_image.csv"
#: The final weights of a finished run (model only, no optimiser state), beside config.yaml.
WEIGHTS = "model.safetensors"

#: "interrupted": stopped while it trained (Ctrl-C, scancel, a requeue); its claim was released, it resumes from last.ckpt
RunStatus = Literal["running", "finished", "failed", "pruned", "interrupted"]


class RunFolderError(LesionBenchError):
    """A run-folder file is missing or does not match the contract (one line, naming the file)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION


class Determinism(BaseModel):
    """What determinism the run asked Lightning for and what torch actually had switched on."""

    model_config = ConfigDict(extra="forbid")

    requested: bool = Field(description="trainer.deterministic, as given to the Lightning Trainer")
    granted: bool = Field(description="torch.are_deterministic_algorithms_enabled() during fit")
    warn_only: bool = Field(False, description="torch only warns about non-deterministic ops")
    cudnn_deterministic: bool = False
    cudnn_benchmark: bool = False
    seed: int = Field(description="the seed given to lightning.seed_everything (workers included)")


class CpuInfo(BaseModel):
    """The CPU a run trained on: with the versions, what decides whether it repeats bit for bit."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="CPU model name (/proc/cpuinfo), else the platform's processor")
    capability: str = Field(description="torch.backends.cpu.get_cpu_capability(): the kernels torch picks, e.g. AVX512")
    flags: list[str] = Field(default_factory=list, description="vector instruction sets present (avx2, avx512f, ...)")
    threads: int = Field(ge=1, description="torch.get_num_threads() while training")


class RunInfo(_Strict):
    """run.json: where the run stands and where it came from."""

    status: RunStatus
    run: str
    suite: str = "adhoc"
    experiment: str
    config_hash: str
    seed: int | None = None
    started: str | None = None
    finished: str | None = None
    data_manifest: str | None = Field(None, description="hash of the data files' paths, sizes and times (this folder)")
    data_content: str | None = Field(None, description="hash of the decoded, resized data the run saw (any folder)")
    versions: dict[str, str] = Field(default_factory=dict)
    git_commit: str | None = None
    device: str | None = None
    platform: str | None = None
    cpu: CpuInfo | None = None
    best_checkpoint: str | None = Field(None, description="best weights, relative to the run folder")
    error: str | None = None
    resumed: bool = Field(False, description="this result continued earlier sessions' checkpoints")
    resume_count: int = Field(0, ge=0, description="how many sessions resumed this run")
    train_time_s: float | None = Field(None, description="fit time of every session together")
    determinism: Determinism | None = None
    engine: Literal["lightning", "nnunet"] = Field("lightning", description="what trained the run (config.engine)")
    nnunet: dict[str, Any] | None = Field(None, description="engine: nnunet: its version, trainer and chosen plans")


class ChallengeScore(BaseModel):
    """The dataset's own ranking metric (metrics/challenge.challenge_score)."""

    model_config = ConfigDict(extra="allow")

    metric: str
    value: float
    definition: str = ""
    per_attribute: dict[str, dict[str, float]] | None = None


class _Scores(_Strict):
    """The test-set summary of metrics/scores.summarize, shared by a run and its evaluations."""

    model_config = ConfigDict(extra="allow")

    per_image: dict[str, float]
    pooled: dict[str, float] = Field(default_factory=dict)
    per_class: dict[str, dict[str, float]] = Field(default_factory=dict)
    challenge: ChallengeScore | None = None
    nsd_tolerance: float | None = Field(None, ge=0, description="the tolerance of per_image's nsd, in pixels at "
                                        "ground-truth size (metrics/boundary.NSD_TOLERANCES); absent: no nsd")


class ChanceFloor(BaseModel):
    """What trivial predictions score with one metric on a run's test images (metrics/chance.py)."""

    model_config = ConfigDict(extra="forbid")

    empty: float = Field(description="every prediction empty")
    full: float = Field(description="every prediction the whole image")
    mean_mask: float | None = Field(None, description="every prediction the training masks' per-pixel mean at "
                                    "the network input size, > 0.5, resized to the ground truth as predictions are; "
                                    "None where only per_image.csv's counts were at hand")


class ChanceScores(BaseModel):
    """metrics.json ``chance``: the floors of trivial predictions, computed (not trained) on exactly the
    run's test images and scored as the run: {metric name: ChanceFloor} for the dataset's primary
    metric and Dice."""

    model_config = ConfigDict(extra="forbid")

    primary: str = Field(description="the dataset's primary metric (metrics/challenge.py), a key of scores")
    scores: dict[str, ChanceFloor]
    n_train: int | None = Field(None, ge=0, description="training masks averaged into the mean mask")


class RunMetrics(_Scores):
    """metrics.json: the test-set summary of metrics/scores.summarize plus what identifies the run.

    Metric families are typed dicts of floats, so a new metric name needs no schema change. Other
    top-level sections are allowed (``extra="allow"``): a room that adds one (a new summary) must
    not make a finished run unreadable; its own reader validates it.
    """

    experiment: str
    run: str
    suite: str = "adhoc"
    dataset: str
    model: str
    seed: int
    config_hash: str
    n_test: int = Field(ge=0)
    image_size: int | tuple[int, int] | None = Field(None, description="dataset.image_size: S, or [H, W]")
    best_val: dict[str, float | None] = Field(default_factory=dict)
    published: list[PublishedScore] = Field(default_factory=list)
    cost: dict[str, float | int | str | None] = Field(default_factory=dict)
    best_checkpoint: str = Field(description="best weights, relative to the run folder")
    phases: list[str] = Field(default_factory=list)
    last_phase: str | None = None
    chance: ChanceScores | None = Field(None, description="trivial predictions' scores (absent before issue 30, "
                                        "and for nnU-Net runs: metrics/chance.floors_from_rows derives two)")


class PerImageRow(BaseModel):
    """One row of per_image.csv: an image's test metrics (mean over channels), plus
    ``<class>_dice`` / ``<class>_iou`` columns (floats) when the dataset has several channels, and
    hd95/assd/nsd and the counts as extra float columns (nsd absent from runs before issue 30)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, float] = Field(init=False)  # type: ignore[assignment]

    id: str
    dice: float
    iou: float
    precision: float
    recall: float
    specificity: float
    accuracy: float


@dataclass
class RunResult:
    """What training a run returns, whichever engine trained it."""

    run_dir: Path
    status: str
    metrics: RunMetrics | None = None  # what metrics.json holds (rank zero of a finished run)
    best_val: float | None = None
    error: str | None = None


def _one_line(path: Path, err: ValidationError, what: str = "") -> str:
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"]) or "<root>"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}{what}: key '{key}': {e['msg']}{more} (re-run the experiment to rewrite it)"


def _read(path: Path, model: type[BaseModel]) -> Any:
    if not path.is_file():
        raise RunFolderError(f"{path}: missing (the run never got that far, or the folder was copied partially)")
    try:
        data = read_json(path)
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path}: not valid JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: expected a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise RunFolderError(_one_line(path, err)) from None


def read_run_info(run_dir: str | Path) -> RunInfo:
    return _read(Path(run_dir) / RUN_INFO, RunInfo)


def read_metrics(run_dir: str | Path) -> RunMetrics:
    return _read(Path(run_dir) / METRICS, RunMetrics)


def read_per_image(run_dir: str | Path) -> list[PerImageRow]:
    """Every row of per_image.csv, validated; ids must be unique."""
    path = Path(run_dir) / PER_IMAGE
    if not path.is_file():
        raise RunFolderError(f"{path}: missing (the run never reached its test)")
    rows, seen = [], set()
    with open(path, newline="") as fh:
        for line, raw in enumerate(csv.DictReader(fh), start=2):
            try:
                row = PerImageRow.model_validate(raw)
            except ValidationError as err:
                raise RunFolderError(_one_line(path, err, f" line {line}")) from None
            if row.id in seen:
                raise RunFolderError(f"{path} line {line}: image id {row.id!r} appears twice")
            seen.add(row.id)
            rows.append(row)
    return rows


def write_run_info(run_dir: str | Path, info: RunInfo) -> Path:
    return atomic_write_json(Path(run_dir) / RUN_INFO, info.model_dump(mode="json"))


def write_metrics(run_dir: str | Path, metrics: RunMetrics) -> Path:
    return atomic_write_json(Path(run_dir) / METRICS, metrics.model_dump(mode="json", exclude_none=True))


def write_per_image(run_dir: str | Path, rows: list[PerImageRow]) -> Path:
    return atomic_write_csv(Path(run_dir) / PER_IMAGE, [r.model_dump() for r in rows])


class EvalStamp(BaseModel):
    """What a stored evaluation was made from: it is reused only while all of it still matches."""

    source_config_hash: str
    source_finished: str | None = None
    dataset: str
    split: str
    target_content: str | None = Field(None, description="sha256 of the target split's ids and file bytes: "
                                                         "another folder's data is evaluated again")


class Excluded(BaseModel):
    """Target images left out because the run trained or validated on them (data/leakage.py)."""

    count: int = Field(ge=0)
    by_id: int = Field(0, ge=0)
    by_bytes: int = Field(0, ge=0)
    of: int = Field(ge=0, description="images in the target split before exclusion")
    ids: list[str] = Field(default_factory=list)


class EvalMetrics(_Scores):
    """eval/<dataset>[__<split>]/metrics.json: a finished run scored on another dataset's split
    (studies/evaluate.py), beside its own per_image.csv (rows as ``PerImageRow``)."""

    run: str
    experiment: str
    model: str
    seed: int
    source_dataset: str
    dataset: str
    split: str
    n_test: int = Field(ge=1)
    evaluation: EvalStamp
    excluded: Excluded


def read_eval_metrics(folder: str | Path) -> EvalMetrics:
    return _read(Path(folder) / METRICS, EvalMetrics)


def write_eval_metrics(folder: str | Path, metrics: EvalMetrics) -> Path:
    return atomic_write_json(Path(folder) / METRICS, metrics.model_dump(mode="json", exclude_none=True))


class PhaseDone(_Strict):
    """checkpoints/<i>-<phase>/done.json: a finished phase, trusted only under the same config."""

    best: str = Field(description="the phase's best checkpoint, relative to the phase folder")
    score: float | None = None
    seconds: float = Field(0.0, description="fit time of the phase over all its sessions")
    config_hash: str


def read_phase_done(path: str | Path) -> PhaseDone:
    return _read(Path(path), PhaseDone)


def write_phase_done(path: str | Path, done: PhaseDone) -> Path:
    return atomic_write_json(path, done.model_dump(mode="json"))


# ---- what the test loop saves beside its numbers (training/test_outputs.py writes them; the visual
# report, `lesionbench score` and anyone checking a score read them)

#: Every test prediction as 0/255 PNG masks at the image's original size, named by ``mask_files``.
PREDICTIONS = "predictions"
#: The visual report's inputs: thumbnails of the images it shows, their ground truth, ``SAMPLES``.
INPUTS = Path("report") / "inputs"
#: Which test images the report shows (grid, best, worst) with their Dice scores and class names.
SAMPLES = "samples.json"


def mask_files(image_id: str, class_names: list[str] | tuple[str, ...]) -> list[str]:
    """One file name per output channel, as the ISIC challenges name submitted masks."""
    from lesionbench.data.layouts import TASK2_ATTRIBUTES

    if tuple(class_names) == TASK2_ATTRIBUTES:
        return [f"{image_id}_attribute_{n}.png" for n in class_names]
    return [f"{image_id}_segmentation.png"] if len(class_names) == 1 else \
        [f"{image_id}_{n}_segmentation.png" for n in class_names]
