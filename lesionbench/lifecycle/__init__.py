"""What every engine shares to run an experiment, below both the Lightning loop (training/) and the
other engines (engines/): the one start/finish writer of a run folder (``runs``), the provenance it
records (``provenance``) and the cost measurement of a trained network (``profile``)."""

from lesionbench.lifecycle.runs import (
    finish_run,
    folder_hash,
    is_finished,
    record_failure,
    set_aside_if_stale,
    start_run,
)

__all__ = ["finish_run", "folder_hash", "is_finished", "record_failure", "set_aside_if_stale", "start_run"]
