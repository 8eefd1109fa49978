"""The experiments and suites that ship with LesionBench, found by name from any working directory.

Where they are looked for, in order: ``$LESIONBENCH_EXPERIMENTS``, ``./experiments`` (a checkout or
a folder of one's own), then the copy beside the installed package: the repository's ``experiments/``
for an editable install, or the one a wheel installs next to the ``lesionbench`` package (package
data, see pyproject.toml). A name (``kvasir_resnet50_unet``, ``demo``) is searched in each; a path
that exists is used as given, and a README path (``experiments/suites/demo.yaml``) that does not
exist here resolves against those folders too.
"""

from __future__ import annotations

from pathlib import Path

from lesionbench.errors import LesionBenchError
from lesionbench.settings import settings

SUFFIXES = (".yaml", ".yml")


def installed_dir() -> Path:
    """``experiments/`` beside the package: the checkout's, or the installed package data."""
    return Path(__file__).resolve().parent.parent / "experiments"


def search_dirs() -> list[Path]:
    """Every experiments folder that exists, in lookup order, each once."""
    out: list[Path] = []
    for candidate in (settings().experiments, Path.cwd() / "experiments", installed_dir()):
        if candidate is not None and candidate.is_dir() and candidate.resolve() not in [p.resolve() for p in out]:
            out.append(candidate)
    return out


def experiments_dir() -> Path:
    """The first experiments folder found (where published recipes and suites are read)."""
    dirs = search_dirs()
    if not dirs:
        raise LesionBenchError("no experiments/ folder found (the installed package lacks its bundled experiments): "
                               "set LESIONBENCH_EXPERIMENTS to a copy of the repository's experiments/ folder")
    return dirs[0]


def _candidates(name: str, sub: str) -> list[Path]:
    """Where ``name`` may live in each folder: a bare name under ``sub`` (``demo`` -> suites/demo.yaml), a
    relative path as written, without a leading ``experiments/`` (README paths), with .yaml added if absent."""
    rel = Path(name)
    if rel.parts[:1] == ("experiments",) and len(rel.parts) > 1:
        rel = Path(*rel.parts[1:])
    names = [rel] if rel.suffix in SUFFIXES else [rel.with_name(rel.name + s) for s in SUFFIXES]
    where = sub if len(rel.parts) == 1 else ""
    return [d / where / n for d in search_dirs() for n in names]


def find(name: str | Path, sub: str = "") -> Path | None:
    """The file a name or path means: the path itself when it exists, else the first bundled match."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.is_absolute():
        return None
    return next((p for p in _candidates(str(name), sub) if p.is_file()), None)


def known(sub: str = "") -> list[str]:
    """Names of the bundled files under ``sub`` (suites: ``sub='suites'``); bases (``_*``) left out."""
    names = {p.stem for d in search_dirs() for p in (d / sub).glob("*.yaml") if not p.name.startswith("_")}
    return sorted(names)


def find_experiment(name: str | Path) -> Path:
    """An experiment file by path or bundled name (``kvasir_resnet50_unet``); one line when unknown."""
    path = find(name)
    if path is None:
        raise LesionBenchError(f"experiment {str(name)!r}: no such file, and no bundled experiment of that name "
                               f"(known: {', '.join(known())}); give a path or one of those names")
    return path


def find_suite(name: str | Path) -> Path | None:
    """A suite file by path or bundled name (``demo``), or None."""
    return find(name, "suites")
