"""Where each official archive puts its images and masks, and how names pair.

One frozen spec per dataset mirrors the folders the official zip files unpack to, so a
user points ``root`` at the unzipped archives and nothing is renamed or moved.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from lesionbench.errors import LesionBenchError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
TASK2_ATTRIBUTES = ("globules", "milia_like_cyst", "negative_network", "pigment_network", "streaks")
ISIC_URL = "https://challenge.isic-archive.com/data/"


@dataclass(frozen=True)
class SplitSpec:
    """One official split: candidate folder names (first is canonical) and the official count."""

    image_dirs: tuple[str, ...]
    mask_dirs: tuple[str, ...]
    count: int


@dataclass(frozen=True)
class Layout:
    """How one dataset's archives look once unzipped under its root."""

    name: str
    splits: dict[str, SplitSpec]
    mask_suffixes: tuple[str, ...] = ("_segmentation",)  # one per target channel
    mask_exts: tuple[str, ...] = (".png",)
    class_names: tuple[str, ...] = ("lesion",)
    mask_threshold: int = 0  # binarise as value > threshold (JPEG masks need 127)
    primary_metric: str = "jaccard"  # what the organisers rank by (metrics/challenge.py defines each)
    subdir: str = ""  # folder name under $LESIONBENCH_DATA / the synthetic root
    source: str = ISIC_URL
    notes: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.mask_suffixes)


@dataclass(frozen=True)
class Sample:
    """One image and its mask file(s), one per class channel."""

    id: str
    image: Path
    masks: tuple[Path, ...] = field(default_factory=tuple)


def _isic18(gt: str, suffixes: tuple[str, ...], names: tuple[str, ...], name: str) -> Layout:
    # Inputs are shared by Task 1 and Task 2: ISIC2018_Task1-2_{Training,Validation,Test}_Input.zip
    # (each also holds LICENSE.txt and ATTRIBUTION.txt, which are not images).
    tr = f"ISIC2018_{gt}_Training_GroundTruth"
    va = f"ISIC2018_{gt}_Validation_GroundTruth"
    te = f"ISIC2018_{gt}_Test_GroundTruth"
    v3 = gt == "Task2"  # ISIC2018_Task2_Training_GroundTruth_v3.zip is the only training release
    return Layout(
        name=name, subdir="isic2018", mask_suffixes=suffixes, class_names=names,
        # Task 1 ranks the thresholded Jaccard; Task 2 the Jaccard pooled over images and attributes
        primary_metric="jaccard_pooled_normalised" if gt == "Task2" else "thresholded_jaccard",
        splits={
            "train": SplitSpec(("ISIC2018_Task1-2_Training_Input",), (tr + "_v3",) if v3 else (tr,), 2594),
            "val": SplitSpec(("ISIC2018_Task1-2_Validation_Input",), (va, va + "_v3"), 100),
            "test": SplitSpec(("ISIC2018_Task1-2_Test_Input",), (te, te + "_v3"), 1000),
        },
    )


LAYOUTS: dict[str, Layout] = {
    # ISBI2016_ISIC_Part1_{Training,Test}_{Data,GroundTruth}.zip; masks ISIC_xxxxxxx_Segmentation.png
    "isic2016": Layout(
        name="isic2016", subdir="isic2016", mask_suffixes=("_Segmentation",),
        splits={
            "train": SplitSpec(("ISBI2016_ISIC_Part1_Training_Data",), ("ISBI2016_ISIC_Part1_Training_GroundTruth",), 900),
            "test": SplitSpec(("ISBI2016_ISIC_Part1_Test_Data",), ("ISBI2016_ISIC_Part1_Test_GroundTruth",), 379),
        },
        notes="no official validation set: the 'official' split carves a seeded 10% from training",
    ),
    # ISIC-2017_{Training,Validation,Test_v2}_Data.zip (+ *_superpixels.png, *_metadata.csv) and
    # ISIC-2017_{...}_Part1_GroundTruth.zip with ISIC_xxxxxxx_segmentation.png
    "isic2017": Layout(
        name="isic2017", subdir="isic2017",
        splits={
            "train": SplitSpec(("ISIC-2017_Training_Data",), ("ISIC-2017_Training_Part1_GroundTruth",), 2000),
            "val": SplitSpec(("ISIC-2017_Validation_Data",), ("ISIC-2017_Validation_Part1_GroundTruth",), 150),
            "test": SplitSpec(("ISIC-2017_Test_v2_Data",), ("ISIC-2017_Test_v2_Part1_GroundTruth",), 600),
        },
    ),
    # ISIC2018_Task1_{Training,Validation,Test}_GroundTruth.zip: ISIC_xxxxxxx_segmentation.png
    "isic2018": _isic18("Task1", ("_segmentation",), ("lesion",), "isic2018"),
    # Task 2: five attribute masks per image, ISIC_xxxxxxx_attribute_<name>.png, most of them empty
    "isic2018-task2": _isic18(
        "Task2", tuple(f"_attribute_{a}" for a in TASK2_ATTRIBUTES), TASK2_ATTRIBUTES, "isic2018-task2"
    ),
    # kvasir-seg.zip -> Kvasir-SEG/{images,masks}/<id>.jpg + kavsir_bboxes.json; no official split
    "kvasir-seg": Layout(
        name="kvasir-seg", subdir="kvasir-seg", mask_suffixes=("",), mask_exts=(".jpg", ".jpeg", ".png"),
        class_names=("polyp",), mask_threshold=127, source="https://datasets.simula.no/kvasir-seg/",
        primary_metric="dice",  # what the polyp papers report (the dataset has no challenge)
        splits={"all": SplitSpec(("Kvasir-SEG/images",), ("Kvasir-SEG/masks",), 1000)},
        notes="JPEG masks: binarised as value > 127; images vary in size",
    ),
}
# The embedded default: the ISIC 2018 Task 1 layout, written by `lesionbench data synth`. It is ranked
# like the archive it replicates (thresholded Jaccard), so the demo and CI exercise that path too.
LAYOUTS["synthetic"] = replace(LAYOUTS["isic2018"], name="synthetic", source="`lesionbench data synth`")


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise LesionBenchError(f"unknown dataset '{name}' (known: {', '.join(LAYOUTS)})")
    return LAYOUTS[name]


