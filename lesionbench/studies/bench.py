"""``lesionbench bench``: training-step overhead vs a bare loop, loader vs model, inference cost.

Why one process, interleaved: the machine may be shared, so both sides of every comparison
run alternately in the same process, with the same threads, and the load average is recorded
next to the figures. Results go to ``<out>/perf.json`` and ``<out>/perf.md`` (never hand-edited).
"""

from __future__ import annotations

import gc
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from lesionbench.errors import LesionBenchError
from lesionbench.studies.bench_setup import DEFAULT_MODELS, Settings, full_size_data, machine, threads_for


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def _phase(name: str, log: Callable[[str], None]) -> Callable[[], None]:
    start = time.perf_counter()
    log(f"bench: {name} ...")
    return lambda: log(f"bench: {name} done in {time.perf_counter() - start:.1f} s (load {os.getloadavg()[0]:.2f})")


def bench_training(s: Settings, root: Path, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """LesionBench's Trainer vs a bare loop on the same task, data module and device, built as
    ``train()`` builds them. Blocks of ``steps`` timed steps alternate which side goes first; blocks
    are added until the 95% CI of the ratio is within ±``precision`` (or ``max_blocks`` is reached)."""
    import lightning as L

    from lesionbench.data import SegmentationDataModule
    from lesionbench.studies import bench_measure as m
    from lesionbench.training.task import SegmentationTask

    out: dict[str, Any] = {}
    for name in s.models:
        done = _phase(f"training step {name}", log)
        cfg = m.experiment(name, root, s.train_size, s.train_batch, s.device, s.workers, steps=s.warmup + s.steps,
                           compiled=s.compile)
        L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)  # as train() does
        dm = SegmentationDataModule.from_experiment(cfg)
        dm.prepare_data()
        dm.setup("fit")
        task = SegmentationTask(cfg.model_dump(mode="json"))
        task.set_phase(0)
        light, bare, peaks, threads = [], [], [], set()
        while True:
            for side in (("lightning", "bare") if len(light) % 2 == 0 else ("bare", "lightning")):
                threads.add(torch.get_num_threads())
                if side == "lightning":
                    block_dir = work / "runs" / f"{len(light)}"
                    seconds, used = m.lightning_steps(task, dm, cfg, block_dir, s.warmup, s.steps, s.device)
                    shutil.rmtree(block_dir, ignore_errors=True)  # its checkpoints: 40 blocks filled 18 GB
                    gc.collect()  # the finished Trainer's optimiser state sits in reference cycles
                    threads.add(used)
                    light.append(seconds)
                else:
                    seconds, peak = m.bare_steps(task, dm, s.warmup, s.steps, s.device)
                    bare.append(seconds)
                    peaks.append(peak)
            est = m.ratio_ci(light, bare)
            log(f"bench: {name}: block {len(light)}/{s.max_blocks}, ratio {est['ratio']:.3f} "
                f"±{100 * est['halfwidth']:.1f}% (stops at ±{100 * s.precision:.0f}%)")
            if len(light) >= s.max_blocks or (len(light) >= s.min_blocks and est["halfwidth"] <= s.precision):
                break
        images = s.steps * s.train_batch
        lo, hi = est["ci95"]
        log(f"bench: {name}: LesionBench/bare ratio {est['ratio']:.3f}, 95% CI [{lo:.3f}, {hi:.3f}] "
            f"(±{100 * est['halfwidth']:.1f}%, {len(light)} blocks × {s.steps} steps)")
        out[name] = {"size": s.train_size, "batch": s.train_batch, "warmup_steps": s.warmup, "timed_steps": s.steps,
                     "blocks": len(light), "lightning_s": light, "bare_s": bare,
                     "lightning_img_s": images * len(light) / sum(light), "bare_img_s": images * len(bare) / sum(bare),
                     "ratio": est["ratio"], "ratio_ci95": [lo, hi], "ci_halfwidth": est["halfwidth"],
                     "precise": est["halfwidth"] <= s.precision, "train_peak_mb": max(peaks), "threads": sorted(threads)}
        done()
    return out


