"""The original scripts' flags: each works with the original's meaning or is refused in one line
naming what replaces it; and the original's options that change results."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")

import generator_dataset
import run_BDN
import test_BIQAN
import train_BIQAN
from models.skip import SkipConfig, SkipNet
from tests.biqan.helpers import write_fake_image_folder
from tests.conftest import make_pair
from utils import original_flags
from utils.biqan import labels
from utils.dip.fitting import DipFit
from utils.method import FitSettings


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, list[str]]:
    """Minimal valid command lines of the four scripts, on tiny fake data."""
    make_pair(tmp_path, "a")
    write_fake_image_folder(tmp_path / "run", "a", [10, 20, 30], [20.0, 25.0, 22.0])
    write_fake_image_folder(tmp_path / "run", "b", [10, 20, 30], [21.0, 26.0, 23.0], seed=1)
    label_file = tmp_path / "labels.txt"
    label_file.write_text("1 a/00010.png 0 0 0 0 1 0 0 0 0 0 0 0 0\n")
    return {
        "run_BDN": [
            "--dataset_real_path",
            str(tmp_path / "real"),
            "--output_path",
            str(tmp_path / "out"),
            "--gpu_id",
            "cpu",
        ],
        "generator_dataset": [
            "--dataset_path",
            str(tmp_path / "run"),
            "--output_path",
            str(tmp_path / "labels_out.txt"),
        ],
        "train_BIQAN": [
            "--dataset_image_path",
            str(tmp_path / "run"),
            "--dataset_file_path",
            str(label_file),
            "--output_checkpoint",
            str(tmp_path / "ck"),
            "--output_path",
            str(tmp_path / "res"),
        ],
        "label_file": str(label_file),
        "test_BIQAN": [
            "--dataset_image_path",
            str(tmp_path / "run"),
            "--output_path",
            str(tmp_path / "sel"),
            "--selector",
            "last",
        ],
    }


SCRIPTS = {
    "run_BDN": run_BDN,
    "generator_dataset": generator_dataset,
    "train_BIQAN": train_BIQAN,
    "test_BIQAN": test_BIQAN,
}
REFUSED = [
    ("run_BDN", ["--is_split_dataset", "True"], "--num_shards N --shard_index I"),
    ("run_BDN", ["--dataset_part_id", "1/7"], "--num_shards N --shard_index I"),
    ("run_BDN", ["--output_checkpoint", "my_networks"], "<output_path>/<image>/net.pt"),
    ("run_BDN", ["--net_type", "snail", "--channels", "8"], "drop --channels"),
    ("run_BDN", ["--net_type", "unet"], "invalid choice: 'unet'"),
    ("run_BDN", ["--input_base_option", "use_denoised_image"], "Laplacian"),
    ("run_BDN", ["--refer_base_option", "use_denoised_image"], "Laplacian"),
    ("run_BDN", ["--reg_noise_std", "0.1", "--input_max_gn_std", "5"], "give one"),
    ("run_BDN", ["--target_noise_std", "0.1", "--refer_extra_option", "None"], "give one"),
    ("run_BDN", ["--input_max_gn_std", "-1"], "must be >= 0"),
    ("generator_dataset", ["--is_use_exp", "true"], "--is_use_fix_minmax false"),
    ("generator_dataset", ["--is_use_exp", "maybe"], "expected true or false"),
    ("train_BIQAN", ["--class_num", "5"], "--class_num must be 10"),
    ("train_BIQAN", ["--image_size", "64", "--classification_model", "inceptionv2"], "at least 75"),
    ("test_BIQAN", ["--image_size", "64"], "biqan.json"),
    ("test_BIQAN", ["--class_num", "5"], "biqan.json"),
    ("test_BIQAN", ["--classification_model", "vgg16"], "biqan.json"),
]


@pytest.mark.parametrize("script, flags, replacement", REFUSED)
def test_refused_flags_name_their_replacement(folders, capsys, script, flags, replacement):
    with pytest.raises(SystemExit) as exit_info:
        SCRIPTS[script].parse_args(folders[script] + flags)
    error_lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert exit_info.value.code == 2 and len(error_lines) == 1
    assert replacement in error_lines[0] and flags[0].split("=")[0] in error_lines[0]


HARMLESS = [
    ("run_BDN", ["-id", "BlindDenoising"], "the output folder names the run"),
    ("run_BDN", ["--script-id", "my experiment"], "the output folder names the run"),
    ("run_BDN", ["--output_checkpoint", "checkpoint"], "<output_path>/<image>/net.pt"),
    ("generator_dataset", ["-id", "DataPreparation"], "the output folder names the run"),
    ("train_BIQAN", ["-id", "BlindDenoising"], "the output folder names the run"),
    ("test_BIQAN", ["-id", "x"], "the output folder names the run"),
    ("test_BIQAN", ["--image_size", "224"], "biqan.json"),
    ("test_BIQAN", ["--class_num", "10"], "biqan.json"),
    ("test_BIQAN", ["--classification_model", "mobilenet"], "biqan.json"),
]


@pytest.mark.parametrize("script, flags, reason", HARMLESS)
def test_harmless_original_flags_are_accepted_with_a_note(folders, capsys, script, flags, reason):
    SCRIPTS[script].parse_args(folders[script] + flags)
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith(f"note: {' '.join(flags)} (a flag of the")
    assert "is ignored" in notes[0] and reason in notes[0]


RUN_BDN_ACCEPTED = [
    ([], (1 / 30, False), (0.0, False), "noise"),
    (["--input_max_gn_std", "8.5"], (8.5 / 255, False), (0.0, False), "noise"),
    (["--input_extra_option", "use_random_gaussian_std"], (8.5 / 255, True), (0.0, False), "noise"),
    (
        ["--input_extra_option", "None", "--input_max_gn_std", "4"],
        (4 / 255, False),
        (0.0, False),
        "noise",
    ),
    (
        ["--refer_extra_option", "use_fix_gaussian_std"],
        (1 / 30, False),
        (8.5 / 255, False),
        "noise",
    ),
    (
        ["--refer_extra_option", "use_random_gaussian_std", "--refer_max_gn_std", "10"],
        (1 / 30, False),
        (10 / 255, True),
        "noise",
    ),
    (["--refer_max_gn_std", "0"], (1 / 30, False), (0.0, False), "noise"),
    (
        ["--input_base_option", "use_raw_image", "--refer_base_option", "use_raw_image"],
        (1 / 30, False),
        (0.0, False),
        "noisy_image",
    ),
    (
        ["--input_base_option", "use_unifrom_noise", "--net_type", "skip"],
        (1 / 30, False),
        (0.0, False),
        "noise",
    ),
]


@pytest.mark.parametrize("flags, input_noise, target_noise, input_kind", RUN_BDN_ACCEPTED)
def test_run_bdn_original_flags_translate(folders, flags, input_noise, target_noise, input_kind):
    settings = run_BDN.fit_settings(run_BDN.parse_args(folders["run_BDN"] + flags))
    assert (settings.reg_noise_std, settings.reg_noise_random) == pytest.approx(input_noise)
    assert (settings.target_noise_std, settings.target_noise_random) == pytest.approx(target_noise)
    assert settings.input_kind == input_kind


def test_the_command_line_is_translated_before_parsing(capsys):
    """The parser gets this project's flags only: originals rewritten (abbreviated ones too),
    harmless ones taken out with a note, every other token kept in order."""
    argv = ["--lr", "0.1", "--input_extra", "use_random_gaussian_std", "-id", "7"]
    argv += ["--input_max_gn_std=17", "--refer_base_option", "use_raw_image", "--seed", "3"]
    argv += ["--input_base_option", "use_raw_image"]
    translated = original_flags.translate(run_BDN.build_parser(), argv, original_flags.RUN_BDN)
    assert translated == [
        "--lr", "0.1", "--seed", "3",
        "--input_kind", "noisy_image", "--reg_noise_std", repr(17 / 255), "--reg_noise_random",
    ]  # fmt: skip
    assert "-id 7 (a flag of the original code) is ignored" in capsys.readouterr().err


def test_a_script_without_translated_flags_only_loses_the_harmless_ones(capsys):
    parser = test_BIQAN.build_parser()
    argv = ["--selector", "wmv", "--image_size", "224", "--class_num=10"]
    assert original_flags.translate(parser, argv, original_flags.TEST_BIQAN) == argv[:2]
    with pytest.raises(SystemExit):
        original_flags.translate(parser, ["--image_size", "64"], original_flags.TEST_BIQAN)
    assert "--image_size 64 (a flag of the original code)" in capsys.readouterr().err


def test_readme_commands_of_the_original_parse(folders):
    args = run_BDN.parse_args(
        folders["run_BDN"]
        + [
            "--num_iter",
            "3500",
            "--save_iter",
            "20",
            "--lr",
            "1e-2",
            "--input_depth",
            "32",
            "--show_iter",
            "1000",
        ]
    )
    assert (args.num_iter, args.save_iter, args.lr, args.show_iter) == (3500, 20, 0.01, 1000)
    args = generator_dataset.parse_args(
        folders["generator_dataset"]
        + [
            "--max_value",
            "40",
            "--min_value",
            "10",
            "--start_position",
            "1",
            "--is_use_exp",
            "True",
            "--is_use_fix_minmax",
            "False",
        ]
    )
    assert (args.max_psnr, args.min_psnr, args.is_use_exp, args.is_use_fix_minmax) == (
        40,
        10,
        True,
        False,
    )
    assert (
        generator_dataset.parse_args(
            folders["generator_dataset"] + ["--is_use_exp", "False"]
        ).is_use_exp
        is False
    )
    args = train_BIQAN.parse_args(
        folders["train_BIQAN"]
        + [
            "--epochs",
            "40",
            "--lr",
            "1e-3",
            "--batchsize",
            "32",
            "--image_size",
            "224",
            "--class_num",
            "10",
            "--classification_model",
            "vgg16",
        ]
    )
    assert (args.epochs, args.lr, args.class_num, args.classification_model) == (
        40,
        1e-3,
        10,
        "vgg16",
    )
    args = test_BIQAN.parse_args(
        folders["test_BIQAN"]
        + ["--start_index", "90", "--gpu_id", "0", "--pre_trained_model", folders["label_file"]]
    )
    assert (args.start_index, args.gpu_id, str(args.pre_trained_model)) == (
        90,
        "0",
        folders["label_file"],
    )
    assert train_BIQAN.parse_args(folders["train_BIQAN"] + ["--gpu_id", "0"]).gpu_id == "0"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback of --gpu_id 1")
def test_original_gpu_id_default_runs_on_the_cpu_without_cuda(folders, tmp_path, caplog):
    import denoise
    from utils.biqan import device as keras_device

    assert run_BDN.parse_args(folders["run_BDN"][:-2] + ["--gpu_id", "1"]).device.type == "cpu"
    assert "running on the CPU (asked for GPU 1)" in caplog.text
    caplog.clear()
    image = tmp_path / "real" / "a.png"
    assert (
        denoise.parse_args([str(image), "-o", str(tmp_path / "d"), "--gpu_id", "0"]).device.type
        == "cpu"
    )
    assert "running on the CPU (asked for GPU 0)" in caplog.text
    warning = keras_device.missing_gpu_warning("3")
    assert warning.startswith("warning: --gpu_id 3: the ") and "sees no such GPU" in warning
    assert keras_device.missing_gpu_warning("cpu") is keras_device.missing_gpu_warning(None) is None


def test_noise_setting_keeps_the_originals_none_meaning():
    assert original_flags.noise_setting(None, None) is None
    assert original_flags.noise_setting("None", None) == (pytest.approx(8.5 / 255), False)
    assert original_flags.noise_setting("use_random_gaussian_std", 0.0) == (0.0, True)


def tiny_fit(settings: FitSettings, input_depth: int = 4) -> DipFit:
    config = SkipConfig(
        input_depth=input_depth, channels_down=4, channels_up=4, channels_skip=2, num_scales=2
    )
    torch.manual_seed(0)
    noisy = torch.rand(1, 3, 16, 16)
    return DipFit(SkipNet(config), noisy, settings, seeds=[3])


def test_random_std_draws_a_new_std_each_time():
    fit = tiny_fit(FitSettings(num_iter=5, save_iter=1))
    zeros = torch.zeros(1, 3, 64, 64)
    fixed = [float(fit.noise_like(zeros, 0.5).std()) for _ in range(3)]
    drawn = [float(fit.noise_like(zeros, 0.5, random_std=True).std()) for _ in range(6)]
    assert all(abs(std - 0.5) < 0.03 for std in fixed)
    assert all(std < 0.5 for std in drawn) and np.ptp(drawn) > 0.05


def test_noisy_image_input():
    fit = tiny_fit(FitSettings(num_iter=5, save_iter=1, input_kind="noisy_image"), input_depth=3)
    assert torch.equal(fit.base_input, fit.noisy)
    with pytest.raises(ValueError, match="needs input_depth 3"):
        tiny_fit(FitSettings(num_iter=5, save_iter=1, input_kind="noisy_image"), input_depth=4)


def test_run_bdn_with_noisy_image_input_and_random_stds(tmp_path):
    make_pair(tmp_path, "a")
    output = tmp_path / "out"
    args = run_BDN.parse_args(
        [
            "--dataset_real_path",
            str(tmp_path / "real"),
            "--dataset_mean_path",
            str(tmp_path / "mean"),
            "--output_path",
            str(output),
            "--gpu_id",
            "cpu",
            "--quiet",
            "--channels",
            "8",
            "--num_iter",
            "20",
            "--save_iter",
            "10",
            "--input_base_option",
            "use_raw_image",
            "--input_extra_option",
            "use_random_gaussian_std",
            "--refer_extra_option",
            "use_random_gaussian_std",
        ]
    )
    assert run_BDN.main(args) == 0
    record = json.loads((output / "args.json").read_text())
    assert record["fit"]["input_kind"] == "noisy_image" and record["fit"]["target_noise_random"]
    assert torch.load(output / "a" / "net.pt", weights_only=True)["config"]["input_depth"] == 3
    with (output / "a" / "metrics.csv").open() as handle:
        assert [row["iteration"] for row in csv.DictReader(handle)] == ["10", "20"]


def test_label_options_of_the_original():
    psnr = np.array([20.0, 30.0, 25.0])
    np.testing.assert_allclose(labels.image_mean_scores(psnr), labels.psnr_to_mean_score(psnr))
    np.testing.assert_allclose(labels.image_mean_scores(psnr, fixed_range=False), [2.5, 7.5, 5.0])
    exp_scores = labels.image_mean_scores(psnr, use_exp=True, fixed_range=False)
    expected = (np.exp(psnr) - np.exp(20)) / (np.exp(30) - np.exp(20)) * 5 + 2.5
    np.testing.assert_allclose(exp_scores, expected)
    np.testing.assert_allclose(
        labels.image_mean_scores(np.array([30.0, 30.0]), fixed_range=False), [5.0, 5.0]
    )


def test_generator_per_image_min_max(folders, tmp_path):
    args = generator_dataset.parse_args(
        folders["generator_dataset"] + ["--start_position", "0", "--is_use_fix_minmax", "false"]
    )
    assert generator_dataset.main(args) == 0
    with (tmp_path / "labels_out_psnr.csv").open() as handle:
        scores = {row["image_id"]: float(row["mean_score"]) for row in csv.DictReader(handle)}
    assert scores == {
        "a/00010.png": 2.5,
        "a/00020.png": 7.5,
        "a/00030.png": 4.5,
        "b/00010.png": 2.5,
        "b/00020.png": 7.5,
        "b/00030.png": 4.5,
    }


def test_original_label_file_is_read(tmp_path):
    path = tmp_path / "PolyU_PNSR.txt"
    path.write_text(
        "dataset/run/x_real/159.jpg 0.0 0.1 0.2 0.4 0.2 0.1 0.0 0.0 0.0 0.0\n"
        "dataset/run/x_real/179.jpg 0 0 0 0 0 0 0 0 2 2\n"
    )
    image_ids, distributions = labels.read_labels(path)
    assert image_ids == ["dataset/run/x_real/159.jpg", "dataset/run/x_real/179.jpg"]
    np.testing.assert_allclose(distributions[1], [0] * 8 + [0.5, 0.5])
    path.write_text("a.jpg 0.5 0.5 x 0 0 0 0 0 0 0\n")
    with pytest.raises(ValueError, match="PNSR.txt:1: the 10 probabilities must be numbers"):
        labels.read_labels(path)


def test_train_biqan_reads_original_labels_relative_to_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_fake_image_folder(tmp_path / "dataset" / "run", "x_real", [20, 40], [30.0, 31.0])
    (tmp_path / "dataset" / "run" / "x_real" / "metrics.csv").unlink()
    label_file = tmp_path / "labels.txt"
    label_file.write_text(
        "".join(
            f"dataset/run/x_real/{iteration:05d}.png {' '.join(['0.1'] * 10)}\n"
            for iteration in (20, 40)
        )
    )
    args = train_BIQAN.parse_args(
        [
            "--dataset_image_path",
            "dataset/run",
            "--dataset_file_path",
            str(label_file),
            "--output_checkpoint",
            "ck",
            "--output_path",
            "res",
        ]
    )
    _, paths, distributions, true_psnr = labels.read_labelled_snapshots(
        args.dataset_image_path, args.dataset_file_path
    )
    assert paths == [Path("dataset/run/x_real/00020.png"), Path("dataset/run/x_real/00040.png")]
    assert distributions.shape == (2, 10)
    np.testing.assert_allclose(true_psnr, labels.mean_score_to_psnr(5.5))


@pytest.mark.parametrize("architecture, size", [("vgg16", 32), ("inceptionv2", 75)])
def test_original_backbones_build_and_train_one_step(architecture, size):
    from models import biqan
    from utils.biqan import train as biqan_train

    config = biqan.BiqanConfig(architecture=architecture, image_size=size)
    model = biqan.build_biqan(config)
    biqan_train.compile_stage(model, 2, 1e-3)
    images = np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype("float32")
    targets = np.full((2, 10), 0.1, dtype="float32")
    history = model.fit(images, targets, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.predict(images, verbose=0).shape == (2, 10)


def upstream_parameter_count(input_depth: int, scales: list[tuple[int, int, int]]) -> int:
    """Parameters of upstream DIP's skip() with per-scale (down, up, skip) channels, counted
    layer by layer from its definition (3 output channels)."""
    total = 0
    for index, (down, up, skip) in enumerate(scales):
        in_channels = input_depth if index == 0 else scales[index - 1][0]
        deeper = scales[index + 1][1] if index + 1 < len(scales) else down
        if skip:
            total += in_channels * skip + skip + 2 * skip
        total += 9 * in_channels * down + down + 2 * down + 9 * down * down + down + 2 * down
        total += 2 * (skip + deeper)
        total += 9 * (skip + deeper) * up + up + 2 * up + up * up + up + 2 * up
    return total + scales[0][1] * 3 + 3


def test_snail_network_has_the_originals_channels():
    from models.skip import SNAIL_CHANNELS, count_parameters

    skip = SkipNet(SkipConfig())
    assert count_parameters(skip) == upstream_parameter_count(32, [(128, 128, 4)] * 5) == 2217831
    snail = SkipNet(SkipConfig(net_type="snail"))
    assert count_parameters(snail) == upstream_parameter_count(32, list(SNAIL_CHANNELS))
    assert snail(torch.rand(1, 32, 64, 64)).shape == (1, 3, 64, 64)


def test_run_bdn_snail(tmp_path):
    make_pair(tmp_path, "a")
    output = tmp_path / "out"
    args = run_BDN.parse_args(
        [
            "--dataset_real_path",
            str(tmp_path / "real"),
            "--output_path",
            str(output),
            "--gpu_id",
            "cpu",
            "--quiet",
            "--num_iter",
            "10",
            "--save_iter",
            "10",
            "--net_type",
            "snail",
        ]
    )
    assert run_BDN.main(args) == 0
    saved = torch.load(output / "a" / "net.pt", weights_only=True)["config"]
    assert saved["net_type"] == "snail"


def test_runs_recorded_before_the_new_settings_resume(tmp_path):
    from utils.dip import reconstruction, run_guard

    make_pair(tmp_path, "a")
    output = tmp_path / "out"
    argv = [
        "--dataset_real_path",
        str(tmp_path / "real"),
        "--output_path",
        str(output),
        "--gpu_id",
        "cpu",
        "--quiet",
        "--num_iter",
        "10",
        "--save_iter",
        "10",
        "--channels",
        "8",
    ]
    assert run_BDN.main(run_BDN.parse_args(argv)) == 0
    record = json.loads((output / "args.json").read_text())
    for key in ("reg_noise_random", "target_noise_random", "input_kind"):
        del record["fit"][key]
    del record["network"]["net_type"]
    (output / "args.json").write_text(json.dumps(record))
    keys = reconstruction.RESULT_KEYS
    filled = reconstruction.with_defaults(record)
    assert run_guard.changed_settings(output, filled, keys, reconstruction.with_defaults) == []
    assert run_BDN.main(run_BDN.parse_args(argv)) == 0
    other = {**filled, "fit": {**filled["fit"], "input_kind": "noisy_image"}}
    assert run_guard.changed_settings(output, other, keys, reconstruction.with_defaults) == ["fit"]