def is_junk(path: Path) -> bool:
    """Archive debris and non-image companions: __MACOSX/, ._*, .DS_Store, txt/csv/json, superpixels."""
    return (
        "__MACOSX" in path.parts or path.name.startswith("._") or path.name in JUNK_NAMES
        or path.suffix.lower() not in IMAGE_EXTS or path.stem.endswith("_superpixels")
    )


def find_dir(root: Path, candidates: tuple[str, ...]) -> Path | None:
    """First candidate folder present; also accepts a doubled folder (zip holding its own folder)."""
    for c in candidates:
        for p in (root / c, root / c / Path(c).name):
            if p.is_dir() and any(p.iterdir()):
                return p
    return None


def locate(layout: Layout, base: Path) -> Path | None:
    """``base`` or ``base/<subdir>``, whichever holds one of the layout's image folders."""
    for cand in (base, base / layout.subdir):
        if any(find_dir(cand, spec.image_dirs) for spec in layout.splits.values()):
            return cand
    return None


def list_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not is_junk(p))


def pair_split(layout: Layout, root: Path, split: str) -> tuple[list[Sample], list[Path], list[Path]]:
    """Pair images with masks in one split: (samples, images without masks, masks without images)."""
    spec = layout.splits[split]
    img_dir, mask_dir = find_dir(root, spec.image_dirs), find_dir(root, spec.mask_dirs)
    if img_dir is None or mask_dir is None:
        return [], [], []
    masks: dict[str, Path] = {}
    for p in list_files(mask_dir):
        if p.suffix.lower() in layout.mask_exts:
            masks[p.stem] = p
    samples, orphan_images, used = [], [], set()
    for img in list_files(img_dir):
        stems = [img.stem + s for s in layout.mask_suffixes]
        if all(s in masks for s in stems):
            samples.append(Sample(img.stem, img, tuple(masks[s] for s in stems)))
            used.update(stems)
        else:
            orphan_images.append(img)
    orphan_masks = [p for s, p in sorted(masks.items()) if s not in used]
    return samples, orphan_images, orphan_masks


def missing_message(layout: Layout, root: Path, split: str) -> str:
    spec = layout.splits[split]
    missing = [c[0] for c in (spec.image_dirs, spec.mask_dirs) if find_dir(root, c) is None]
    return (f"{layout.name}: folder {' and '.join(missing)} not found under {root} "
            f"(unzip the official archive there; get it from {layout.source} or run `lesionbench data download {layout.name}`)")


def scan(name: str, root: str | Path, splits: tuple[str, ...] | None = None) -> dict[str, list[Sample]]:
    """Official split name -> paired samples. Splits named in ``splits`` must be present;
    otherwise absent splits are skipped, but at least one must exist. Unpaired files are an error."""
    layout, root = get_layout(name), Path(root)
    out: dict[str, list[Sample]] = {}
    for split in layout.splits:
        samples, lone_imgs, lone_masks = pair_split(layout, root, split)
        if lone_imgs or lone_masks:
            listed = [f"{p} (no mask)" for p in lone_imgs[:5]] + [f"{p} (no image)" for p in lone_masks[:5]]
            raise LesionBenchError(
                f"{name}/{split}: {len(lone_imgs)} image(s) without mask and {len(lone_masks)} mask(s) "
                f"without image, e.g. {'; '.join(listed)} (run `lesionbench data verify {name}`)")
        if samples:
            out[split] = samples
        elif splits and split in splits:
            raise LesionBenchError(missing_message(layout, root, split))
    if not out:
        raise LesionBenchError(missing_message(layout, root, next(iter(layout.splits))))
    return out
