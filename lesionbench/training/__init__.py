"""Training: the LightningModule, losses, metrics, trainer assembly and the one run function."""

import lesionbench.imports  # noqa: F401 - loads timm without wandb, before smp does
