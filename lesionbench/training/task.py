"""SegmentationTask: the one LightningModule that trains every model from config alone."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn

from lesionbench.config import ExperimentConfig, PhaseConfig
from lesionbench.metrics.boundary import image_boundary, nsd_tolerance
from lesionbench.metrics.challenge import ValPrimary
from lesionbench.metrics.chance import as_prediction
from lesionbench.metrics.scores import PerImageStats, ValDice, image_stats, resize_logits_to
from lesionbench.models import create_model, freeze, unfreeze
from lesionbench.training.losses import build_loss
from lesionbench.training.optim import build_optimizer, build_scheduler, init_weights

#: The default validation metric for checkpoints, early stopping and Optuna: the dataset's primary metric.
PRIMARY_MONITOR = "val/primary"


def selection_monitor(cfg: ExperimentConfig, phase: PhaseConfig) -> tuple[str, str]:
    """(metric, mode) that picks a phase's best checkpoint: what the recipe names (the phase's
    early_stopping.monitor, else its tune.metric), else the dataset's primary metric, so checkpoint
    selection, early stopping and the Optuna objective watch one number."""
    es = phase.early_stopping
    if es is not None:
        return es.monitor, es.mode
    if cfg.tune is not None:
        return cfg.tune.metric, "max" if cfg.tune.direction == "maximize" else "min"
    return PRIMARY_MONITOR, "max"


def create_network(cfg: ExperimentConfig) -> nn.Module:
    """The network a run trains: ``create_model`` from the config (as ``lesionbench.load_run`` builds
    it), then the config's init of the decoder and head (pretrained encoders untouched)."""
    network = create_model(cfg.model.name, num_classes=cfg.num_classes, **cfg.model.options)
    init_weights(network.init_modules(), cfg.model.init)
    return network


class SegmentationTask(L.LightningModule):
    """Model + loss + metrics + the optimiser of the current phase.

    ``net``: the network to train (injected, as lightning-hydra-template does); ``None`` builds it
    from the config (``create_network``). Only the config is saved in checkpoints' hyper-parameters,
    so a checkpoint alone rebuilds the task.
    """

    def __init__(self, config: dict[str, Any] | ExperimentConfig, net: nn.Module | None = None,
                 threshold: float = 0.5) -> None:
        super().__init__()
        self.cfg = config if isinstance(config, ExperimentConfig) else ExperimentConfig.model_validate(config)
        self.save_hyperparameters({"config": self.cfg.model_dump(mode="json"), "threshold": threshold})
        self.threshold = threshold
        self.model = net if net is not None else create_network(self.cfg)
        self.loss_fn = build_loss(self.cfg.loss, getattr(self.model, "deep_supervision_weights", None),
                                  getattr(self.model, "deep_supervision_downsample_masks", False))
        self.val_dice = ValDice()
        self.val_primary = ValPrimary(self.cfg.dataset.name)
        self.test_stats = PerImageStats()
        self.nsd_tolerance = nsd_tolerance(self.cfg.dataset.name)  # px at ground-truth size
        self.test_boundary = PerImageStats(width=3)
        self.test_chance = PerImageStats()
        #: the mean-mask chance prediction (bool C×h×w at the network input size; training/run.py sets it
        #: before the test): the test loop scores it beside the model on each image (metrics/chance.py)
        self.chance_prior: torch.Tensor | None = None
        self.phases = self.cfg.resolved_phases()
        self.phase_index = 0
        self._compiled = False  # configure_model may run again (a phase, a test): compile once
        self.test_result: tuple[torch.Tensor, torch.Tensor] | None = None
        self.test_boundary_result: torch.Tensor | None = None  # N×C×(hd95, assd, nsd), rows as test_result's
        self.test_chance_result: torch.Tensor | None = None  # N×C×4 counts of chance_prior, rows as test_result's
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
        if self.cfg.trainer.compile and not self._compiled:
            self.model.compile()
            self._compiled = True

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
        pred, target = logits.sigmoid() > self.threshold, batch["mask"] > 0.5
        self.val_dice.update(pred, target)
        self.val_primary.update(image_stats(pred, target))
        bs = len(batch["image"])
        self.log("val/loss", loss, on_epoch=True, prog_bar=False, batch_size=bs, sync_dist=True)
        self.log("val/dice", self.val_dice, on_epoch=True, prog_bar=True, batch_size=bs)

    def on_validation_epoch_end(self) -> None:
        # the dataset's ranking metric over the whole epoch (a pooled metric is no mean of batches),
        # under its own name and under the default monitor's
        value = self.val_primary.compute()
        self.val_primary.reset()
        if not torch.isnan(value):  # NaN: no validation batch ran this epoch
            if self.val_primary.metric.name != "dice":  # val/dice is logged per batch above
                self.log(f"val/{self.val_primary.metric.name}", value)
            self.log(PRIMARY_MONITOR, value, prog_bar=True)
        self.log("phase", float(self.phase_index), sync_dist=False)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, list[torch.Tensor]]:
        """Compare at the ground truth's original size, one image at a time; returns the masks it
        scored (C×H×W bool, CPU) for callbacks (training/test_outputs.py writes them to the run folder)."""
        logits = self._final(self(batch["image"]))
        stats, boundary, masks, chance = [], [], [], []
        for i, gt in enumerate(batch["orig_mask"]):
            up = resize_logits_to(logits[i : i + 1].float(), gt.shape[-2:])  # predict's resize too
            pred, target = up.sigmoid() > self.threshold, gt.unsqueeze(0).bool()
            stats.append(image_stats(pred, target))
            masks.append(pred[0].cpu())
            # CPU: scipy's distance transform; HD95, ASSD and NSD in one pass
            boundary.append(image_boundary(masks[-1][None], target.cpu(), tolerance=self.nsd_tolerance))
            if self.chance_prior is not None:
                chance.append(image_stats(as_prediction(self.chance_prior, gt.shape[-2:])[None], target.cpu()))
        self.test_stats.update(torch.cat(stats), batch["index"])
        self.test_boundary.update(torch.cat(boundary).to(self.device), batch["index"])
        if chance:
            self.test_chance.update(torch.cat(chance).to(self.device), batch["index"])
        return {"pred": masks}

    def on_test_epoch_end(self) -> None:
        self.test_result = self.test_stats.compute()
        self.test_boundary_result = self.test_boundary.compute()[1]
        self.test_chance_result = self.test_chance.compute()[1] if self.chance_prior is not None else None
        self.test_stats.reset()
        self.test_boundary.reset()
        self.test_chance.reset()

    @staticmethod
    def _final(out: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        return out[-1] if isinstance(out, (list, tuple)) else out

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = build_optimizer(params, self.phase.optimizer)
        epochs = int(self.trainer.max_epochs or self.phase.epochs or 1)
        steps_per_epoch = max(1, math.ceil(int(self.trainer.estimated_stepping_batches) / epochs))
        monitor, mode = selection_monitor(self.cfg, self.phase)  # plateau schedulers watch what selects
        scheduler = build_scheduler(
            optimizer, self.phase.scheduler, epochs=epochs, steps_per_epoch=steps_per_epoch, monitor=monitor, mode=mode,
        )
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
