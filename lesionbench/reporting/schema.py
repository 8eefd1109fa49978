"""What the leaderboard requires of a run folder, as pydantic models kept in one place.

These are the reporting side's checks until the typed run-folder contract (lesionbench/runfolder.py)
replaces them: strict types (no "0.8" strings, no booleans as numbers), unknown keys allowed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class _Lenient(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class RunInfo(_Lenient):
    """run.json: what the leaderboard reads of it."""

    status: str
    seed: int | None = None
    error: str | None = None
    train_time_s: float | None = None


class Metrics(_Lenient):
    """metrics.json: the test results of a finished run (cost / challenge / published are checked softly)."""

    dataset: str | None = None  # else config.yaml's dataset.name
    experiment: str | None = None
    model: str | None = None
    seed: int | None = None
    n_test: int | None = Field(None, ge=1)
    image_size: int | None = None
    per_image: dict[str, float]
    pooled: dict[str, float] | None = None
    cost: Any = None
    challenge: Any = None
    published: Any = None

    @field_validator("per_image")
    @classmethod
    def _has_dice(cls, v: dict[str, float]) -> dict[str, float]:
        if "dice" not in v:
            raise ValueError("must hold at least {'dice': mean}")
        return v


class PerImageRow(_Lenient):
    """One row of per_image.csv (other columns: further metrics and each channel's counts)."""

    id: str
    dice: float = Field(ge=0, le=1)


def first_error(err: ValidationError, filename: str) -> str:
    """One line: the file, the key and what is wrong with it."""
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "(top level)"
    return (f"{filename}: key '{where}': {e['msg']} (got {e.get('input')!r:.60})"
            + (f" and {err.error_count() - 1} more problem(s)" if err.error_count() > 1 else ""))
