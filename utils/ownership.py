"""Files the tools write into folders they share with the user: never overwrite one they did not
write.

Steps 2 to 4 and denoise.py's results write into a folder that may hold the user's own files.
The folder's `.dip_written.json` (MANIFEST) lists the names the tools wrote there. Before any
work a tool `claim`s the names it will write: an existing file whose name is not listed is the
user's, and the claim fails in one line naming it; the other names are added to the list, then
written (atomically, `utils.image_io`). A name is listed before its file is written, so a crash
never leaves a file of ours unlisted. Processes that share a folder (denoise.py's workers)
update the list one at a time, under the folder's MANIFEST_LOCK, so that no name is lost.
(Step 1's run folders are owned as a whole: see `utils.dip.run_guard`.)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from utils import image_io
from utils.dip import run_guard

MANIFEST = ".dip_written.json"
MANIFEST_LOCK = ".dip_written.lock"


def written_names(folder: Path) -> set[str]:
    """Names the tools recorded as written in `folder` (empty without a manifest); ValueError
    when the manifest is not one."""
    path = folder / MANIFEST
    if not path.exists() and not path.is_symlink():
        return set()
    try:
        names = json.loads(path.read_text(encoding="utf-8"))["written"]
    except (OSError, ValueError, TypeError, KeyError):
        raise ValueError(f"{path}: unreadable list of the files this tool wrote") from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{path}: unreadable list of the files this tool wrote")
    return set(names)


def check(folder: Path, names: Iterable[str]) -> set[str]:
    """ValueError (one line) when one of `names` is not a plain name, or exists in `folder`
    without being recorded there (the user's file); returns the names recorded as ours."""
    try:
        ours = written_names(folder) if folder.is_dir() else set()
        for name in names:
            path = folder / name
            if not name or name.startswith(".") or "/" in name:
                raise ValueError(f"{path}: not a plain file name; rename the input")
            if (path.exists() or path.is_symlink()) and name not in ours:
                raise ValueError(
                    f"{path}: exists and was not written by this tool; move it away or choose "
                    "another output"
                )
    except OSError as error:
        raise ValueError(f"{folder}: cannot read ({error.strerror or error})") from None
    return ours


def claim(folder: Path, names: Iterable[str]) -> None:
    """Make `folder` and record `names` as ours (`check` first: ValueError, nothing recorded,
    for a name that is the user's file); ValueError when the folder cannot be written."""
    names = sorted(set(names))
    ours = check(folder, names)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if set(names) - ours:
            with run_guard.exclusive(folder / MANIFEST_LOCK):
                ours = check(folder, names)  # again: another process may have written since
                document = {"written": sorted(ours | set(names))}
                image_io.write_text(folder / MANIFEST, json.dumps(document, indent=1) + "\n")
    except OSError as error:
        raise ValueError(
            f"{folder}: cannot write there ({error.strerror or error}); choose another output"
        ) from None
