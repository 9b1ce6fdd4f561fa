"""Flags of the original scripts (Zou et al.'s code) that this project renamed, dropped or reads
differently: the harmless ones accepted with a note, the refused ones with what replaces them,
and the translation of the original's DIP input and target options into `FitSettings` fields.
docs/ORIGINAL.md has the full table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

SCRIPT_ID_FLAGS = ("-id", "--script-id")
SCRIPT_ID_REASON = "the original only printed it; the output folder names the run"
SPLIT_REASON = "use --num_shards N --shard_index I (or a SLURM job array) to split a folder"
RUN_BDN_REFUSED = {
    "--is_split_dataset": SPLIT_REASON,
    "--dataset_part_id": SPLIT_REASON,
}
FROM_BIQAN_JSON = "read from the checkpoint's biqan.json (written by train_BIQAN.py)"


@dataclasses.dataclass(frozen=True)
class IgnoredFlag:
    """An original flag that is harmless at its value `original` (None: at any value), so
    accepted there with a note and refused at any other; `reason` says what decides it here."""

    original: str | None
    reason: str


SCRIPT_ID = IgnoredFlag(None, SCRIPT_ID_REASON)
RUN_BDN_IGNORED = {
    "--output_checkpoint": IgnoredFlag(
        "checkpoint", "each image's network is saved as <output_path>/<image>/net.pt"
    ),
}
TEST_BIQAN_IGNORED = {
    "--image_size": IgnoredFlag("224", f"the input size is {FROM_BIQAN_JSON}"),
    "--class_num": IgnoredFlag("10", f"the number of bins is {FROM_BIQAN_JSON}"),
    "--classification_model": IgnoredFlag("mobilenet", f"the architecture is {FROM_BIQAN_JSON}"),
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


def ignored_action(flag: IgnoredFlag) -> type[argparse.Action]:
    """An argparse action that accepts `flag` at its original value with one note line on
    stderr, and stops with one line (the flag and its reason) at any other value."""

    class Ignored(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None) -> None:
            if flag.original is not None and values != flag.original:
                parser.error(
                    f"{option_string} {values} (a flag of the original code): {flag.reason}"
                )
            shown = option_string if values is None else f"{option_string} {values}"
            print(
                f"note: {shown} (a flag of the original code) is ignored: {flag.reason}",
                file=sys.stderr,
            )

    return Ignored


def add_refused(
    parser: argparse.ArgumentParser,
    refused: dict[str, str],
    ignored: dict[str, IgnoredFlag] | None = None,
) -> None:
    """Register the original's flags that work differently here, hidden from --help, each
    taking an optional value as the original's did: `-id/--script-id` and the flags of
    `ignored` are accepted with a note (at their original value), those of `refused` stop the
    script with one line naming what replaces them."""
    parser.add_argument(
        *SCRIPT_ID_FLAGS, nargs="?", action=ignored_action(SCRIPT_ID), help=argparse.SUPPRESS
    )
    for flag, rule in (ignored or {}).items():
        parser.add_argument(flag, nargs="?", action=ignored_action(rule), help=argparse.SUPPRESS)
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
