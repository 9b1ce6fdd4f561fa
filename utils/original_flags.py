"""The original scripts' command lines (Zou et al.'s code), in one place: a translation of the
command line before the scripts parse it (`translate`). It takes out the flags this project
renamed, dropped or reads differently (the harmless ones with a note, the refused ones with one
line naming what replaces them), and rewrites run_BDN.py's original DIP input and target options
as this project's flags. The scripts' parsers never see an original flag; run_BDN.py's `--help`
lists the translated ones (`add_run_bdn_help`). docs/ORIGINAL.md has the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

from utils.method import INPUT_KINDS, FitSettings

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


@dataclasses.dataclass(frozen=True)
class OriginalFlags:
    """One script's original flags: `refused` (flag -> what replaces it), `ignored` (harmless at
    their original value) and, for run_BDN.py, the translated DIP input/target options."""

    refused: dict[str, str] = dataclasses.field(default_factory=dict)
    ignored: dict[str, IgnoredFlag] = dataclasses.field(default_factory=dict)
    translated: bool = False


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


FlagHandler = Callable[[argparse.ArgumentParser, str | None, Any], None]  # parser, flag, value


def handler_action(handle: FlagHandler) -> type[argparse.Action]:
    """An argparse action that calls `handle(parser, option_string, values)` and stores
    nothing."""

    class Handled(argparse.Action):
        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: str | Sequence[Any] | None,
            option_string: str | None = None,
        ) -> None:
            handle(parser, option_string, values)

    return Handled


def refused_action(reason: str) -> type[argparse.Action]:
    """An argparse action that stops with one line: the flag, and `reason` (what replaces it)."""

    def refuse(parser: argparse.ArgumentParser, option_string: str | None, values: Any) -> None:
        parser.error(f"{option_string} (a flag of the original code): {reason}")

    return handler_action(refuse)


def ignored_action(flag: IgnoredFlag) -> type[argparse.Action]:
    """An argparse action that accepts `flag` at its original value with one note line on
    stderr, and stops with one line (the flag and its reason) at any other value."""

    def ignore(parser: argparse.ArgumentParser, option_string: str | None, values: Any) -> None:
        if flag.original is not None and values != flag.original:
            parser.error(f"{option_string} {values} (a flag of the original code): {flag.reason}")
        shown = option_string if values is None else f"{option_string} {values}"
        print(
            f"note: {shown} (a flag of the original code) is ignored: {flag.reason}",
            file=sys.stderr,
        )

    return handler_action(ignore)


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


# The original's DIP input/target options, translated into this project's flags by `translate`.
RUN_BDN_FLAGS = (
    ("--input_base_option", INPUT_BASE_OPTIONS, "network input: use_unifrom_noise (default) or use_raw_image (the noisy image)"),
    ("--input_extra_option", NOISE_OPTIONS, "noise added to the input each iteration: fixed or random std (replaces --reg_noise_std)"),
    ("--input_max_gn_std", float, "its (maximum) std in 1/255 units (8.5 = 1/30; replaces --reg_noise_std)"),
    ("--refer_base_option", REFERENCE_BASE_OPTIONS, "fitting target: use_raw_image (the noisy image, always)"),
    ("--refer_extra_option", NOISE_OPTIONS, "noise added to the target each iteration (replaces --target_noise_std)"),
    ("--refer_max_gn_std", float, "its (maximum) std in 1/255 units (replaces --target_noise_std)"),
)  # fmt: skip
# (option flag, std flag, this project's std flag, its random-std flag)
NOISE_FLAGS = (
    ("--input_extra_option", "--input_max_gn_std", "--reg_noise_std", "--reg_noise_random"),
    ("--refer_extra_option", "--refer_max_gn_std", "--target_noise_std", "--target_noise_random"),
)
RUN_BDN = OriginalFlags(RUN_BDN_REFUSED, RUN_BDN_IGNORED, translated=True)
TEST_BIQAN = OriginalFlags(ignored=TEST_BIQAN_IGNORED)
OTHER_SCRIPTS = OriginalFlags()


def add_run_bdn_help(parser: argparse.ArgumentParser) -> None:
    """run_BDN.py's --net_type (an original flag it keeps), the translated flags in --help (the
    parser never receives them: `translate` rewrote them) and the hidden flags they become."""
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
    add_translated_flags(original)
    parser.add_argument("--input_kind", choices=INPUT_KINDS, help=argparse.SUPPRESS)
    for *_, random_flag in NOISE_FLAGS:
        parser.add_argument(random_flag, action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(input_kind=FitSettings.input_kind)


def add_translated_flags(group: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`RUN_BDN_FLAGS` on a parser or group: run_BDN.py's --help shows them, `translate` reads them."""
    for flag, kind, text in RUN_BDN_FLAGS:
        choices = {"choices": kind} if isinstance(kind, tuple) else {"type": kind}
        group.add_argument(flag, **choices, help=text)


def expand_abbreviations(argv: list[str], flags: list[str]) -> list[str]:
    """argv with each long flag that is an unambiguous prefix of one of `flags` written in full,
    as argparse reads it (so that an abbreviated original flag is translated too)."""
    expanded = []
    for token in argv:
        name, separator, value = token.partition("=")
        matches = [flag for flag in flags if flag.startswith(name)]
        if name.startswith("--") and name not in flags and len(matches) == 1:
            token = matches[0] + separator + value
        expanded.append(token)
    return expanded


def translate(parser: argparse.ArgumentParser, argv: list[str], script: OriginalFlags) -> list[str]:
    """The command line `argv` of the script whose parser is `parser`, with its original flags
    taken out (a note for each harmless one) and run_BDN.py's DIP input/target options rewritten
    as this project's flags; a refused flag or an untranslatable combination is a one-line
    `parser.error`."""
    original = argparse.ArgumentParser(prog=parser.prog, add_help=False, allow_abbrev=False)
    original.error = parser.error
    add_refused(original, script.refused, script.ignored)
    if script.translated:
        add_translated_flags(original)
    known_flags = {*parser._option_string_actions, *original._option_string_actions}
    given, rest = original.parse_known_args(expand_abbreviations(argv, sorted(known_flags)))
    if not script.translated:
        return rest
    try:
        return rest + run_bdn_flags(given, given_flags(rest))
    except ValueError as error:
        parser.error(str(error))


def run_bdn_flags(given: argparse.Namespace, ours: set[str]) -> list[str]:
    """run_BDN.py's original DIP input/target options (`given`) as this project's flags;
    ValueError for a combination that cannot be translated (`ours`: this project's flags on the
    command line)."""
    for flag in ("--input_base_option", "--refer_base_option"):
        if getattr(given, flag[2:]) == "use_denoised_image":
            raise ValueError(f"{flag} use_denoised_image: {DENOISED_IMAGE_REASON}")
    flags = ["--input_kind", "noisy_image"] if given.input_base_option == "use_raw_image" else []
    for option_flag, std_flag, std_ours, random_ours in NOISE_FLAGS:
        try:
            setting = noise_setting(getattr(given, option_flag[2:]), getattr(given, std_flag[2:]))
        except ValueError as error:
            raise ValueError(f"{std_flag}: {error}") from None
        if setting is None:
            continue
        if std_ours in ours:
            raise ValueError(
                f"{std_ours} and {option_flag}/{std_flag} set the same noise: give one"
            )
        flags += [std_ours, repr(setting[0])] + ([random_ours] if setting[1] else [])
    return flags
