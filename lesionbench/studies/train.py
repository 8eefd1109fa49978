"""train(cfg, run_dir): the one way a training happens, whichever engine the config names.

The engines are siblings (training/run.py, the Lightning loop; engines/nnunet.py, nnU-Net v2): each
writes the same run folder through lesionbench/lifecycle, and neither knows the other. Choosing
between them happens here, above both; suites, studies and the CLI call this.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lesionbench.config import ExperimentConfig
from lesionbench.runfolder import RunResult

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback


def train(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    suite: str = "adhoc",
    callbacks: list[Callback] | None = None,
    progress: bool = True,
) -> RunResult:
    """Train, test and write ``run_dir`` with the config's engine (``engine: lightning | nnunet``).

    ``callbacks`` and ``progress`` are the Lightning loop's (nnU-Net reports into its own log)."""
    if cfg.engine == "nnunet":
        from lesionbench.engines.nnunet import train_nnunet

        return train_nnunet(cfg, Path(run_dir), suite)
    from lesionbench.training.run import train as train_lightning

    return train_lightning(cfg, run_dir, suite, callbacks, progress)
