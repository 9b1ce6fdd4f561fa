"""Flags of the original scripts (Zou et al.'s code) that this project renamed, dropped or reads
differently: the refused ones with what replaces them, and the translation of the original's
DIP input and target options into `FitSettings` fields. docs/ORIGINAL.md has the full table.
"""

from __future__ import annotations

import argparse

SCRIPT_ID_FLAGS = ("-id", "--script-id")
SCRIPT_ID_REASON = "not used: the original only printed it; the output folder names the run"
SPLIT_REASON = "use --num_shards N --shard_index I (or a SLURM job array) to split a folder"
RUN_BDN_REFUSED = {
    "--is_split_dataset": SPLIT_REASON,
    "--dataset_part_id": SPLIT_REASON,
    "--output_checkpoint": "each image's network is saved as <output_path>/<image>/net.pt",
}
FROM_BIQAN_JSON = "read from the checkpoint's biqan.json (written by train_BIQAN.py)"
TEST_BIQAN_REFUSED = {
    "--image_size": f"the input size is {FROM_BIQAN_JSON}",
    "--class_num": f"the number of bins is {FROM_BIQAN_JSON}",
    "--classification_model": f"the architecture is {FROM_BIQAN_JSON}",
}
NOISE_OPTIONS = ("use_fix_gaussian_std", "use_random_gaussian_std", "None")
INPUT_BASE_OPTIONS = ("use_unifrom_noise", "use_raw_image", "use_denoised_image")
REFERENCE_BASE_OPTIONS = ("use_raw_image", "use_denoised_image")
ORIGINAL_MAX_STD = 8.5
DENOISED_IMAGE_REASON = (
    "not available: the original's 'denoised image' is a Laplacian edge map of the noisy "
    "image (cv2.Laplacian), not a denoised image; see docs/ORIGINAL.md"
)
BOOLEAN_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def refused_action(reason: str) -> type[argparse.Action]:
    """An argparse action that stops with one line: the flag, and `reason` (what replaces it)."""

    class Refused(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None) -> None:
            parser.error(f"{option_string} (a flag of the original code): {reason}")

    return Refused


def add_refused(parser: argparse.ArgumentParser, refused: dict[str, str]) -> None:
    """Register the original's `-id/--script-id` and the flags of `refused` as refused flags
    (hidden from --help); each takes an optional value, as the original's did."""
    parser.add_argument(
        *SCRIPT_ID_FLAGS,
        nargs="?",
        action=refused_action(SCRIPT_ID_REASON),
        help=argparse.SUPPRESS,
    )
    for flag, reason in refused.items():
        parser.add_argument(flag, nargs="?", action=refused_action(reason), help=argparse.SUPPRESS)


def boolean(text: str) -> bool:
    """'true'/'false' (also 1/0, yes/no, any case) -> bool; the original's `type=bool` read
    every non-empty string, 'False' included, as True."""
    try:
        return BOOLEAN_WORDS[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}") from None


def noise_setting(option: str | None, max_std: float | None) -> tuple[float, bool] | None:
    """The original's noise option and maximum std (in 1/255 units) -> (std in [0, 1] units,
    std drawn uniformly from [0, std) each iteration), or None when neither flag was given.

    As in the original code, 'None' keeps a fixed std of `max_std` (it did not turn the noise
    off; a std of 0 does).
    """
    if option is None and max_std is None:
        return None
    if max_std is not None and max_std < 0:
        raise ValueError(f"the maximum noise std must be >= 0, got {max_std}")
    std = (ORIGINAL_MAX_STD if max_std is None else max_std) / 255.0
    return std, option == "use_random_gaussian_std"


def given_flags(argv: list[str]) -> set[str]:
    """The long flags present on a command line (`--flag value` or `--flag=value`)."""
    return {token.split("=", 1)[0] for token in argv if token.startswith("--")}
