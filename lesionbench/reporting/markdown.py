"""Markdown cell formatting shared by the leaderboard and the trials table.

Missing values are always rendered as "—" so an absent cost never looks like a zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MISSING = "—"


def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values
            if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)]


def esc(text: Any) -> str:
    """Keep a cell inside its column: escape pipes, fold newlines."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def pm(stat: tuple[float, float] | None, digits: int = 4) -> str:
    """``mean ± std``."""
    return MISSING if stat is None else f"{stat[0]:.{digits}f} ± {stat[1]:.{digits}f}"


def mean_of(values: list[Any], scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    """Mean of the numeric values (divided by ``scale``), or — when there are none."""
    vals = _finite(values)
    return fmt.format(float(np.mean(vals)) / scale) if vals else MISSING


def duration(seconds: list[Any]) -> str:
    """Mean duration in s / min / h, whichever reads best."""
    vals = _finite(seconds)
    if not vals:
        return MISSING
    s = float(np.mean(vals))
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def param(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def table(rows: list[list[str]], header: list[str]) -> list[str]:
    """GitHub-flavoured markdown table lines."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows])
