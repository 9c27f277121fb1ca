"""The 12 entries: reference keys and shapes, equality with the original, any input size, stride rules."""
import json
import os

import pytest
import torch

import network
from network.backbone import hrnetv2
from tests.conftest import ROOT
from tools.make_reference_outputs import case_input, deterministic_state_dict, sample

# A copy of ../shared/reference/original_state_dicts.json: every entry's keys and shapes in the original.
REFERENCE = os.path.join(ROOT, "tests", "fixtures", "original_state_dicts.json")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "original_outputs.pt")
ENTRIES = list(network.MODELS)


@pytest.fixture(scope="module")
def reference():
    with open(REFERENCE) as f:
        return json.load(f)


def test_twelve_entries_found_by_name():
    assert len(ENTRIES) == 12
    for name in ENTRIES:
        assert network.modeling.__dict__[name] is network.MODELS[name]
        assert getattr(network, name) is network.MODELS[name]


@pytest.mark.parametrize("name", ENTRIES)
def test_state_dict_matches_original_keys_and_shapes(reference, name):
    model = network.MODELS[name](num_classes=21, pretrained_backbone=False)
    expected = reference[name]
    state = model.state_dict()
    assert list(state) == list(expected["state_dict"])
    assert {k: list(v.shape) for k, v in state.items()} == expected["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == expected["num_parameters"]
    # A checkpoint of the original's layout loads strictly.
    model.load_state_dict({k: torch.zeros(v) for k, v in expected["state_dict"].items()}, strict=True)


def _cases():
    return [(r["name"], r["output_stride"], tuple(r["size"]), r["sample"])
            for r in torch.load(FIXTURE, weights_only=True)]


@pytest.mark.parametrize("name,output_stride,size,expected", _cases(),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_outputs_equal_original(name, output_stride, size, expected):
    """Fixture recorded from the original's code by tools/make_reference_outputs.py."""
    model = network.build_model(name, 21, output_stride=16 if output_stride == 4 else output_stride,
                                pretrained_backbone=False).eval()
    model.load_state_dict(deterministic_state_dict(model))
    with torch.no_grad():
        got = sample(model(case_input(*size)))
    assert got.shape == expected.shape
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-4


@pytest.mark.parametrize("name", ENTRIES)
def test_forward_backward_any_size(name):
    model = network.build_model(name, num_classes=5, output_stride=16, pretrained_backbone=False)
    # odd sides, no multiple of the output stride; Xception's dilated conv3/conv4 trim 4 pixels: it needs > 64 px
    height, width = (129, 97) if "xception" in name else (65, 49)
    out = model(torch.randn(2, 3, height, width))
    assert out.shape == (2, 5, height, width)
    out.mean().backward()
    assert all(p.grad is not None for p in model.classifier.parameters())


@pytest.mark.parametrize("size", [(161, 97), (65, 513)])  # 513: the classic crop, odd at every stride
def test_hrnet_takes_sizes_that_are_not_multiples_of_32(size):
    model = network.deeplabv3plus_hrnetv2_32(num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 3, *size)


def test_hrnet_entries_honour_num_classes():
    for name in ("deeplabv3_hrnetv2_32", "deeplabv3plus_hrnetv2_48"):
        model = network.MODELS[name](num_classes=7, pretrained_backbone=False)
        assert model.classifier.classifier[-1].out_channels == 7


def test_hrnet_basic_block_maps_planes_to_planes():
    downsample = torch.nn.Conv2d(16, 32, 1, bias=False)
    block = hrnetv2.BasicBlock(16, 32, downsample=downsample)
    assert block.conv2.weight.shape == (32, 32, 3, 3)
    assert block(torch.randn(1, 16, 9, 9)).shape == (1, 32, 9, 9)


@pytest.mark.parametrize("name", ["deeplabv3plus_resnet50", "deeplabv3_mobilenet", "deeplabv3plus_xception"])
def test_output_stride_other_than_8_or_16_is_rejected(name):
    with pytest.raises(ValueError, match="output_stride 8 or 16"):
        network.build_model(name, 21, output_stride=32, pretrained_backbone=False)


def test_hrnet_accepts_the_cli_default_output_stride():
    model = network.build_model("deeplabv3_hrnetv2_32", 4, output_stride=16, pretrained_backbone=False).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 47)).shape == (1, 4, 33, 47)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'deeplabv3_vgg'.*deeplabv3plus_mobilenet"):
        network.build_model("deeplabv3_vgg", 21, pretrained_backbone=False)


def test_separable_conv_keeps_shapes_and_predictable_names():
    plain = network.build_model("deeplabv3plus_mobilenet", 21, output_stride=16, pretrained_backbone=False).eval()
    model = network.build_model("deeplabv3plus_mobilenet", 21, output_stride=16, separable_conv=True,
                                pretrained_backbone=False).eval()
    keys = model.state_dict().keys()
    assert "classifier.classifier.0.body.0.weight" in keys      # depthwise
    assert "classifier.classifier.0.body.1.weight" in keys      # pointwise
    assert "classifier.aspp.convs.1.0.body.0.weight" in keys
    assert "classifier.aspp.convs.0.0.weight" in keys           # 1x1 convs stay dense
    assert model.state_dict()["classifier.classifier.0.body.0.weight"].shape == (304, 1, 3, 3)
    x = torch.randn(1, 3, 65, 81)
    with torch.no_grad():
        assert model(x).shape == plain(x).shape == (1, 21, 65, 81)


def test_aspp_keeps_a_channels_last_model_in_channels_last():
    """Every ASPP branch, their concatenation and the gradient to the input stay NHWC in a channels_last model
    (one NCHW branch made the 5 x 256-channel concatenation and its gradient NCHW: full copies each step), and the
    image-pooling branch computes the same as in NCHW."""
    from network._deeplab import ASPP
    torch.manual_seed(0)
    aspp = ASPP(16, (1, 2, 3), out_channels=8).eval()
    x = torch.randn(2, 16, 9, 7)
    expected = aspp(x)
    aspp.to(memory_format=torch.channels_last)
    joined = []
    aspp.project.register_forward_pre_hook(lambda module, inputs: joined.append(inputs[0]))
    x_nhwc = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    out = aspp(x_nhwc)
    out.sum().backward()
    assert joined[0].shape == (2, 40, 9, 7) and joined[0].is_contiguous(memory_format=torch.channels_last)
    assert x_nhwc.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected)


def test_aspp_pooling_exports_with_dynamic_sizes_from_an_nhwc_input():
    """NHWC features reach ASPP in a plain model too (timm's NHWC encoders, e.g. Swin, MambaOut): traced, the branch
    keeps the input's size dynamic, so an export at one size computes right at another."""
    from network._deeplab import ASPPPooling
    torch.manual_seed(0)
    branch = ASPPPooling(8, 4).eval()
    height, width = torch.export.Dim("height", min=2, max=64), torch.export.Dim("width", min=2, max=64)
    nhwc = torch.randn(1, 8, 12, 10).contiguous(memory_format=torch.channels_last)
    exported = torch.export.export(branch, (nhwc,), dynamic_shapes=({2: height, 3: width},))
    other = torch.randn(1, 8, 17, 23).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(exported.module()(other), branch(other))
