"""Every environment variable LesionBench reads, read here and nowhere else (as nnU-Net keeps its paths).

``settings()`` reads ``os.environ`` when called, so a value is taken when it is used (a test or a
parent process may set it after import), never baked into a default at import. Nothing here writes
the environment: options that change results live in the experiment config, not in variables.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lesionbench.errors import LesionBenchError

#: Field name -> the environment variable it is read from.
ENV_NAMES = {
    "data": "LESIONBENCH_DATA",
    "workdir": "LESIONBENCH_WORKDIR",
    "synthetic": "LESIONBENCH_SYNTHETIC",
    "experiments": "LESIONBENCH_EXPERIMENTS",
    "weights": "LESIONBENCH_WEIGHTS",
    "wandb_api_key": "WANDB_API_KEY",
    "wandb_mode": "WANDB_MODE",
    "wandb_init_timeout": "WANDB_INIT_TIMEOUT",
    "netrc": "NETRC",
    "local_rank": "LOCAL_RANK",
    "node_rank": "NODE_RANK",
    "threads": "LESIONBENCH_THREADS",
    "claim_timeout": "LESIONBENCH_CLAIM_TIMEOUT",
    "torchelastic_run_id": "TORCHELASTIC_RUN_ID",
    "slurm_ntasks": "SLURM_NTASKS",
    "cuda_visible_devices": "CUDA_VISIBLE_DEVICES",
}


class Settings(BaseModel):
    """The process's environment, typed; an empty variable counts as unset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: Path | None = Field(None, description="Folder holding the unzipped official archives")
    workdir: Path | None = Field(None, description="Where splits and caches go (default <root>/.lesionbench)")
    synthetic: Path | None = Field(None, description="Synthetic replica root (default ./data/synthetic)")
    experiments: Path | None = Field(None, description="experiments/ folder (default ./experiments)")
    weights: str = Field("imagenet", description="Encoder weights when a model does not name them: imagenet | none | "
                                                 "PATH; read into a config's model.default_weights when it is loaded")
    wandb_api_key: str | None = None
    wandb_mode: str | None = Field(None, description="online | offline | disabled; default offline without an API key")
    wandb_init_timeout: float = Field(60.0, gt=0)
    netrc: Path = Field(default_factory=lambda: Path.home() / ".netrc")
    local_rank: int = 0
    node_rank: int = 0
    threads: int | None = Field(None, ge=1, description="CPU threads of one worker (set by --workers)")
    claim_timeout: float = Field(600.0, gt=0, description="Seconds without a heartbeat before a run's claim is stale")
    torchelastic_run_id: str | None = Field(None, description="Set by torchrun: its ranks share one results folder")
    slurm_ntasks: int = Field(1, ge=1, description="Tasks of a SLURM step (srun -n N: one DDP job, no claims)")
    cuda_visible_devices: str | None = None

    @field_validator("workdir")
    @classmethod
    def _workdir_is_a_folder(cls, v: Path | None) -> Path | None:
        if v is not None and v.exists() and not v.is_dir():
            raise ValueError(f"{v} is a file, not a folder; point it at a folder (or unset it)")
        return v

    @property
    def is_rank_zero(self) -> bool:
        """False in the worker processes Lightning's DDP launcher starts (they re-run the command)."""
        return self.local_rank == 0 and self.node_rank == 0

    def synthetic_root(self) -> Path:
        """$LESIONBENCH_SYNTHETIC, else ./data/synthetic (where `make demo` writes the replica), made
        absolute against the current directory, so a config loaded here names the same folder anywhere."""
        return (self.synthetic or Path("data") / "synthetic").expanduser().absolute()

    def data_root(self) -> Path:
        """$LESIONBENCH_DATA, or one line saying how to set it."""
        if self.data is None:
            raise LesionBenchError("LESIONBENCH_DATA is not set: export LESIONBENCH_DATA=/folder/with/the/unzipped/"
                                   "archives (or pass --root / set dataset.root, or use --synthetic)")
        return self.data.expanduser()


def settings() -> Settings:
    """Read the environment now; a malformed value is one line naming the variable."""
    raw = {field: os.environ[env] for field, env in ENV_NAMES.items() if os.environ.get(env, "").strip()}
    try:
        return Settings.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        env = ENV_NAMES.get(str(first["loc"][0]), str(first["loc"][0]))
        raise LesionBenchError(f"environment variable {env}={first['input']!r}: {first['msg']}") from None


def child_environment(**extra: str) -> dict[str, str]:
    """The environment for a child process (a worker, nnU-Net's steps): this one's plus ``extra``."""
    return {**os.environ, **extra}
