"""A finished nnU-Net run as a predictor: nnU-Net's own ``nnUNetPredictor`` behind LesionBench's interface.

Why nnU-Net's predictor: its sliding window, Gaussian weighting, mirroring and normalisation (from its
plans) are what the run's test used; rebuilding them here would score something else. The run folder's
nnU-Net model folder (``nnunet/results/<dataset>/<trainer>__<plans>__<configuration>``, holding
``plans.json``, ``dataset.json`` and ``fold_0/checkpoint_final.pth``) is loaded as nnU-Net documents it.

What a prediction does, step for step as the engine's test (``engines/nnunet_data.score``): the image at
the size nnU-Net trained on (the recipe's ``image_size``, or its own size with ``native_resolution``) ->
nnU-Net's probabilities -> the lesion channel resized bilinearly to the original size; a mask is that
``> 0.5`` followed by the postprocessing nnU-Net chose on fold 0's validation (run.json
``nnunet.postprocessing``). One image at a time, as the engine's test predicted them.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lesionbench.engines.nnunet_setup import require_nnunet
from lesionbench.errors import LesionBenchError
from lesionbench.metrics.scores import resize_logits_to
from lesionbench.runfolder import read_run_info

#: What an nnU-Net checkpoint holds beside tensors and plain data (numbers in its training log).
PLAIN_GLOBALS = ("numpy.dtype", "numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar", "numpy.dtypes.")
#: The postprocessing ``nnUNetv2_find_best_configuration`` can choose, by the name run.json records.
POSTPROCESSING = ("remove_all_but_largest_component_from_segmentation",)
#: The lesion's label in the engine's export (engines/nnunet_data.LABELS): its probability channel.
LESION = 1
#: nnU-Net's reader for 2D PNGs (``NaturalImage2DIO``) gives every image this spacing.
SPACING = {"spacing": (999, 1, 1)}


def check_checkpoint(path: Path) -> None:
    """Refuse a checkpoint that names code to run: nnU-Net reads it with ``weights_only=False``, so its
    globals are listed first (without unpickling) and only numpy scalars may appear beside the tensors."""
    if not path.is_file():
        raise LesionBenchError(f"{path}: missing; an nnU-Net run keeps its final weights there "
                               "(re-run the experiment to recreate it)")
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as err:  # noqa: BLE001 - truncated or not a torch file
        raise LesionBenchError(f"{path}: refused: the checkpoint is unreadable ({type(err).__name__}); "
                               "re-run the experiment to recreate it") from None
    foreign = [g for g in found if not g.startswith(PLAIN_GLOBALS)]
    if foreign:
        raise LesionBenchError(f"{path}: refused: the checkpoint holds objects other than plain data "
                               f"({', '.join(sorted(foreign)[:3])}); re-run the experiment to recreate it")


def postprocessing(run_dir: Path) -> tuple[list[Any], list[dict[str, Any]]]:
    """(functions, kwargs) of the postprocessing the run's test masks got (run.json ``nnunet.postprocessing``)."""
    chosen = (read_run_info(run_dir).nnunet or {}).get("postprocessing") or {}
    if not chosen.get("applied"):
        return [], []
    from nnunetv2.postprocessing import remove_connected_components as rcc

    unknown = [n for n in chosen.get("functions", []) if n not in POSTPROCESSING]
    if unknown:
        raise LesionBenchError(f"{run_dir / 'run.json'}: nnunet.postprocessing names {unknown[0]!r}, which "
                               f"LesionBench does not apply (known: {', '.join(POSTPROCESSING)})")
    return [getattr(rcc, n) for n in chosen["functions"]], list(chosen.get("kwargs", []))


class NnUNetRunPredictor:
    """``probabilities`` and ``postprocess`` of an nnU-Net run, as ``lesionbench.load_run`` uses them."""

    batch_size = 1  # the engine's test predicted one image at a time (each a sliding window of its own)

    def __init__(self, run_dir: Path, checkpoint: Path, device: torch.device) -> None:
        require_nnunet()
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        check_checkpoint(checkpoint)
        if checkpoint.parent.name != "fold_0":
            raise LesionBenchError(f"{checkpoint}: not in nnU-Net's trained-model layout (<model>/fold_0/...)")
        # the engine's own settings (engines/nnunet_worker.predict): nnU-Net's defaults, mirroring included;
        # its constructor prints a note on any device but CUDA, which would land in `predict`'s output
        with contextlib.redirect_stdout(io.StringIO()):
            self.predictor = nnUNetPredictor(device=device, perform_everything_on_device=device.type == "cuda",
                                             allow_tqdm=False)
        self.predictor.initialize_from_trained_model_folder(str(checkpoint.parents[1]), use_folds=(0,),
                                                            checkpoint_name=checkpoint.name)
        self.fns, self.kwargs = postprocessing(run_dir)

    @property
    def network(self) -> nn.Module:
        return self.predictor.network

    def probabilities(self, images: list[np.ndarray], sizes: list[tuple[int, int]], tta: bool = False) -> list[np.ndarray]:
        """Lesion probabilities 1×H0×W0 for RGB uint8 images (already at the size nnU-Net trained on)."""
        if tta:
            raise LesionBenchError("--tta: an nnU-Net run always predicts with nnU-Net's own mirroring, as its "
                                   "test did; leave --tta out")
        out = []
        for image, size in zip(images, sizes, strict=True):
            data = np.vstack([np.asarray(image).transpose(2, 0, 1)[:, None]], dtype=np.float32)  # as NaturalImage2DIO
            _, probs = self.predictor.predict_single_npy_array(data, dict(SPACING), None, None, True)
            lesion = torch.from_numpy(np.asarray(probs[LESION], np.float32)).reshape(1, 1, *probs.shape[-2:])
            out.append(resize_logits_to(lesion, size)[0].numpy())
        return out

    def postprocess(self, masks: np.ndarray) -> np.ndarray:
        """nnU-Net's chosen postprocessing on a 1×H×W bool mask (none chosen: the mask as it is)."""
        if not self.fns:
            return masks
        from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing

        seg = apply_postprocessing(np.asarray(masks).astype(np.uint8), self.fns, self.kwargs)
        return seg == LESION
