"""The original scripts' command lines (Zou et al.'s code), in one place: the flags this project
renamed, dropped or reads differently (the harmless ones accepted with a note, the refused ones
with what replaces them), and run_BDN.py's original DIP input and target options with their
translation into `FitSettings` fields. The scripts register them (`add_refused`,
`add_run_bdn_flags`) and translate them (`translate_run_bdn`); docs/ORIGINAL.md has the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from utils.method import FitSettings

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


# The `FitSettings` fields the original's flags set that run_BDN.py has no flag of its own for.
TRANSLATED_FIELDS = ("reg_noise_random", "target_noise_random", "input_kind")
RUN_BDN_FLAGS = (
    ("--input_base_option", INPUT_BASE_OPTIONS, "network input: use_unifrom_noise (default) or use_raw_image (the noisy image)"),
    ("--input_extra_option", NOISE_OPTIONS, "noise added to the input each iteration: fixed or random std (replaces --reg_noise_std)"),
    ("--input_max_gn_std", float, "its (maximum) std in 1/255 units (8.5 = 1/30; replaces --reg_noise_std)"),
    ("--refer_base_option", REFERENCE_BASE_OPTIONS, "fitting target: use_raw_image (the noisy image, always)"),
    ("--refer_extra_option", NOISE_OPTIONS, "noise added to the target each iteration (replaces --target_noise_std)"),
    ("--refer_max_gn_std", float, "its (maximum) std in 1/255 units (replaces --target_noise_std)"),
)  # fmt: skip


def add_run_bdn_flags(parser: argparse.ArgumentParser) -> None:
    """run_BDN.py's flags of the original code: --net_type and `RUN_BDN_FLAGS`, translated by
    `translate_run_bdn`, and the refused or ignored ones (the network's names imported here:
    the other scripts' flags need no framework)."""
    from models.skip import NET_TYPES, SkipConfig

    original = parser.add_argument_group(
        "flags of the original code (same meaning and units; see docs/ORIGINAL.md)"
    )
    original.add_argument(
        "--net_type",
        choices=NET_TYPES,
        default=SkipConfig.net_type,
        help="skip (default) or snail, the original's smaller network (8..128 channels)",
    )
    for flag, kind, text in RUN_BDN_FLAGS:
        if isinstance(kind, tuple):
            original.add_argument(flag, choices=kind, help=text)
        else:
            original.add_argument(flag, type=kind, help=text)
    add_refused(parser, RUN_BDN_REFUSED, RUN_BDN_IGNORED)
    parser.set_defaults(**{name: getattr(FitSettings, name) for name in TRANSLATED_FIELDS})


def translate_run_bdn(args: argparse.Namespace, given: set[str]) -> None:
    """Translate run_BDN.py's original input/target flags into `FitSettings` fields of `args`,
    in place (`given`: the flags on the command line, `given_flags`); ValueError for a
    combination that cannot be translated."""
    width_flags = sorted(given & {"--channels", "--skip_channels", "--num_scales"})
    if args.net_type == "snail" and width_flags:
        raise ValueError(
            f"--net_type snail has fixed channels and scales: drop {', '.join(width_flags)}"
        )
    for flag, value in (
        ("--input_base_option", args.input_base_option),
        ("--refer_base_option", args.refer_base_option),
    ):
        if value == "use_denoised_image":
            raise ValueError(f"{flag} {value}: {DENOISED_IMAGE_REASON}")
    if args.input_base_option == "use_raw_image":
        args.input_kind = "noisy_image"
    pairs = (
        ("--input_extra_option", "--input_max_gn_std", "--reg_noise_std", "reg_noise"),
        ("--refer_extra_option", "--refer_max_gn_std", "--target_noise_std", "target_noise"),
    )
    for option_flag, std_flag, ours, name in pairs:
        try:
            setting = noise_setting(getattr(args, option_flag[2:]), getattr(args, std_flag[2:]))
        except ValueError as error:
            raise ValueError(f"{std_flag}: {error}") from None
        if setting is None:
            continue
        if ours in given:
            raise ValueError(f"{ours} and {option_flag}/{std_flag} set the same noise: give one")
        setattr(args, f"{name}_std", setting[0])
        setattr(args, f"{name}_random", setting[1])
