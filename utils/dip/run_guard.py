"""What keeps a run folder honest: its record, who owns its files, who is writing it.

- `args.json` describes every result in the folder: a rerun with other result-shaping settings
  is refused while the folder holds results, and replaced when it holds none (a failed start).
- `<stem>/input.json` records the input files (and their SHA-256) an image's results came from;
  a rerun whose inputs differ is refused before any work.
- A folder that is not empty and has no `args.json` is not ours: refused, never written into.
- Locks (POSIX `flock`, released by the kernel when a process dies): every run holds
  `.run.lock` shared, and each image's `.lock` while fitting it, so two runs of one command
  (a job submitted twice) share the images instead of writing the same files. On a file
  system without locks a warning says so and runs go on uncoordinated.
- `remove_run` deletes only the files a run writes, then the folders it left empty.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from utils import image_io
from utils.run_output import (
    DENOISED_FILE,
    INPUT_FILE,
    METRICS_FILE,
    NETWORK_FILE,
    RUN_RECORD_FILE,
    STATE_FILE,
    SUMMARY_FILE,
    SUMMARY_TABLE_FILE,
    curve_path,
    image_folder,
)

LOGGER = logging.getLogger(__name__)
RECORD_FILE = RUN_RECORD_FILE
RUN_LOCK = ".run.lock"
RECORD_LOCK = ".args.lock"
IMAGE_LOCK = ".lock"
SUMMARY_LOCK = ".summary.lock"  # held while summary.csv is rebuilt (utils.dip.reconstruction)
# Files a run writes in <stem>/ besides snapshots (<iteration:05d>.png); see utils.run_output.
IMAGE_FILES = (METRICS_FILE, SUMMARY_FILE, INPUT_FILE, NETWORK_FILE, STATE_FILE, DENOISED_FILE)
RUN_FILES = (RECORD_FILE, SUMMARY_TABLE_FILE, RUN_LOCK, RECORD_LOCK, SUMMARY_LOCK)
SNAPSHOT_NAME = re.compile(r"^\d{5,}\.png$")
INPUT_KEYS = ("dataset_real_path", "dataset_mean_path")  # args.json: the input folders
LOCKS_UNSUPPORTED = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


def visible_entries(folder: Path) -> list[Path]:
    """Entries of `folder` whose names do not start with a dot."""
    return [path for path in folder.iterdir() if not path.name.startswith(".")]


def has_results(folder: Path) -> bool:
    """True when an image folder exists and holds a file (a snapshot, metrics, state, ...)."""
    return folder.is_dir() and bool(visible_entries(folder))


def holds_results(output_path: Path) -> bool:
    """True when any image folder of the run holds a file."""
    return any(has_results(folder) for folder in output_path.iterdir())


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes; ValueError naming the file when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror})") from None
    return digest.hexdigest()


def input_record(
    noisy: Path, clean: Path | None, hashes: tuple[str, str | None] | None = None
) -> dict:
    """What `<stem>/input.json` holds: the input files and their SHA-256 (`hashes`: those of
    the bytes that were decoded and fitted; else each file is read and hashed now)."""
    if hashes is None:
        hashes = (sha256(noisy), None if clean is None else sha256(clean))
    return {
        "noisy": str(noisy),
        "noisy_sha256": hashes[0],
        "clean": None if clean is None else str(clean),
        "clean_sha256": hashes[1],
    }


def check_input(
    folder: Path, noisy: Path, clean: Path | None, hashes: tuple[str, str | None] | None = None
) -> None:
    """ValueError when `folder` holds results of other input files than `noisy` and `clean`
    (compared by SHA-256: `hashes` of the decoded bytes, else of the files as they are now)."""
    path = folder / INPUT_FILE
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ValueError(f"{path}: unreadable; remove {folder} to refit this image") from None
    if not isinstance(recorded, dict):
        raise ValueError(f"{path}: unreadable; remove {folder} to refit this image")
    try:
        current = input_record(noisy, clean, hashes)
    except ValueError:
        return  # an unreadable input fails on its own, with its own line, when it is prepared
    for role in ("noisy", "clean"):
        if recorded.get(f"{role}_sha256") != current[f"{role}_sha256"]:
            raise ValueError(
                f"{folder} holds results of {role} input {recorded.get(role)}, "
                f"which differs from {current[role]}; use another output folder"
            )


def write_input(
    folder: Path, noisy: Path, clean: Path | None, hashes: tuple[str, str | None]
) -> None:
    """Write `<stem>/input.json` with `hashes`, the SHA-256 of the bytes that are fitted."""
    record = input_record(noisy, clean, hashes)
    image_io.write_text(folder / INPUT_FILE, json.dumps(record, indent=2))


def changed_settings(
    output_path: Path, record: dict, keys: tuple[str, ...], fill: Callable[[dict], dict]
) -> list[str]:
    """Result-shaping keys whose value differs from the folder's args.json ([] when it has none);
    `fill` completes an older record with the defaults of settings added since."""
    path = output_path / RECORD_FILE
    if not path.exists():
        return []
    try:
        existing = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ValueError(f"{path}: unreadable; remove it or use another output folder") from None
    existing = fill(existing)
    return [key for key in keys if existing.get(key) != record[key]]


def open_lock(path: Path) -> IO:
    """Open the lock file `path`, created if missing, never through a link or into a special
    file (a hostile link would make the tool create or open a file elsewhere): OSError naming
    `path` for a link, a folder or a FIFO there."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags, 0o666)
    except OSError as error:
        reason = "a link" if error.errno == errno.ELOOP else error.strerror
        raise OSError(error.errno, f"{reason}, not a lock file this tool made", str(path)) from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OSError(errno.EINVAL, "not a regular file, not a lock file this tool made", str(path))
    return os.fdopen(descriptor, "a")


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (waiting for it) inside the block."""
    with open_lock(path) as stream:
        lock(stream, fcntl.LOCK_EX, warn=False)
        yield


def open_run(
    output_path: Path, record: dict, keys: tuple[str, ...], fill: Callable[[dict], dict]
) -> IO:
    """Check and write the run record; returns the open `.run.lock`, held shared until closed.

    ValueError (one line) when the folder is a file, not writable, not ours, or holds results
    of other settings. Settings that differ are accepted only when the folder holds no results
    and no other run is active (a start that failed before any result)."""
    try:
        if output_path.exists() and not (output_path / RECORD_FILE).exists():
            if not output_path.is_dir():
                raise ValueError(f"{output_path}: is a file; the output must be a folder")
            if visible_entries(output_path):
                raise ValueError(
                    f"{output_path}: not empty and not a run folder (no {RECORD_FILE}); "
                    "use a new or empty output folder"
                )
        output_path.mkdir(parents=True, exist_ok=True)
        with exclusive(output_path / RECORD_LOCK):
            run_lock = open_lock(output_path / RUN_LOCK)  # held by the caller
            try:
                alone = try_lock(run_lock, fcntl.LOCK_EX, warn=False)
                if not alone and other_inputs(output_path, record):
                    raise ValueError(
                        f"{output_path}: another run with other input folders is writing this "
                        "folder; wait for it to end or use another output folder"
                    )
                if alone:
                    remove_stale_temporaries(output_path)
                changed = changed_settings(output_path, record, keys, fill)
                if changed and (not alone or holds_results(output_path)):
                    raise ValueError(
                        f"{output_path} holds a run with other settings ({', '.join(changed)})"
                        "; use another output folder"
                    )
                image_io.write_text(output_path / RECORD_FILE, json.dumps(record, indent=2))
                lock(run_lock, fcntl.LOCK_SH)
            except BaseException:
                run_lock.close()
                raise
    except OSError as error:
        raise ValueError(f"{output_path}: cannot write the output folder ({error})") from None
    return run_lock


def other_inputs(output_path: Path, record: dict) -> bool:
    """Whether the folder's args.json names other input folders than `record` (compared
    resolved, from this process's working folder)."""
    try:
        existing = json.loads((output_path / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(existing, dict):
        return False

    def resolved(value: object) -> Path | None:
        """A recorded path, resolved (None stays None)."""
        return None if value is None else Path(str(value)).resolve()

    return any(resolved(existing.get(key)) != resolved(record.get(key)) for key in INPUT_KEYS)


def remove_stale_temporaries(output_path: Path) -> list[Path]:
    """Delete the temporary files an atomic write left when its process was killed
    (`.<name>.<32 hex digits>.tmp`, `image_io.write_atomic`'s naming only) in the run folder and
    its image folders, never through a link; call only while no other run writes the folder."""
    removed = []
    folders = [output_path] + [
        path for path in output_path.iterdir() if path.is_dir() and not path.is_symlink()
    ]
    for folder in folders:
        for path in folder.iterdir():
            if image_io.TEMPORARY_NAME.match(path.name) and not path.is_dir():
                path.unlink(missing_ok=True)
                removed.append(path)
    if removed:
        LOGGER.info("%s: removed %d temporary files of a killed run", output_path, len(removed))
    return removed


def try_lock(stream: IO, operation: int, warn: bool = True) -> bool:
    """Take a lock without waiting; False when another process holds a conflicting one."""
    try:
        return lock(stream, operation | fcntl.LOCK_NB, warn)
    except BlockingIOError:
        return False


def lock(stream: IO, operation: int, warn: bool = True) -> bool:
    """`flock`; on a file system without locks, go on as if the lock were taken (with a
    warning unless `warn` is False: the run's own lock has warned already)."""
    try:
        fcntl.flock(stream, operation)
    except OSError as error:
        if isinstance(error, BlockingIOError) or error.errno not in LOCKS_UNSUPPORTED:
            raise
        if not warn:
            return True
        LOGGER.warning(
            "%s: the file system does not support locks (%s); runs sharing this folder are "
            "not coordinated",
            stream.name,
            error.strerror,
        )
    return True


@contextlib.contextmanager
def claim(folders: list[Path]) -> Iterator[list[str | None]]:
    """Lock each image folder's `.lock` for the block; yields, per folder, None when it was got,
    else why not (another process is fitting that image, or the lock file is not ours). The
    folders are created."""
    with contextlib.ExitStack() as stack:
        refusals = []
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            try:
                stream = stack.enter_context(open_lock(folder / IMAGE_LOCK))
            except OSError as error:
                refusals.append(f"{error.filename}: {error.strerror}; remove it")
                continue
            got = try_lock(stream, fcntl.LOCK_EX, warn=False)
            refusals.append(None if got else busy_reason(folder))
        yield refusals


def busy_reason(folder: Path) -> str:
    """Why an image whose folder is `folder` is not fitted while another process fits it."""
    return (
        f"another process is fitting this image (it holds {folder / IMAGE_LOCK}); "
        "rerun when it has finished"
    )


def remove_run(output_path: Path, stems: list[str]) -> None:
    """Delete the files a run writes for `stems`, then the run's own files if nothing else is
    left, and every folder left empty; anything else stays."""
    for stem in stems:
        try:
            folder = image_folder(output_path, stem)
        except ValueError:
            continue  # not a folder of this run: never delete through it
        curve_path(output_path, stem).unlink(missing_ok=True)
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if (
                path.name in IMAGE_FILES
                or path.name == IMAGE_LOCK
                or SNAPSHOT_NAME.match(path.name)
            ):
                path.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()
    if any(path.name not in RUN_FILES for path in visible_entries(output_path)):
        return
    for name in RUN_FILES:
        (output_path / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        output_path.rmdir()
