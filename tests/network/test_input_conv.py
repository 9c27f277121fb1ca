"""N-band input: the stem convolution adapted from ImageNet's RGB filters, rebuilt from scratch, or loaded as it
is from an N-band file (Sentinel-2 ResNet-50s in torchvision and timm key names)."""
import pytest
import torch
import torchvision
from torch import nn

import network
from network.input_conv import adapted_weight, find_stem_conv, set_input_bands

timm = pytest.importorskip("timm", reason="timm is a test dependency (requirements-dev.txt)")


def _rgb_weight():
    return torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))


def test_rgb_filters_go_to_the_rgb_bands_and_their_mean_to_the_others_scaled_by_3_over_n():
    rgb = _rgb_weight()
    out = adapted_weight(rgb, 5, (3, 1, 0))  # R at band 4, G at band 2, B at band 1
    scale = 3 / 5
    for channel, position in enumerate((3, 1, 0)):
        assert torch.allclose(out[:, position], rgb[:, channel] * scale)
    for other in (2, 4):
        assert torch.allclose(out[:, other], rgb.mean(dim=1) * scale)
    # an input equal in every band gets the response of the RGB stem
    assert torch.allclose(out.sum(dim=1), rgb.sum(dim=1), atol=1e-6)


def test_one_band_is_timms_adaptation_and_three_in_order_is_the_identity():
    from timm.models import adapt_input_conv

    rgb = _rgb_weight()
    assert torch.allclose(adapted_weight(rgb, 1), adapt_input_conv(1, rgb.clone()), atol=1e-6)
    assert torch.equal(adapted_weight(rgb, 3, (0, 1, 2)), rgb)


@pytest.mark.parametrize("name", ["deeplabv3plus_mobilenet", "deeplabv3_resnet50", "deeplabv3plus_hrnetv2_32"])
def test_any_entry_takes_n_bands_with_its_stem_adapted_in_place(name):
    model = network.build_model(name, 3, 16, pretrained_backbone=False)
    stem_name, stem = find_stem_conv(model)
    rgb = stem.weight.detach().clone()
    note = set_input_bands(model, 4, (0, 1, 2), pretrained=True)
    assert stem.in_channels == 4 and stem.weight.shape[1] == 4 and stem_name in note
    assert torch.allclose(stem.weight[:, :3], rgb * 0.75) and "adapted to 4 bands" in note
    model.eval()
    assert model(torch.randn(1, 4, 48, 48)).shape == (1, 3, 48, 48)


def test_without_pretrained_weights_the_stem_starts_afresh():
    model = network.build_model("deeplabv3plus_mobilenet", 3, 16, pretrained_backbone=False, in_channels=13)
    stem = model.backbone.low_level_features[0][0]
    assert stem.in_channels == 13 and stem.weight.shape[1] == 13
    assert "initialised afresh for 13 bands" in model.input_adaptation
    assert network.build_model("deeplabv3plus_mobilenet", 3, pretrained_backbone=False).input_adaptation == ""


def _thirteen_band_resnet50(library: str) -> dict:
    if library == "timm":
        return timm.create_model("resnet50", pretrained=False, in_chans=13).state_dict()
    source = torchvision.models.resnet50(weights=None)
    source.conv1 = nn.Conv2d(13, 64, 7, 2, 3, bias=False)
    return source.state_dict()


@pytest.mark.parametrize("library", ["torchvision", "timm"])
def test_a_13_band_resnet50_is_loaded_as_it_is(tmp_path, library):
    state = _thirteen_band_resnet50(library)
    path = tmp_path / "sentinel2_resnet50.pth"
    torch.save(state, path)
    model = network.build_model("deeplabv3plus_resnet50", 5, 16, pretrained_backbone=str(path), in_channels=13)
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.backbone.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    assert "loaded as it is" in model.input_adaptation and str(path) in model.input_adaptation
    with pytest.raises(ValueError, match="take 13 bands but the data has 4"):
        network.build_model("deeplabv3plus_resnet50", 5, 16, pretrained_backbone=str(path), in_channels=4)
