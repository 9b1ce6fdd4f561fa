import torch
from torch import nn

from models.skip import SkipConfig, SkipNet, count_parameters


def test_paper_network_has_pinned_parameter_count():
    assert count_parameters(SkipNet(SkipConfig(input_depth=32))) == 2_217_831


def test_layer_structure_matches_upstream_skip():
    net = SkipNet()
    modules = list(net.modules())
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    strided = [m for m in convs if m.stride == (2, 2)]
    assert len(strided) == 5 and all(m.kernel_size == (3, 3) for m in strided)
    skips = [m for m in convs if m.kernel_size == (1, 1) and m.out_channels == 4]
    assert len(skips) == 5
    assert (
        sum(isinstance(m, nn.ReflectionPad2d) for m in modules) == 15
    )  # 3 per scale: down x2, up x1
    assert all(m.padding == (0, 0) for m in convs)
    upsamples = [m for m in modules if isinstance(m, nn.Upsample)]
    assert len(upsamples) == 5 and all(m.mode == "bilinear" for m in upsamples)
    assert all(m.negative_slope == 0.2 for m in modules if isinstance(m, nn.LeakyReLU))
    assert isinstance(net.head[-1], nn.Sigmoid)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in modules) == 5 * 6


def test_output_shape_and_range():
    net = SkipNet(SkipConfig(input_depth=8, channels_down=8, channels_up=8, output_channels=1))
    output = net(torch.rand(2, 8, 64, 96))
    assert output.shape == (2, 1, 64, 96)
    assert float(output.min()) > 0 and float(output.max()) < 1


def test_config_round_trip_and_unknown_keys():
    config = SkipConfig(channels_down=16, channels_up=16)
    assert SkipConfig.from_dict(config.to_dict()) == config
    try:
        SkipConfig.from_dict({"width": 3})
    except ValueError as error:
        assert "width" in str(error)
    else:
        raise AssertionError("unknown key accepted")
