"""Quality labels: snapshot PSNR -> 10-bin score distribution, stored in the AVA label layout.

The mapping follows the original BIQAN code (its `generate_dataset.py`): a PSNR ``p`` in dB maps linearly to
a mean score ``x = (p - min_psnr) / (max_psnr - min_psnr) * 5 + 2.5`` (8..45 dB -> 2.5..7.5 on
the 1..10 scale), and the label is a Gaussian of standard deviation 1 around ``x`` discretised to
the integer bins 1..10. The original drew 10,000 random samples; here the bin masses are computed
exactly: bin ``k`` holds the Gaussian mass of ``[k - 0.5, k + 0.5)``, the mass outside
``[0.5, 10.5)`` is dropped and the ten masses are renormalised to sum to 1.

An AVA row is ``index image_id count_1 .. count_10 tag_1 tag_2 challenge_id``, separated by
single spaces (the layout of AVA.txt that NIMA-style trainers read).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from models.biqan_config import NUMBER_OF_BINS
from utils import image_io, run_output, selection

SCORE_RANGE = (2.5, 7.5)
FIELDS_PER_ROW = 2 + NUMBER_OF_BINS + 3
MAX_VOTES = 10**9  # more votes per row add no precision to a float32 distribution


@dataclasses.dataclass(frozen=True)
class LabelSettings:
    """How step 2 labels each image's snapshots (generator_dataset.py's flags take these
    defaults, as do this module's functions).

    ``start_position``: snapshots skipped at the start of each image; ``min_psnr`` and
    ``max_psnr`` (dB): mapped to mean scores 2.5 and 7.5; ``use_exp``: map exp(PSNR) instead;
    ``fixed_range``: normalise by ``min_psnr``/``max_psnr`` (else by each image's own range);
    ``score_std``: std of the Gaussian on the 1..10 scale; ``votes``: vote count of each AVA row.
    """

    start_position: int = selection.START_INDEX
    min_psnr: float = 8.0
    max_psnr: float = 45.0
    use_exp: bool = False
    fixed_range: bool = True
    score_std: float = 1.0
    votes: int = 10000


def _rescale(
    values: float | np.ndarray, source: tuple[float, float], target: tuple[float, float]
) -> np.ndarray:
    """Map `values` linearly from the interval `source` onto `target` (not clipped), in float64."""
    (source_low, source_high), (target_low, target_high) = source, target
    return (np.asarray(values, dtype=np.float64) - source_low) / (source_high - source_low) * (
        target_high - target_low
    ) + target_low


def _psnr_range(min_psnr: float, max_psnr: float) -> tuple[float, float]:
    """(min_psnr, max_psnr) in dB; ValueError unless max_psnr > min_psnr."""
    if not max_psnr > min_psnr:
        raise ValueError(f"max_psnr ({max_psnr}) must be greater than min_psnr ({min_psnr})")
    return min_psnr, max_psnr


def psnr_to_mean_score(
    psnr: float | np.ndarray,
    min_psnr: float = LabelSettings.min_psnr,
    max_psnr: float = LabelSettings.max_psnr,
) -> float | np.ndarray:
    """Map PSNR (dB) linearly to a mean score: min_psnr -> 2.5, max_psnr -> 7.5 (not clipped)."""
    return _rescale(psnr, _psnr_range(min_psnr, max_psnr), SCORE_RANGE)


def image_mean_scores(
    psnr: np.ndarray,
    min_psnr: float = LabelSettings.min_psnr,
    max_psnr: float = LabelSettings.max_psnr,
    use_exp: bool = LabelSettings.use_exp,
    fixed_range: bool = LabelSettings.fixed_range,
) -> np.ndarray:
    """Mean scores of one image's snapshots (N,) from their PSNRs (N,), with the original's two
    label options: ``use_exp`` maps exp(PSNR) instead of PSNR, and ``fixed_range=False``
    normalises each image by its own minimum and maximum (-> 2.5 and 7.5) instead of
    ``min_psnr``/``max_psnr``. With both, exp is taken relative to the image's maximum, which
    gives the same scores without overflow. An image whose snapshots all share one value gets 5.
    """
    psnr = np.asarray(psnr, dtype=np.float64)
    if fixed_range:
        values = np.exp(psnr) if use_exp else psnr
        with np.errstate(over="ignore", invalid="ignore"):
            return psnr_to_mean_score(values, min_psnr, max_psnr)
    values = np.exp(psnr - psnr.max()) if use_exp else psnr
    if not values.max() > values.min():
        return np.full(psnr.shape, sum(SCORE_RANGE) / 2)
    return _rescale(values, (values.min(), values.max()), SCORE_RANGE)


def mean_score_to_psnr(
    mean_score: float | np.ndarray,
    min_psnr: float = LabelSettings.min_psnr,
    max_psnr: float = LabelSettings.max_psnr,
) -> float | np.ndarray:
    """Inverse of :func:`psnr_to_mean_score`: mean score on the 1..10 scale -> PSNR in dB."""
    return _rescale(mean_score, SCORE_RANGE, _psnr_range(min_psnr, max_psnr))


def _normal_cdf(values: np.ndarray) -> np.ndarray:
    """Standard normal cumulative distribution function, elementwise."""
    return np.array(
        [0.5 * (1.0 + math.erf(value / math.sqrt(2.0))) for value in values.ravel()]
    ).reshape(values.shape)


def score_distribution(mean_score: float, std: float = LabelSettings.score_std) -> np.ndarray:
    """Exact Gaussian(mean_score, std) mass of the bins 1..10, renormalised.

    Returns a float64 array of shape (10,), entries in [0, 1], summing to 1.
    """
    if not np.isfinite(mean_score):
        raise ValueError(f"mean score must be finite, got {mean_score}")
    if not std > 0:
        raise ValueError(f"std must be positive, got {std}")
    edges = np.arange(NUMBER_OF_BINS + 1, dtype=np.float64) + 0.5
    masses = np.diff(_normal_cdf((edges - mean_score) / std))
    total = masses.sum()
    if total <= 0:
        raise ValueError(
            f"mean score {mean_score} lies too far outside the 1..10 scale "
            f"for a distribution of std {std}"
        )
    return masses / total


def distribution_to_votes(distribution: np.ndarray, votes: int) -> np.ndarray:
    """Integer vote counts (10,) summing exactly to ``votes`` (largest-remainder rounding)."""
    distribution = np.asarray(distribution, dtype=np.float64)
    if distribution.shape != (NUMBER_OF_BINS,):
        raise ValueError(
            f"distribution must have shape ({NUMBER_OF_BINS},), got {distribution.shape}"
        )
    if votes < 1:
        raise ValueError(f"votes must be at least 1, got {votes}")
    scaled = distribution / distribution.sum() * votes
    counts = np.floor(scaled).astype(np.int64)
    remainders = scaled - counts
    missing = votes - int(counts.sum())
    counts[np.argsort(-remainders, kind="stable")[:missing]] += 1
    return counts


def votes_to_distribution(counts: np.ndarray) -> np.ndarray:
    """Vote counts (..., 10) -> distributions (..., 10) summing to 1 along the last axis."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=-1, keepdims=True)
    if np.any(totals <= 0):
        raise ValueError("every row of vote counts must have a positive sum")
    return counts / totals


def distribution_mean(distribution: np.ndarray) -> np.ndarray:
    """Mean score sum_i i * p_i of distributions (..., 10) over bins 1..10 -> shape (...)."""
    bins = np.arange(1, NUMBER_OF_BINS + 1, dtype=np.float64)
    return np.asarray(distribution, dtype=np.float64) @ bins


def distribution_std(distribution: np.ndarray) -> np.ndarray:
    """Spread sqrt(sum_i (i - mean)^2 p_i) of distributions (..., 10) -> shape (...)."""
    distribution = np.asarray(distribution, dtype=np.float64)
    bins = np.arange(1, NUMBER_OF_BINS + 1, dtype=np.float64)
    mean = distribution_mean(distribution)[..., None]
    return np.sqrt(np.sum((bins - mean) ** 2 * distribution, axis=-1))


@dataclasses.dataclass(frozen=True)
class AvaRow:
    """One AVA label row: 1-based index, image id, 10 vote counts, 2 tags, challenge id."""

    index: int
    image_id: str
    votes: tuple[int, ...]
    tags: tuple[int, int] = (0, 0)
    challenge_id: int = 0


def format_ava_row(row: AvaRow) -> str:
    """One AVA line (no newline) for ``row``; rejects ids with whitespace and wrong vote counts."""
    if not row.image_id or any(character.isspace() for character in row.image_id):
        raise ValueError(f"image id {row.image_id!r} must be non-empty and contain no whitespace")
    if len(row.votes) != NUMBER_OF_BINS or any(count < 0 for count in row.votes):
        raise ValueError(
            f"row {row.index}: need {NUMBER_OF_BINS} non-negative vote counts, got {row.votes}"
        )
    fields = [
        str(row.index),
        row.image_id,
        *(str(int(count)) for count in row.votes),
        *(str(int(tag)) for tag in row.tags),
        str(int(row.challenge_id)),
    ]
    return " ".join(fields)


UNFIT_IMAGE_ID = "a name with white space or an unprintable character"


def fits_image_id(name: str) -> bool:
    """True when ``name`` can be part of an AVA image id: printable, no white space (the
    fields of a row are separated by spaces); `UNFIT_IMAGE_ID` says what the others hold."""
    return name.isprintable() and not any(character.isspace() for character in name)


def write_ava_file(path: str | Path, rows: list[AvaRow]) -> None:
    """Write ``rows`` to ``path`` in the AVA layout, one row per line."""
    lines = [format_ava_row(row) for row in rows]
    image_io.write_text(path, "".join(line + "\n" for line in lines))


def parse_ava_line(line: str, where: str) -> AvaRow:
    """Parse one AVA line; ``where`` (e.g. ``labels.txt:12``) names it in error messages."""
    fields = line.split()
    if len(fields) != FIELDS_PER_ROW:
        raise ValueError(
            f"{where}: expected {FIELDS_PER_ROW} space-separated fields (index, "
            f"image id, {NUMBER_OF_BINS} counts, 2 tags, challenge id), "
            f"got {len(fields)}"
        )
    try:
        numbers = [int(field) for field in [fields[0], *fields[2:]]]
    except ValueError:
        raise ValueError(
            f"{where}: index, counts, tags and challenge id must be integers"
        ) from None
    votes = tuple(numbers[1 : 1 + NUMBER_OF_BINS])
    if any(count < 0 for count in votes) or sum(votes) <= 0:
        raise ValueError(f"{where}: vote counts must be non-negative with a positive sum")
    tags = (numbers[1 + NUMBER_OF_BINS], numbers[2 + NUMBER_OF_BINS])
    return AvaRow(
        index=numbers[0], image_id=fields[1], votes=votes, tags=tags, challenge_id=numbers[-1]
    )


def read_ava_file(path: str | Path) -> list[AvaRow]:
    """Read an AVA label file; blank lines are skipped, a broken row raises ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: label file not found")
    rows = [
        parse_ava_line(line, f"{path}:{number}")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if line.strip()
    ]
    if not rows:
        raise ValueError(f"{path}: label file has no rows")
    return rows


def parse_original_line(line: str, where: str) -> tuple[str, np.ndarray]:
    """Parse one line of the original code's label file, ``path p_1 .. p_10`` (probabilities);
    returns (path, distribution (10,) summing to 1). ``where`` names the line in errors."""
    fields = line.split()
    try:
        masses = np.array([float(field) for field in fields[1:]], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{where}: the {NUMBER_OF_BINS} probabilities must be numbers") from None
    if (
        len(masses) != NUMBER_OF_BINS
        or not np.all(np.isfinite(masses))
        or np.any(masses < 0)
        or masses.sum() <= 0
    ):
        raise ValueError(
            f"{where}: need {NUMBER_OF_BINS} non-negative probabilities with a positive sum"
        )
    return fields[0], masses / masses.sum()


def read_labels(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Image ids and their distributions (N, 10) from a label file: this project's AVA layout
    (15 fields a row) or the original code's ``path p_1 .. p_10`` (11 fields a row)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: label file not found")
    lines = [
        (number, line)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if line.strip()
    ]
    if lines and len(lines[0][1].split()) == 1 + NUMBER_OF_BINS:
        parsed = [parse_original_line(line, f"{path}:{number}") for number, line in lines]
        return [image_id for image_id, _ in parsed], np.array([masses for _, masses in parsed])
    rows = read_ava_file(path)
    counts = np.array([row.votes for row in rows], dtype=np.float64)
    return [row.image_id for row in rows], votes_to_distribution(counts)


def labelled_snapshot(image_path: Path, image_id: str) -> Path:
    """A label's image id -> its snapshot file: relative to --dataset_image_path (this project's
    labels) or, where only that exists, to the working folder (the original's label files)."""
    joined = image_path / image_id
    return Path(image_id) if not joined.is_file() and Path(image_id).is_file() else joined


def read_labelled_snapshots(
    image_path: Path, label_file: Path
) -> tuple[list[str], list[Path], np.ndarray, np.ndarray]:
    """Image ids, snapshot paths, distributions (N, 10) and true PSNRs (N,) of `label_file`
    (snapshots under `image_path`, train_BIQAN.py's --dataset_image_path).

    Snapshots without a run_BDN metrics.csv (the original's label files and snapshots) get the
    PSNR their label implies (mean score mapped back with the default 8..45 dB range).
    """
    image_ids, distributions = read_labels(label_file)
    paths = [labelled_snapshot(image_path, image_id) for image_id in image_ids]
    for image_id, path in zip(image_ids, paths):
        if not path.is_file():
            raise ValueError(f"{path}: snapshot {image_id} of {label_file} not found")
    true_psnr: dict[Path, float] = {}
    implied = sorted(
        {path.parent for path in paths if not (path.parent / run_output.METRICS_FILE).is_file()}
    )
    for folder in sorted({path.parent for path in paths} - set(implied)):
        metrics = run_output.read_metrics(folder)
        true_psnr.update(zip(metrics.snapshot_paths(), metrics.true_psnr.tolist()))
    if implied:
        print(
            f"note: {len(implied)} image folders have no {run_output.METRICS_FILE}; their "
            f"validation PSNR is the one their labels imply"
        )
        label_psnr = mean_score_to_psnr(distribution_mean(distributions))
        true_psnr.update(
            (path, float(psnr)) for path, psnr in zip(paths, label_psnr) if path.parent in implied
        )
    missing = [path for path in paths if path not in true_psnr]
    if missing:
        raise ValueError(f"{missing[0]}: no row in {missing[0].parent / run_output.METRICS_FILE}")
    return image_ids, paths, distributions, np.array([true_psnr[path] for path in paths])
