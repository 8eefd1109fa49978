"""Is a finished run's data still today's data? The suite runner asks before it reuses a result.

A run is identified by its config hash, which leaves the data's location out (``dataset.root``);
what the data holds is recorded in run.json as ``data_content`` (data/cache.py ``content_hash``).
A finished run whose recorded content differs from today's is still reused, never retrained
silently, and never reused silently: one line names the run and both hashes.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from lesionbench.config import NUM_CLASSES, DatasetConfig, ExperimentConfig
from lesionbench.runfolder import RunFolderError, read_run_info
from lesionbench.settings import settings

log = logging.getLogger(__name__)

#: Dataset settings that change how images are fed, not which pixels a run sees.
NOT_CONTENT = {"augmentation": "none", "normalize": "imagenet", "num_workers": 0}


def data_key(cfg: ExperimentConfig) -> tuple[str, str]:
    """What today's content depends on: the dataset settings, and the folders the environment names."""
    dataset = cfg.dataset.model_copy(update=NOT_CONTENT).model_dump_json()
    return dataset, settings().model_dump_json(include={"data", "synthetic", "workdir"})


@lru_cache(maxsize=32)
def today_content(dataset_json: str, environment: str) -> str:
    """The content hash of the data a dataset config reads today, once per process and ``data_key``
    (``environment`` is part of the key only)."""
    from lesionbench.data import SegmentationDataModule

    dataset = DatasetConfig.model_validate_json(dataset_json)
    dm = SegmentationDataModule(dataset, batch_size=1, seed=0, num_classes=NUM_CLASSES[dataset.name])
    dm.setup()
    return dm.content_hash


def data_changed(run_name: str, run_dir: Path, cfg: ExperimentConfig) -> str | None:
    """One line when the finished run in ``run_dir`` recorded other data than today's, else None
    (also for a run that recorded no content: made before it was recorded, or by nnU-Net)."""
    try:
        recorded = read_run_info(run_dir).data_content
    except RunFolderError:
        return None
    if recorded is None:
        return None
    try:
        today = today_content(*data_key(cfg))
    except Exception as err:  # noqa: BLE001 - a check that cannot run never stops the suite reusing a result
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return f"{run_name}: finished on data {recorded}; today's data could not be read to compare ({reason})"
    if today == recorded:
        return None
    return (f"{run_name}: finished on other data than today's (data_content {recorded}, today {today}); "
            f"its result is kept: delete {run_dir} to train it on today's data")


def warn_if_data_changed(run_name: str, run_dir: Path, cfg: ExperimentConfig) -> None:
    """Say :func:`data_changed`'s line, if any, once, on the main process."""
    line = data_changed(run_name, run_dir, cfg) if settings().is_rank_zero else None
    if line:
        log.warning(line)
