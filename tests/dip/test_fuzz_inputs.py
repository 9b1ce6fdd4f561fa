"""Fuzzing step 1's input handling with generated files: corrupt, truncated and huge-headed
images and odd names, through the planning code (no fits), then two tiny end-to-end runs.

Whatever the file, the result is one line naming it or a prepared image, never an exception;
nothing is written outside the output folder; the good images are all done.
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

import run_BDN
from tests.conftest import run_bdn_process
from utils import image_io
from utils.dip import planning

CASES = 300
TINY = ["--input_depth", "4", "--channels", "8", "--skip_channels", "2", "--num_scales", "2"]
TINY += ["--num_iter", "2", "--save_iter", "2", "--gpu_id", "cpu", "--quiet"]


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, depth: int = 8, color: int = 2) -> bytes:
    """A PNG that declares `width` x `height` pixels and holds none."""
    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def bmp_header(width: int, height: int) -> bytes:
    """A 24-bit BMP header declaring `width` x `height` pixels, without pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def valid_image(rng: np.random.Generator, suffix: str) -> bytes:
    """A small decodable image (16 to 40 px a side, grey or colour, 8 or 16 bits for PNG)."""
    height, width = rng.integers(16, 41, size=2)
    shape = (height, width) if rng.random() < 0.3 else (height, width, 3)
    bits = 16 if suffix == ".png" and rng.random() < 0.3 else 8
    pixels = image_io.quantize(rng.random(shape), bits)
    return image_io.encode_image(pixels, suffix)


def generate(rng: np.random.Generator, index: int) -> tuple[str, bytes, bool | None]:
    """(file name, bytes, whether it must be usable: True, False, or None when either is fine)."""
    suffix = str(rng.choice([".png", ".png", ".jpg", ".bmp", ".tif"]))
    kind = int(rng.integers(0, 10))
    name = f"case{index:03d}"
    if kind == 0:
        return name + suffix, valid_image(rng, suffix), True
    if kind == 1:
        data = valid_image(rng, suffix)
        return name + suffix, data[: int(rng.integers(0, max(1, len(data) - 1)))], None
    if kind == 2:
        data = bytearray(valid_image(rng, ".png"))
        for position in rng.integers(8, len(data), size=int(rng.integers(1, 6))):
            data[position] ^= 1 << int(rng.integers(0, 8))
        return name + ".png", bytes(data), None
    if kind == 3:
        side = int(rng.choice([0, 1, 2**31 - 1, 100_000, 65_535, 30_000]))
        other = int(rng.choice([1, 16, 100_000, 2**31 - 1]))
        return name + ".png", png_header(side, other), False
    if kind == 4:
        side = int(rng.choice([0, -5, 100_000, 2**31 - 1]))
        return name + ".bmp", bmp_header(side, int(rng.choice([1, -100_000, 50_000]))), False
    if kind == 5:
        return name + suffix, rng.bytes(int(rng.integers(0, 200))), False
    if kind == 6:
        return name + suffix, b"", False
    if kind == 7:
        stem = str(rng.choice(["..", ".", ".hidden", ". .", "..."]))
        return f"{stem}{index}{suffix}" if stem == ". ." else f"{stem}{suffix}", b"x", False
    if kind == 8:
        stem = str(rng.choice(["é ü", "名前", "a b", "x" * 200, "-dash", "UPPER"]))
        return f"{stem}{index}{suffix.upper()}", valid_image(rng, suffix), True
    return name + suffix, valid_image(rng, suffix)[:0] + b"\x89PNG\r\n\x1a\n", False


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory) -> tuple[Path, dict[str, bool | None]]:
    """A folder of CASES generated files and, per name, whether it must be usable."""
    folder = tmp_path_factory.mktemp("fuzz") / "real"
    folder.mkdir()
    rng = np.random.default_rng(23)
    expected: dict[str, bool | None] = {}
    for index in range(CASES):
        name, data, usable = generate(rng, index)
        if name in expected or Path(name).stem in {Path(n).stem for n in expected}:
            continue
        (folder / name).write_bytes(data)
        expected[name] = usable
    return folder, expected


def test_every_generated_file_is_prepared_or_one_line_naming_it(fuzz_folder, tmp_path, caplog):
    folder, expected = fuzz_folder
    output = tmp_path / "parent" / "run"
    args = run_BDN.parse_args(["--dataset_real_path", str(folder), "--output_path", str(output)])
    settings = run_BDN.settings(args)
    jobs, refused = planning.refuse_unsafe_names(planning.plan_jobs(folder, None), output)
    prepared, failures = planning.prepare_all(jobs, settings)
    failures += refused
    failed = {path.name: message for path, message in failures}
    done = {image.job.noisy.name for image in prepared}
    assert len(expected) > CASES * 0.8
    assert set(failed) | done == set(expected) and not set(failed) & done
    for name, usable in expected.items():
        if usable is True:
            assert name in done, failed.get(name)
        elif usable is False:
            assert name in failed, name
    for name, message in failed.items():
        assert message.startswith(str(folder / name)) and "\n" not in message, message
        assert sum(str(folder / name) + ":" in line for line in caplog.text.splitlines()) == 1
    assert not (tmp_path / "parent").exists()


def end_to_end(folder: Path, output: Path) -> subprocess.CompletedProcess:
    return run_bdn_process(
        ["--dataset_real_path", str(folder), "--output_path", str(output), *TINY]
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_end_to_end_bad_files_are_one_line_each_and_the_rest_is_done(tmp_path, seed):
    rng = np.random.default_rng(seed)
    folder = tmp_path / "real"
    folder.mkdir()
    good = [f"good{index}.png" for index in range(2)]
    for name in good:
        (folder / name).write_bytes(valid_image(rng, ".png"))
    bad = {
        "huge.png": png_header(100_000, 100_000),
        "wide.bmp": bmp_header(2**31 - 1, 1),
        "cut.png": valid_image(rng, ".png")[:60],
        "empty.jpg": b"",
        "...png": valid_image(rng, ".png"),
        ".hidden.png": valid_image(rng, ".png"),
        "tiny.png": image_io.encode_png(np.zeros((4, 4), np.uint8)),
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "mine.txt").write_text("mine")
    result = end_to_end(folder, parent / "run")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert all(line.split(":")[0] in ("INFO", "WARNING", "ERROR") for line in lines), lines
    for name in bad:
        naming = [line for line in lines if line.startswith(f"ERROR: {folder / name}:")]
        assert len(naming) == 1, (name, result.stderr)
    for name in good:
        assert (parent / "run" / Path(name).stem / "summary.json").exists()
    assert sorted(path.name for path in parent.iterdir()) == ["mine.txt", "run"]
    assert (parent / "mine.txt").read_text() == "mine"
