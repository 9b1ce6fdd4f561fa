"""Reading and writing images: lossless, atomic, any common format and bit depth.

Images in memory are float32 arrays in [0, 1], HWC (C = 3) or HW (grayscale).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import re
import uuid
import warnings
from pathlib import Path

import numpy as np

LOGGER = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# The temporary file of `write_atomic`: `.<name>.<uuid4 hex>.tmp` beside its target.
# Decoded RGB pixels at most: 16-bit integers, then float32, then a padded float32 copy.
DECODED_BYTES_PER_PIXEL = 3 * (2 + 4 + 4)
TEMPORARY_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")


@dataclasses.dataclass(frozen=True)
class Image:
    """A decoded image: `pixels` float32 in [0, 1], HWC or HW; `bit_depth` 8 or 16; `sha256`
    the hex digest of the file bytes the pixels were decoded from."""

    path: Path
    pixels: np.ndarray
    bit_depth: int
    sha256: str = ""

    @property
    def stem(self) -> str:
        """The file name without its suffix."""
        return self.path.stem

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.pixels.shape[0], self.pixels.shape[1]


def shown(path: str | Path) -> str:
    """`path` as text that any UTF-8 stream or log file can carry: the bytes of a name that are
    not UTF-8 (read as surrogate escapes) written as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def list_images(folder: str | Path) -> list[Path]:
    """Image files of `folder` (suffix in IMAGE_SUFFIXES, any case), sorted by name.

    Symbolic links that lead nowhere (dangling or looping) are listed too, so that reading them
    fails with a line naming them instead of their being left out silently."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    return sorted(
        (
            path
            for path in folder.iterdir()
            if (path.is_file() or (path.is_symlink() and not path.exists()))
            and path.suffix.lower() in IMAGE_SUFFIXES
        ),
        key=lambda path: path.name,
    )


def to_float(array: np.ndarray, path: Path) -> tuple[np.ndarray, int]:
    """Integer or float pixels -> (float32 in [0, 1], HWC or HW; bit depth 8 or 16)."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] in (2, 4):
        LOGGER.warning("%s: alpha channel dropped", path)
        array = array[..., :-1]
        if array.shape[-1] == 1:
            array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(f"{path}: unsupported image layout {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0, 8
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0, 16
    if array.dtype == bool:
        return array.astype(np.float32), 8
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(array, 0.0, 1.0).astype(np.float32), 16
    raise ValueError(f"{path}: unsupported pixel type {array.dtype}")


def physical_memory() -> int:
    """Bytes of memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def header_size(data: bytes, path: Path) -> tuple[int, int] | None:
    """(height, width) that the file's header declares, read without decoding (Pillow), or None
    for a header Pillow does not know; ValueError for one past its decompression-bomb limit."""
    try:
        from PIL import Image as PillowImage
    except ImportError:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with PillowImage.open(io.BytesIO(data)) as image:
                width, height = image.size
    except PillowImage.DecompressionBombError:
        raise ValueError(
            f"{path}: its header declares more than {2 * PillowImage.MAX_IMAGE_PIXELS} pixels; "
            "too large to denoise, crop or downscale it"
        ) from None
    except Exception:  # noqa: BLE001 (any other header: OpenCV decides)
        return None
    return height, width


def check_decodable(data: bytes, path: Path, memory: int) -> None:
    """ValueError, before any decoding, when the header declares an image whose decoded and
    converted pixels would not fit in `memory` bytes."""
    size = header_size(data, path)
    if size is None:
        return
    needed = size[0] * size[1] * DECODED_BYTES_PER_PIXEL
    if needed > memory:
        raise ValueError(
            f"{path}: {size[1]}x{size[0]} pixels need about {needed / 2**30:.0f} GiB to decode, "
            f"more than the {memory / 2**30:.0f} GiB of this machine; crop or downscale it"
        )


def decode(data: bytes, path: Path) -> np.ndarray:
    """Encoded file bytes -> integer or float array, RGB(A) channel order; ValueError naming the
    file for anything OpenCV cannot or will not decode (its pixel limit included). OpenCV's own
    log lines are silenced: the error is the one line a bad file gets."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        reason = str(error).strip().splitlines()[-1]
        raise ValueError(f"{path}: not a readable image ({reason})") from None
    if array is None or array.size == 0:
        raise ValueError(f"{path}: not a readable image")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[..., [2, 1, 0, 3][: array.shape[2]]]
    return array


def read_image(path: str | Path) -> Image:
    """Decode an image file; raise ValueError naming the file if it is not a usable image."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise ValueError(
            f"{path}: symbolic link to {os.readlink(path)}, which does not exist or loops; "
            "fix or remove the link"
        )
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror}); fix its permissions") from None
    if not data:
        raise ValueError(f"{path}: empty file")
    check_decodable(data, path, physical_memory())
    pixels, bit_depth = to_float(decode(data, path), path)
    return Image(path, pixels, bit_depth, hashlib.sha256(data).hexdigest())


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image to float32 RGB (H, W, 3) in [0, 1]; grayscale is repeated to 3."""
    pixels = read_image(path).pixels
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    return pixels


def quantize(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    """float [0, 1] -> uint8 or uint16 (round to nearest)."""
    if bit_depth not in (8, 16):
        raise ValueError(f"bit depth must be 8 or 16, got {bit_depth}")
    maximum = 255 if bit_depth == 8 else 65535
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.rint(np.clip(pixels, 0.0, 1.0) * maximum).astype(dtype)


def encode_png(array: np.ndarray) -> bytes:
    """uint8/uint16 HW or HWC (C = 3, RGB) array -> lossless PNG bytes."""
    import cv2

    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG needs uint8 or uint16 pixels, got {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"PNG needs HW or HWC with 3 channels, got {array.shape}")
    if array.ndim == 3:
        array = np.ascontiguousarray(array[..., ::-1])
    ok, buffer = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


def encode_image(array: np.ndarray, suffix: str) -> bytes:
    """uint8/uint16 HW or HWC (RGB) array -> file bytes in the format of `suffix` (.png lossless;
    .jpg/.jpeg at quality 100, 8-bit; .bmp 8-bit; .tif/.tiff lossless)."""
    import cv2

    suffix = suffix.lower()
    if suffix == ".png":
        return encode_png(array)
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"cannot write {suffix} images; use one of {', '.join(IMAGE_SUFFIXES)}")
    if suffix in (".jpg", ".jpeg", ".bmp") and array.dtype == np.uint16:
        array = np.rint(array / 257.0).astype(np.uint8)
    if array.ndim == 3:
        array = np.ascontiguousarray(array[..., ::-1])
    ok, buffer = cv2.imencode(suffix, array, [cv2.IMWRITE_JPEG_QUALITY, 100])
    if not ok:
        raise ValueError(f"{suffix} encoding failed")
    return buffer.tobytes()


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write bytes so that `path` is never seen half-written (temp file + rename; umask applies)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_png(path: str | Path, pixels: np.ndarray, bit_depth: int = 8) -> None:
    """Save float [0, 1] HWC/HW pixels as a lossless PNG of `bit_depth` bits, atomically."""
    write_atomic(path, encode_png(quantize(pixels, bit_depth)))


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    write_atomic(path, text.encode("utf-8"))
