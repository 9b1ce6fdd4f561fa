import logging

import cv2
import numpy as np
import pytest

from utils import image_io


def test_list_images_sorted_any_case(tmp_path):
    for name in ["b.PNG", "a.jpg", "c.Tiff", "d.bmp", "notes.txt", "e.JPEG"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in image_io.list_images(tmp_path)] == [
        "a.jpg",
        "b.PNG",
        "c.Tiff",
        "d.bmp",
        "e.JPEG",
    ]


def test_list_images_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        image_io.list_images(tmp_path / "nope")


@pytest.mark.parametrize("shape", [(9, 7, 3), (9, 7)])
@pytest.mark.parametrize("bit_depth", [8, 16])
def test_png_round_trip_is_lossless(tmp_path, shape, bit_depth):
    pixels = np.random.default_rng(0).random(shape).astype(np.float32)
    image_io.write_png(tmp_path / "x.png", pixels, bit_depth)
    image = image_io.read_image(tmp_path / "x.png")
    assert image.bit_depth == bit_depth and image.pixels.shape == shape
    np.testing.assert_array_equal(
        image_io.quantize(image.pixels, bit_depth), image_io.quantize(pixels, bit_depth)
    )


def test_channel_order_is_rgb(tmp_path):
    pixels = np.zeros((4, 4, 3), np.float32)
    pixels[..., 0] = 1.0
    image_io.write_png(tmp_path / "red.png", pixels)
    bgr = cv2.imread(str(tmp_path / "red.png"))
    assert bgr[0, 0].tolist() == [0, 0, 255]
    assert image_io.read_image(tmp_path / "red.png").pixels[0, 0].tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("suffix", [".jpg", ".bmp", ".tif"])
def test_other_formats(tmp_path, suffix):
    cv2.imwrite(str(tmp_path / f"x{suffix}"), np.full((8, 8, 3), 128, np.uint8))
    image = image_io.read_image(tmp_path / f"x{suffix}")
    assert image.pixels.shape == (8, 8, 3) and abs(float(image.pixels.mean()) - 128 / 255) < 0.01


def test_alpha_dropped_with_warning(tmp_path, caplog):
    rgba = np.zeros((5, 5, 4), np.uint8)
    rgba[..., 3] = 255
    cv2.imwrite(str(tmp_path / "alpha.png"), rgba)
    with caplog.at_level(logging.WARNING):
        image = image_io.read_image(tmp_path / "alpha.png")
    assert image.pixels.shape == (5, 5, 3)
    assert "alpha channel dropped" in caplog.text and "alpha.png" in caplog.text


@pytest.mark.parametrize(
    "content, message", [(b"", "empty file"), (b"not an image at all", "not a readable image")]
)
def test_bad_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        image_io.read_image(path)
    assert str(path) in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        image_io.read_image(tmp_path / "gone.png")


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    image_io.write_text(tmp_path / "a.txt", "one")
    image_io.write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
