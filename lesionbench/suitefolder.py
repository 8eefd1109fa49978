"""The suite-folder contract: ``leaderboard.json``, the machine-readable verdicts of a suite.

Why: a leaderboard's claims (this model ranks first, that one is significantly worse, this interval
holds the mean) are read by people through ``leaderboard.md`` and by programs through this file.
One pydantic model is written first and the markdown is rendered from it, so the two never disagree.
Sits beside runfolder.py: reporting writes it, anything may read it without the training stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lesionbench.errors import LesionBenchError
from lesionbench.io import atomic_write_text, read_json

LEADERBOARD_JSON = "leaderboard.json"
LEADERBOARD_SCHEMA = 1

Verdict = Literal["best", "significantly_worse", "not_significant", "not_tested"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Interval(_Model):
    """Mean over seeds with its spread and interval; ``includes`` says which noise the interval counts."""

    mean: float
    std: float | None = Field(None, description="sample SD over seeds (None for one seed)")
    low: float | None = None
    high: float | None = None
    includes: Literal["seeds and images", "images only", "none"] = "none"


class Gap(_Model):
    """Rank 1's seed mean minus this row's, with its simultaneous interval (the test's own procedure)."""

    estimate: float
    low: float
    high: float
    confidence: float = Field(0.95, description="simultaneous over every row of the table")


class ChanceRow(_Model):
    """What trivial predictions score with one metric on the table's test images (metrics/chance.py)."""

    metric: str
    empty: float
    full: float
    mean_mask: float | None = None
    source: str = Field(description="the run folder the floors were read from")


class FailedSeed(_Model):
    run: str
    seed: int | None = None
    why: str


class Costs(_Model):
    params_m: float | None = None
    gmacs: float | None = None
    ms_per_image: float | None = None
    peak_mem_mb: float | None = None
    train_time_s: float | None = None
    measured_on: str | None = Field(None, description="device (and load) the train time was measured on")
    images_seen: float | None = Field(None, description="training images drawn in all epochs (mean over seeds)")
    macs_counter: str | None = Field(None, description="what counted the GMACs (runs before torch's counter: fvcore)")


class ModelVerdict(_Model):
    """One experiment on one dataset: its scores, its rank and the test against every other row."""

    experiment: str
    model: str | None = None
    weights: str | None = Field(None, description="encoder weights the run started from ('none': random init)")
    epochs: int | None = None
    image_size: int | tuple[int, int] | None = None
    seeds: list[int | None]
    seed_scores: list[float] = Field(description="the primary metric of each seed's run on the whole test set")
    primary: Interval | None = None
    dice: Interval | None = None
    iou: Interval | None = None
    hd95: Interval | None = None
    assd: Interval | None = None
    nsd: Interval | None = Field(None, description="Normalized Surface Dice at DatasetVerdicts.nsd_tolerance_px")
    rank: int
    rank_probabilities: list[float] = Field(default_factory=list,
                                            description="P(rank = 1..k) over the bootstrap (seeds and images)")
    p_rank1: float | None = None
    p_values: dict[str, float | None] = Field(default_factory=dict,
                                              description="simultaneous p against rank 1 (studentized range), by experiment")
    gap_to_best: Gap | None = Field(None, description="None for rank 1 and for rows not tested")
    failed_seeds: list[FailedSeed] = Field(default_factory=list, description="seeds named failed trainings "
                                                                             "(DatasetVerdicts.failed_rule)")
    verdict: Verdict
    significantly_worse: bool | None = Field(None, description="None when not tested")
    reason: str | None = Field(None, description="why not tested, or the test's summary")
    published: str | None = None
    costs: Costs = Field(default_factory=Costs)


class DatasetVerdicts(_Model):
    dataset: str
    metric: str
    metric_definition: str
    test: str
    test_why: str
    interval: str
    alpha: float
    comparisons: int
    detectable_difference: float | None = Field(
        None, description="smallest true gap to the others this table's own test finds 80% of the time (simulated)")
    detectable_note: str = ""
    rows_tested: int = 0
    seeds_per_row: int | None = Field(None, description="median seeds of the tested rows")
    pooled_seed_sd: float | None = None
    detectable_sd: float | None = Field(None, description="detectable_difference in pooled seed-SDs")
    seeds_for_80: dict[str, int | None] = Field(default_factory=dict,
                                                description="seeds per row to find a gap of 1/2/3 SDs 80% of the time")
    plan_command: str | None = None
    failed_rule: str | None = None
    failed_in_mean: str | None = None
    nsd_tolerance_px: float | None = None
    chance: list[ChanceRow] = Field(default_factory=list, description="the chance floor under the table")
    rank1_equal_models: list[float] | None = Field(
        None, description="the observed leader's P(rank 1) when all models are equal: [median, 90th percentile]")
    rank_resamples: int = 0
    kendall_tau_median: float | None = None
    models: list[ModelVerdict]


class LeaderboardVerdicts(_Model):
    schema_version: Literal[1] = LEADERBOARD_SCHEMA
    suite: str
    datasets: list[DatasetVerdicts] = Field(default_factory=list)


def write_verdicts(suite_dir: Path, verdicts: LeaderboardVerdicts) -> Path:
    return atomic_write_text(Path(suite_dir) / LEADERBOARD_JSON, verdicts.model_dump_json(indent=2) + "\n")


def read_verdicts(suite_dir: str | Path) -> LeaderboardVerdicts:
    """Read ``leaderboard.json`` through the contract; one line naming the file when it does not match."""
    path = Path(suite_dir) / LEADERBOARD_JSON
    try:
        return LeaderboardVerdicts.model_validate(read_json(path))
    except (OSError, ValueError, ValidationError) as err:
        first = str(err).splitlines()[0]
        raise LesionBenchError(f"{path}: not a leaderboard.json of this version ({first}); "
                               "regenerate it with `lesionbench leaderboard`") from None
