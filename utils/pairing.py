"""Pairing noisy images with their clean references by file name.

Rule: a noisy image and a reference pair when their stems are equal, or equal once one trailing
noisy suffix (`_real`, `_noisy`) is removed from the noisy stem and one trailing reference suffix
(`_mean`, `_clean`, `_gt`) from the reference stem (suffixes in any case). So `x.png` pairs with
`x.JPG`, and the original datasets' `x_real.png` with `x_mean.png`. An exact stem match wins.
"""

from __future__ import annotations

from pathlib import Path

from utils import image_io

NOISY_SUFFIXES = ("_real", "_noisy")
REFERENCE_SUFFIXES = ("_mean", "_clean", "_gt")
LISTED_NAMES = 10


def pairing_key(stem: str, suffixes: tuple[str, ...]) -> str:
    """`stem` without one trailing suffix of `suffixes` (any case); unchanged when none ends it."""
    for suffix in suffixes:
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def pair_references(noisy_paths: list[Path], reference_paths: list[Path]) -> list[Path | None]:
    """The reference of each noisy image (None: none pairs), in the order of `noisy_paths`.

    Raises ValueError when two references fit one noisy image equally well.
    """
    by_stem = {path.stem: path for path in reference_paths}
    by_key: dict[str, list[Path]] = {}
    for path in reference_paths:
        by_key.setdefault(pairing_key(path.stem, REFERENCE_SUFFIXES), []).append(path)
    references: list[Path | None] = []
    for noisy in noisy_paths:
        if noisy.stem in by_stem:
            references.append(by_stem[noisy.stem])
            continue
        candidates = by_key.get(pairing_key(noisy.stem, NOISY_SUFFIXES), [])
        if len(candidates) > 1:
            names = ", ".join(path.name for path in candidates)
            raise ValueError(f"{noisy}: several references pair with it: {names}")
        references.append(candidates[0] if candidates else None)
    return references


def name_list(paths: list[Path]) -> str:
    """'a.png, b.png' for at most LISTED_NAMES paths, then '... (N in all)'."""
    names = ", ".join(image_io.shown(path.name) for path in paths[:LISTED_NAMES])
    return names if len(paths) <= LISTED_NAMES else f"{names}, ... ({len(paths)} in all)"


def unpaired_report(
    reference_folder: Path,
    noisy_paths: list[Path],
    reference_paths: list[Path],
    references: list[Path | None],
) -> str | None:
    """One line naming the noisy images without a reference and the references without a noisy
    image, or None when everything pairs. Raises ValueError when nothing pairs at all."""
    paired = {path for path in references if path is not None}
    blind = [noisy for noisy, reference in zip(noisy_paths, references) if reference is None]
    unused = [path for path in reference_paths if path not in paired]
    rule = "same stem, or stems equal without a _real/_noisy and a _mean/_clean/_gt suffix"
    if noisy_paths and not paired:
        raise ValueError(
            f"{reference_folder}: no reference pairs with any noisy image ({rule}); "
            f"drop --dataset_mean_path to run blind"
        )
    parts = []
    if blind:
        parts.append(f"no reference for {len(blind)} noisy image(s), run blind: {name_list(blind)}")
    if unused:
        parts.append(f"{len(unused)} reference(s) pair with no noisy image: {name_list(unused)}")
    return f"{reference_folder}: " + "; ".join(parts) if parts else None
