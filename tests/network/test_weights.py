"""Pretrained backbone loading: hub cache, local files, and the errors a user can act on."""
import os
import urllib.error

import pytest
import torch

import network
from network import PretrainedWeightsError
from network.backbone import hrnetv2, mobilenetv2
from network.weights import BACKBONE_SOURCES, hub_checkpoint_path


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache: $TORCH_HOME points into the test's folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("no network")


def test_hrnet48_without_a_file_says_where_to_put_it(torch_home):
    with pytest.raises(PretrainedWeightsError) as err:
        network.deeplabv3plus_hrnetv2_48(pretrained_backbone=True)
    message = str(err.value)
    assert hub_checkpoint_path("hrnetv2_48_imagenet.pth") in message
    assert "pretrained_backbone=False" in message


def test_hrnet_loads_a_state_dict_from_the_hub_cache(torch_home):
    source = hrnetv2.hrnetv2_32()
    path = hub_checkpoint_path(BACKBONE_SOURCES["hrnetv2_32"].filename)
    assert path.startswith(str(torch_home))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"state_dict": source.state_dict()}, path)
    model = network.deeplabv3plus_hrnetv2_32(pretrained_backbone=True)
    for key, value in source.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


def test_local_file_with_imagenet_classifier_loads(tmp_path):
    source = mobilenetv2.MobileNetV2(output_stride=16)  # torchvision layout, with classifier.*
    path = tmp_path / "mbv2.pth"
    torch.save(source.state_dict(), path)
    model = network.deeplabv3plus_mobilenet(output_stride=16, pretrained_backbone=str(path))
    assert torch.equal(model.backbone.low_level_features[0][0].weight, source.features[0][0].weight)
    assert torch.equal(model.backbone.high_level_features[-1].conv[2].weight, source.features[17].conv[2].weight)


def test_download_failure_is_one_clear_error(torch_home, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    with pytest.raises(PretrainedWeightsError, match=r"resnet50: cannot download .*--no-pretrained_backbone"):
        network.deeplabv3plus_resnet50(pretrained_backbone=True)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pth"
    torch.save(mobilenetv2.MobileNetV2().state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(PretrainedWeightsError, match="cannot read weights file .*broken.pth"):
        network.deeplabv3_mobilenet(pretrained_backbone=str(path))


def test_wrong_backbone_file_is_a_clear_error(tmp_path):
    path = tmp_path / "hrnet.pth"
    torch.save(hrnetv2.hrnetv2_32().state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match="does not fit backbone mobilenet_v2"):
        network.deeplabv3_mobilenet(pretrained_backbone=str(path))


def test_missing_local_file_is_a_clear_error(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        network.deeplabv3_resnet50(pretrained_backbone=str(tmp_path / "nope.pth"))
