"""SegmentationTask: the one LightningModule that trains every model from config alone."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from lesionbench.config import ExperimentConfig, PhaseConfig
from lesionbench.models import create_model, freeze, unfreeze
from lesionbench.training.losses import build_loss
from lesionbench.training.metrics import PerImageStats, ValDice, image_stats
from lesionbench.training.optim import build_optimizer, build_scheduler, init_weights


class SegmentationTask(L.LightningModule):
    """Model + loss + metrics + the optimiser of the current phase.

    The network is built from its registry name and options; only the config is saved
    in checkpoints' hyper-parameters, so a checkpoint alone rebuilds the task.
    """

    def __init__(self, config: dict[str, Any], threshold: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = ExperimentConfig.model_validate(config)
        self.threshold = threshold
        self.model = create_model(self.cfg.model.name, num_classes=self.cfg.num_classes, **self.cfg.model.options)
        init_weights(self.model.init_modules(), self.cfg.model.init)
        self.loss_fn = build_loss(self.cfg.loss, getattr(self.model, "deep_supervision_weights", None),
                                  getattr(self.model, "deep_supervision_downsample_masks", False))
        self.val_dice = ValDice()
        self.test_stats = PerImageStats()
        self.phases = self.cfg.resolved_phases()
        self.phase_index = 0
        self.test_result: tuple[torch.Tensor, torch.Tensor] | None = None
        self.set_phase(0)

    # ------------------------------------------------------------------ phases
    @property
    def phase(self) -> PhaseConfig:
        return self.phases[self.phase_index]

    def set_phase(self, index: int) -> None:
        """Freeze/unfreeze the stages this phase names (everything trainable otherwise)."""
        self.phase_index = index
        for p in self.model.parameters():
            p.requires_grad_(True)
        unfreeze(self.model, list(self.model.stages()))
        if self.phase.freeze:
            freeze(self.model, self.phase.freeze)
        if self.phase.unfreeze:
            unfreeze(self.model, self.phase.unfreeze)

    # ------------------------------------------------------------------ steps
    def configure_model(self) -> None:
        """trainer.channels_last: NHWC weights, faster convolutions on tensor-core GPUs;
        trainer.compile: torch.compile in place (Module.compile keeps the state_dict keys)."""
        if self.cfg.trainer.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.cfg.trainer.compile and getattr(self.model, "_compiled_call_impl", None) is None:
            self.model.compile()

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.cfg.trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.loss_fn(self(batch["image"]), batch["mask"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self._final(self(batch["image"]))
        loss = self.loss_fn(logits, batch["mask"])
        self.val_dice.update(logits.sigmoid() > self.threshold, batch["mask"] > 0.5)
        bs = len(batch["image"])
        self.log("val/loss", loss, on_epoch=True, prog_bar=False, batch_size=bs, sync_dist=True)
        self.log("val/dice", self.val_dice, on_epoch=True, prog_bar=True, batch_size=bs)

    def on_validation_epoch_end(self) -> None:
        self.log("phase", float(self.phase_index), sync_dist=False)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Compare at the ground truth's original size, one image at a time."""
        logits = self._final(self(batch["image"]))
        stats = []
        for i, gt in enumerate(batch["orig_mask"]):
            up = F.interpolate(logits[i : i + 1].float(), size=tuple(gt.shape[-2:]), mode="bilinear", align_corners=False)
            stats.append(image_stats(up.sigmoid() > self.threshold, gt.unsqueeze(0).bool()))
        self.test_stats.update(torch.cat(stats), batch["index"])

    def on_test_epoch_end(self) -> None:
        self.test_result = self.test_stats.compute()
        self.test_stats.reset()

    @staticmethod
    def _final(out: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        return out[-1] if isinstance(out, (list, tuple)) else out

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = build_optimizer(params, self.phase.optimizer)
        epochs = int(self.trainer.max_epochs or self.phase.epochs or 1)
        steps_per_epoch = max(1, math.ceil(int(self.trainer.estimated_stepping_batches) / epochs))
        es = self.phase.early_stopping
        scheduler = build_scheduler(
            optimizer, self.phase.scheduler, epochs=epochs, steps_per_epoch=steps_per_epoch,
            monitor=es.monitor if es else "val/dice", mode=es.mode if es else "max",
        )
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
