"""The nnU-Net side of an nnU-Net run, one step per process: ``python -m lesionbench.engines.nnunet_worker
STEP ARGS_JSON``. nnU-Net's path variables are set in this process's environment by the parent only.

Why a separate process: nnU-Net reads ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` from
the environment, starts its own augmentation workers and prints freely; a child process keeps all of
that away from the caller, and a killed step leaves nothing half-set in the parent.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: The planner nnU-Net uses to write each plans identifier (documentation/resenc_presets.md).
PLANNERS = {
    "nnUNetPlans": "ExperimentPlanner",
    "nnUNetResEncUNetMPlans": "nnUNetPlannerResEncM",
    "nnUNetResEncUNetLPlans": "nnUNetPlannerResEncL",
    "nnUNetResEncUNetXLPlans": "nnUNetPlannerResEncXL",
}


def plan(args: dict[str, Any]) -> None:
    """Fingerprint (with nnU-Net's integrity check), plan and preprocess the 2d configuration."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    ids, procs = [args["dataset_id"]], args["processes"]
    extract_fingerprints(ids, num_processes=procs, check_dataset_integrity=True)
    plan_experiments(ids, PLANNERS[args["plans"]])
    preprocess(ids, args["plans"], (args["configuration"],), [procs])


def train(args: dict[str, Any]) -> None:
    """Fold 0 with nnU-Net's own trainer; continues from its latest checkpoint; then its validation."""
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    trainer = get_trainer_from_args(str(args["dataset_id"]), args["configuration"], 0, args["trainer"],
                                    args["plans"], device=torch.device(args["device"]))
    from lesionbench.engines.nnunet_setup import matched_iterations
    from lesionbench.io import atomic_write_json

    batch = int(trainer.configuration_manager.batch_size)  # what its data loader draws (one device)
    if args.get("iterations_per_epoch"):
        trainer.num_iterations_per_epoch = args["iterations_per_epoch"]
    elif args.get("recipe_images"):  # the recipe's budget in images, not nnU-Net's 250 batches per epoch
        trainer.num_iterations_per_epoch = matched_iterations(args["recipe_images"], trainer.num_epochs, batch)
    if args.get("val_iterations"):
        trainer.num_val_iterations_per_epoch = args["val_iterations"]
    out = Path(trainer.output_folder)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "lesionbench_budget.json", {
        "epochs": trainer.num_epochs, "iterations_per_epoch": trainer.num_iterations_per_epoch, "batch_size": batch,
        "images_seen": trainer.num_epochs * trainer.num_iterations_per_epoch * batch})
    final = out / "checkpoint_final.pth"
    resume = final.is_file() or (out / "checkpoint_latest.pth").is_file()
    maybe_load_checkpoint(trainer, resume, False)
    if not final.is_file():
        trainer.run_training()
    trainer.perform_actual_validation(False)


def predict(args: dict[str, Any]) -> None:
    """Test images -> nnU-Net's sliding-window prediction (mirroring TTA) with probabilities; the
    network's cost at the recipe's size, measured as for every other model."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from lesionbench.io import atomic_write_json
    from lesionbench.lifecycle.profile import measure_cost

    device = torch.device(args["device"])
    Path(args["output"]).mkdir(parents=True, exist_ok=True)
    predictor = nnUNetPredictor(device=device, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(args["model_folder"], use_folds=(0,))
    if args["processes"] > 0:
        predictor.predict_from_files(args["images"], args["output"], save_probabilities=True, overwrite=False,
                                     num_processes_preprocessing=args["processes"],
                                     num_processes_segmentation_export=args["processes"])
    else:
        predictor.predict_from_files_sequential(args["images"], args["output"], save_probabilities=True,
                                                overwrite=False)
    cost = measure_cost(predictor.network.to(device), args["image_size"])
    atomic_write_json(Path(args["output"]) / "cost.json", cost)


def postprocess(args: dict[str, Any]) -> None:
    """nnU-Net's postprocessing as ``nnUNetv2_find_best_configuration ID -c 2d -f 0`` chooses it: fold 0's
    validation predictions are accumulated and ``determine_postprocessing`` keeps what raises their Dice
    (writes ``crossval_results_folds_0/postprocessing.pkl`` and ``inference_information.json``)."""
    from nnunetv2.evaluation.find_best_configuration import find_best_configuration

    model = {"plans": args["plans"], "configuration": args["configuration"], "trainer": args["trainer"]}
    find_best_configuration(args["dataset_id"], (model,), allow_ensembling=False,
                            num_processes=max(1, args["processes"]), overwrite=True, folds=(0,))


STEPS = {"plan": plan, "train": train, "postprocess": postprocess, "predict": predict}


def main(argv: list[str]) -> None:
    step, args = argv[0], json.loads(argv[1])
    random.seed(args["seed"])
    np.random.seed(args["seed"])
    torch.manual_seed(args["seed"])
    STEPS[step](args)


if __name__ == "__main__":
    main(sys.argv[1:])
