"""SegmentationDataModule: files -> split -> cache -> augmentation -> batches.

Batches are dicts (image, mask, index, id; test batches add ``orig_mask`` at the ground
truth's original size) so metrics can be computed where the challenges compute them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from lesionbench.config import DatasetConfig, ExperimentConfig
from lesionbench.data import leakage, synthetic
from lesionbench.data.cache import _open, build_cache, cache_content, content_hash, manifest_hash
from lesionbench.data.checks import check_pairs, ensure_checked
from lesionbench.data.decode import Size, load_mask, load_pair
from lesionbench.data.layouts import Layout, Sample, get_layout, locate, scan
from lesionbench.data.splits import PARTS, load_or_create
from lesionbench.data.stats import training_stats
from lesionbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from lesionbench.errors import LesionBenchError
from lesionbench.settings import settings

log = logging.getLogger(__name__)


def _synthetic_base(name: str, root: str | None) -> Path | None:
    """The synthetic root when this dataset is (or is read from) the synthetic replicas."""
    if name == "synthetic":
        return Path(root).expanduser() if root and root != "synthetic" else synthetic.default_root()
    return synthetic.default_root() if root == "synthetic" else None


def resolve_root(name: str, root: str | None = None) -> Path:
    """Folder holding the unzipped archives: ``root``, else $LESIONBENCH_DATA; a ``<root>/<dataset>``
    sub-folder is used when the archives sit there. Synthetic: the replica under the synthetic root."""
    layout = get_layout(name)
    base = _synthetic_base(name, root)
    if base is None:
        if not root and settings().data is None:
            raise LesionBenchError(f"dataset {name}: set dataset.root or $LESIONBENCH_DATA to the folder with the "
                                   "unzipped archives (or use dataset 'synthetic')")
        base = Path(root).expanduser() if root else settings().data_root()
    found = locate(layout, base)
    if found is not None:
        return found
    return base / layout.subdir if _synthetic_base(name, root) else base


def work_dir(root: Path) -> Path:
    """Where splits and caches go: $LESIONBENCH_WORKDIR, else <root>/.lesionbench (if writable)."""
    if settings().workdir is not None:
        return settings().workdir / hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]
    if os.access(root, os.W_OK):
        return root / ".lesionbench"
    return Path.home() / ".cache" / "lesionbench" / hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]


class SegmentationDataset(Dataset):
    """One split part; reads the memory-mapped cache (opened lazily per worker) or decodes files."""

    def __init__(self, samples: list[Sample], layout: Layout, size: Size, transform: Any,
                 cache: Path | None = None, with_orig: bool = False) -> None:
        self.samples, self.layout, self.size, self.transform = samples, layout, size, transform
        self.cache, self.with_orig, self._arrays = cache, with_orig, None

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}  # never pickle a memory map into a worker

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        if self.cache is not None:
            self._arrays = self._arrays or _open(self.cache)
            image, mask = np.array(self._arrays.images[i]), np.array(self._arrays.masks[i])
        else:
            image, mask = load_pair(s, self.layout.mask_threshold, self.size)
        out = self.transform(image=image, mask=np.ascontiguousarray(mask.transpose(1, 2, 0)))
        item = {"image": out["image"].float(), "mask": out["mask"].float(), "index": i, "id": s.id}
        if self.with_orig:
            item["orig_mask"] = torch.from_numpy(np.stack([load_mask(p, self.layout.mask_threshold) for p in s.masks]))
        return item


def seed_worker(worker_id: int) -> None:
    """Loader worker start: Lightning's numpy/random/torch seeding, plus the albumentations Compose
    seeded from this worker's torch seed, which the loader's seeded generator derives per epoch
    and per worker (so workers differ, epochs differ, and a re-run repeats them all)."""
    from lightning.fabric.utilities.seed import pl_worker_init_function

    pl_worker_init_function(worker_id)
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info else None
    if info and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(info.seed % 2**32)


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """default_collate, except ``orig_mask`` stays a list (sizes differ per image)."""
    out = default_collate([{k: v for k, v in b.items() if k != "orig_mask"} for b in batch])
    if "orig_mask" in batch[0]:
        out["orig_mask"] = [b["orig_mask"] for b in batch]
    return out


class SegmentationDataModule(L.LightningDataModule):
    def __init__(self, cfg: DatasetConfig, batch_size: int, seed: int = 42, num_classes: int = 1) -> None:
        super().__init__()
        self.cfg, self.batch_size, self.seed = cfg, batch_size, seed
        self.layout = get_layout(cfg.name)
        if num_classes not in (1, self.layout.num_classes):
            raise LesionBenchError(f"dataset {cfg.name} has {self.layout.num_classes} class(es), not {num_classes}")
        self.parts: dict[str, list[Sample]] = {}
        self._datasets: dict[str, SegmentationDataset] = {}
        self.leaks: list[leakage.Leak] = []

    @classmethod
    def from_experiment(cls, exp: ExperimentConfig) -> SegmentationDataModule:
        return cls(exp.dataset, exp.trainer.batch_size, exp.trainer.seed, exp.num_classes)

    # ------------------------------------------------------------------ properties
    num_classes = property(lambda self: self.layout.num_classes)
    class_names = property(lambda self: list(self.layout.class_names))
    train_ids = property(lambda self: [s.id for s in self._part("train")])
    val_ids = property(lambda self: [s.id for s in self._part("val")])
    test_ids = property(lambda self: [s.id for s in self._part("test")])

    @property
    def manifest_hash(self) -> str:
        """One hash over the files and the split of every part: changes when any input changes."""
        return hashlib.sha256("|".join(manifest_hash(self._part(p), p) for p in PARTS).encode()).hexdigest()[:16]

    @property
    def content_hash(self) -> str:
        """One hash over what the model sees in every part (ids and decoded, resized pixels):
        read from the caches, where it was stored when they were built; the same for the same
        data in any folder or on any machine."""
        parts = "|".join(f"{p}:{self._part_content(p)}" for p in PARTS)
        return hashlib.sha256(parts.encode()).hexdigest()[:16]

    def _part_content(self, part: str) -> str:
        dataset = self._datasets[part] if self._datasets else None
        if dataset is not None and dataset.cache is not None:
            return cache_content(dataset.cache)
        samples, size, threshold = self._part(part), self.cfg.image_size, self.layout.mask_threshold
        return content_hash([s.id for s in samples], (load_pair(s, threshold, size) for s in samples))

    def _part(self, part: str) -> list[Sample]:
        if not self.parts:
            raise LesionBenchError("SegmentationDataModule: call setup() before reading ids or loaders")
        return self.parts[part]

    # ------------------------------------------------------------------ lifecycle
    def prepare_data(self) -> None:
        base = _synthetic_base(self.cfg.name, self.cfg.root)
        if base is not None:
            try:
                synthetic.ensure(base)
            except OSError as err:  # read-only, a file in the way, full disk
                raise LesionBenchError(f"{base}: cannot write the synthetic replica there ({err.strerror or err}); "
                                       "set $LESIONBENCH_SYNTHETIC (or dataset.root) to a writable folder") from None

    def setup(self, stage: str | None = None) -> None:
        if self.parts:
            return
        self.prepare_data()  # idempotent; covers setup() called without a Trainer
        self.root = resolve_root(self.cfg.name, self.cfg.root)
        self.work = work_dir(self.root)
        if not os.access(self.root, os.W_OK) and self.work.is_relative_to(Path.home() / ".cache" / "lesionbench"):
            log.warning("%s is read-only: splits and caches go to %s (set $LESIONBENCH_WORKDIR to choose)",
                        self.root, self.work)
        check_pairs(self.layout, self.root)  # unpaired files: verify's lines, before scan's summary
        official = scan(self.cfg.name, self.root)
        split = load_or_create(self.cfg.name, self.cfg.split, official, self.work / "splits")
        by_id = {s.id: s for samples in official.values() for s in samples}
        self.parts = {p: [by_id[i] for i in split[p]][: self.cfg.subset] for p in PARTS}
        if self.cfg.leakage != "ignore":
            evals = self.parts["val"] + self.parts["test"]
            self._apply_leaks(leakage.find_leaks(self.parts["train"], evals), f"{self.cfg.name}/{self.cfg.split}")
        self.mean, self.std = self._normalization()
        self._datasets = {p: self._make(p) for p in PARTS}

    def _normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """ImageNet's mean/std, or the training split's own (``dataset.normalize: dataset``)."""
        if self.cfg.normalize == "imagenet":
            return IMAGENET_MEAN, IMAGENET_STD
        return training_stats(self.parts["train"], self.cfg.image_size, self.layout.mask_threshold,
                              self.work / "cache", self._cache_tag("train"))

    def _make(self, part: str) -> SegmentationDataset:
        samples, size = self.parts[part], self.cfg.image_size
        cache = None
        tag = self._cache_tag(part)
        ensure_checked(samples, self.cfg.name, self.root, self.work / "checked", tag)  # verify's checks, once
        if self.cfg.cache and samples:
            cache = build_cache(samples, size, self.layout.mask_threshold, self.work / "cache", tag).path
        tf = build_transforms(self.cfg.augmentation, size, train=part == "train", seed=self.seed,
                              mean=self.mean, std=self.std)
        return SegmentationDataset(samples, self.layout, size, tf, cache, with_orig=part == "test")

    def mask_mean(self, part: str = "train") -> np.ndarray | None:
        """Per-pixel mean C×H×W (float64) of a part's masks at the network input size, each resized as the
        data cache resizes it (read from the part's cache when it has one); None for an empty part."""
        samples = self._part(part)
        if not samples:
            return None
        dataset = self._datasets.get(part)
        if dataset is not None and dataset.cache is not None:
            masks = _open(dataset.cache).masks
            return masks.sum(axis=0, dtype=np.int64) / len(masks)
        total = None
        for s in samples:
            m = np.stack([load_mask(p, self.layout.mask_threshold, self.cfg.image_size) for p in s.masks])
            total = m.astype(np.int64) if total is None else total + m
        return total / len(samples)

    def restrict(self, part: str, exclude: set[str], stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
                 ) -> list[Sample]:
        """Drop ``exclude`` ids from one part and rebuild it for scoring at original size (a
        cross-dataset evaluation removes the images the model was trained on, and normalises with the
        model's own ``stats``); returns what is kept."""
        self.parts[part] = [s for s in self._part(part) if s.id not in exclude]
        mean, std = stats or (self.mean, self.std)
        tf = build_transforms(self.cfg.augmentation, self.cfg.image_size, train=False, mean=mean, std=std)
        # decoded on the fly: a cache of this subset would replace the full part's cache
        self._datasets[part] = SegmentationDataset(self.parts[part], self.layout, self.cfg.image_size, tf,
                                                   cache=None, with_orig=True)
        return self.parts[part]

    def loader(self, part: str) -> DataLoader:
        """An unshuffled loader over one part (train, val or test)."""
        return self._loader(part, shuffle=False)

    def _cache_tag(self, part: str) -> str:
        label = self.cfg.split if "/" not in self.cfg.split and "." not in self.cfg.split else \
            "file" + hashlib.sha1(self.cfg.split.encode()).hexdigest()[:6]
        return f"{self.cfg.name}-{label}-{part}" + (f"-first{self.cfg.subset}" if self.cfg.subset else "")

    def _apply_leaks(self, leaks: list[leakage.Leak], context: str) -> None:
        if not leaks or self.cfg.leakage == "ignore":
            return
        self.leaks.extend(leaks)
        if self.cfg.leakage == "exclude":
            drop = {x.train_id for x in leaks}
            self.parts["train"] = [s for s in self.parts["train"] if s.id not in drop]
            log.warning("%s: excluded %d leaked training image(s)", context, len(drop))
        else:
            warnings.warn(leakage.describe(leaks, context), stacklevel=2)
            log.warning(leakage.describe(leaks, context))

    def check_cross_dataset(self, other: SegmentationDataModule) -> list[leakage.Leak]:
        """Leaks between this module's training set and another module's val/test sets
        (train on one ISIC edition, evaluate on another); applies this module's leakage policy."""
        self.setup()
        other.setup()
        leaks = leakage.find_leaks(self.parts["train"], other.parts["val"] + other.parts["test"])
        self._apply_leaks(leaks, f"train {self.cfg.name} vs eval {other.cfg.name}")
        if leaks and self.cfg.leakage == "exclude":
            self._datasets["train"] = self._make("train")
        return leaks

    # ------------------------------------------------------------------ loaders
    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        if not self._datasets:
            self.setup()
        ds, workers = self._datasets[part], self.cfg.num_workers
        return DataLoader(
            ds, batch_size=self.batch_size, shuffle=shuffle, num_workers=workers, collate_fn=collate,
            pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
            drop_last=shuffle and len(ds) > self.batch_size,  # no size-1 last batch for BatchNorm
            # every loader has its own seeded generator: a val pass never shifts the training stream
            generator=torch.Generator().manual_seed(self.seed + PARTS.index(part)),
            worker_init_fn=seed_worker if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