def bench_loader(s: Settings, root: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Images/s of the training DataLoader, cached vs decoding the full-size files, same augmentation."""
    from lesionbench.data import SegmentationDataModule
    from lesionbench.studies import bench_measure as m

    sizes: dict[str, Any] = {}
    for size in s.loader_sizes:
        done = _phase(f"loader {size} px", log)
        loaders, times, res = {}, {}, {}
        for aug in s.augmentations:
            for cache in (True, False):
                cfg = m.experiment(DEFAULT_MODELS[0], root, size, s.loader_batch, s.device, s.workers, aug, cache=cache)
                dm = SegmentationDataModule.from_experiment(cfg)
                t = time.perf_counter()
                dm.setup("fit")  # builds the cache (one-off, reported apart)
                if cache:
                    res.setdefault("cache_build_s", time.perf_counter() - t)
                loaders[(aug, cache)] = dm.train_dataloader()
                m.loader_epoch(loaders[(aug, cache)])  # warm-up: page cache, workers
        for _ in range(s.loader_reps):  # interleaved: every setting once per round
            for key, loader in loaders.items():
                n, sec = m.loader_epoch(loader)
                times.setdefault(key, []).append(n / sec)
        for aug in s.augmentations:
            c, u = _median(times[(aug, True)]), _median(times[(aug, False)])
            res[aug] = {"cached_img_s": c, "uncached_img_s": u, "speedup": c / u}
        sizes[str(size)] = res
        done()
    return {"augmentations": list(s.augmentations), "images": s.loader_images, "batch": s.loader_batch,
            "workers": s.workers, "reps": s.loader_reps, "sizes": sizes}


def bench_rates(s: Settings, loader: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """The models' appetite (training images/s) at the loader sizes: every model at ``rate_size``,
    the hungriest (fastest) one at the others; the loader/model ratio against the hungriest."""
    from lesionbench.studies import bench_measure as m

    done = _phase("model consumption rates", log)
    rates: dict[str, dict[str, float]] = {str(s.rate_size): {}}
    for name in s.models:
        rates[str(s.rate_size)][name] = m.model_rate(name, s.rate_size, s.rate_batch, s.rate_steps, s.device)
    fastest = max(rates[str(s.rate_size)], key=rates[str(s.rate_size)].get)
    aug = s.augmentations[0]
    for size in s.loader_sizes:
        key = str(size)
        if key not in rates:
            rates[key] = {fastest: m.model_rate(fastest, size, s.rate_batch, s.rate_steps, s.device)}
        model = max(rates[key].values())
        cell = loader["sizes"][key]
        cell.update(model=max(rates[key], key=rates[key].get), model_img_s=model,
                    loader_model_ratio=cell[aug]["cached_img_s"] / model,
                    uncached_loader_model_ratio=cell[aug]["uncached_img_s"] / model)
    done()
    return {"batch": s.rate_batch, "steps": s.rate_steps, "img_s": rates, "fastest": fastest}


def bench_inference(s: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    from lesionbench.studies import bench_measure as m

    out = {}
    for name in s.models:
        done = _phase(f"inference {name}", log)
        out[name] = {"size": s.infer_size, **m.inference(name, s.infer_size, s.infer_batches, s.infer_repeats, s.device)}
        done()
    return out


def bench_epoch(s: Settings, root: Path, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """One ISIC 2018 Task 1 epoch (train + validation) at ``epoch_size`` from full-size images, with
    mixed precision on CUDA; on CUDA the allocator's peak over the epoch is recorded."""
    from lesionbench.data import SegmentationDataModule
    from lesionbench.data.decode import hw
    from lesionbench.studies import bench_measure as m
    from lesionbench.training.task import SegmentationTask
    from lesionbench.training.trainer import build_trainer

    height, width = hw(s.epoch_size)
    done = _phase(f"ISIC 2018 epoch ({s.epoch_images} images, {height}x{width} px)", log)
    name = s.models[0]
    cfg = m.experiment(name, root, s.epoch_size, s.epoch_batch, s.device, s.workers, augmentation="paper002",
                       compiled=s.compile)
    cfg = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"precision": m.amp_precision(s.device)})})
    dm = SegmentationDataModule.from_experiment(cfg)
    t = time.perf_counter()
    dm.setup("fit")
    build = time.perf_counter() - t
    task = SegmentationTask(cfg.model_dump(mode="json"))
    trainer, _ = build_trainer(cfg, task.phases[0], work / "epoch-run" / "ckpt", work / "epoch-run", [], progress=False)
    cuda = s.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(s.device)
    t = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    seconds = time.perf_counter() - t
    done()
    return {"model": name, "images": len(dm.train_ids), "val_images": len(dm.val_ids), "size": [height, width],
            "batch": s.epoch_batch, "augmentation": "paper002", "precision": cfg.trainer.precision,
            "cache_build_s": build, "epoch_s": seconds, "img_s": len(dm.train_ids) / seconds,
            "peak_gpu_mb": torch.cuda.max_memory_allocated(s.device) / 2**20 if cuda else None}


def run_bench(out: Path, settings: Settings, log: Callable[[str], None] = print,
              command: list[str] | None = None) -> dict[str, Any]:
    """Run every section, write ``perf.json`` and ``perf.md`` under ``out``; returns the JSON data."""
    from lesionbench.studies.bench_report import evaluate, write

    s = settings
    if s.device.startswith("cuda") and not torch.cuda.is_available():
        raise LesionBenchError("bench --device cuda: no CUDA device visible (use --device cpu)")
    from lesionbench.models.registry import model_names

    unknown = [n for n in s.models if not n.startswith("smp:") and n not in model_names()]
    if unknown:
        raise LesionBenchError(f"bench --models: unknown model(s) {', '.join(unknown)} (see `lesionbench models`)")
    import cv2

    start, load_start = time.perf_counter(), os.getloadavg()
    threads, why = threads_for(s)
    saved = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    work = Path(tempfile.mkdtemp(prefix="lesionbench-bench-"))
    data: dict[str, Any] = {"command": shlex.join(command or [Path(sys.argv[0]).name, *sys.argv[1:]]),
                            "started": datetime.now(UTC).isoformat(timespec="seconds"),
                            "settings": asdict(s), "machine": {**machine(s.device), "threads_reason": why}}
    try:
        done = _phase("full-size synthetic data", log)
        root, epoch_root = full_size_data(work, s)
        done()
        sections: dict[str, Callable[[], dict[str, Any]]] = {
            "loader": lambda: bench_loader(s, root, log),
            "training": lambda: bench_training(s, root, work, log),
            "consumption": lambda: bench_rates(s, data["loader"], log),
            "inference": lambda: bench_inference(s, log),
            "epoch": lambda: bench_epoch(s, epoch_root, work, log),
        }
        for section in s.sections:
            data[section] = sections[section]()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        torch.set_num_threads(saved[0])
        cv2.setNumThreads(saved[1])
    data["load"] = {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]}
    data["seconds"] = round(time.perf_counter() - start, 1)
    data["targets"] = evaluate(data)
    write(out, data)
    return data
