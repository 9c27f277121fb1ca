"""The tu- entries: any timm encoder under the DeepLab heads, its features and strides, its weights (timm's, from
its cache, or a state_dict file in any of timm's formats), and what inference and SyncBatchNorm do to it.

Every timm model here is one of timm's tiny test models with random weights; nothing is downloaded."""
import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import network
from network import PretrainedWeightsError
from network.backbone.timm_encoder import TimmEncoderError, TimmFeatures
from tests.conftest import ROOT
from utils.runtime.device import resolve_amp, resolve_channels_last
from network.fusion import fold_batchnorm
from utils.loss import build_criterion
from utils.runtime.training import train_step

timm = pytest.importorskip("timm", reason="timm is a test dependency (requirements-dev.txt)")
safetensors_torch = pytest.importorskip("safetensors.torch")

FAMILIES = ["test_resnet", "test_efficientnet", "test_convnext"]  # ResNet, EfficientNet, ConvNeXt layouts


def _random_timm_state(name: str, seed: int = 1) -> dict:
    """timm's whole classification model ``name`` with random weights and BatchNorm statistics, as a state_dict."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.uniform_(0.5, 1.5)
    return model.state_dict()


def _flat(key: str) -> str:
    return key.replace(".", "_")


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("output_stride", [16, 8])
def test_the_decoder_gets_the_stride_4_feature_and_aspp_the_deepest(name, output_stride):
    model = network.build_model(f"deeplabv3plus_tu-{name}", 3, output_stride, pretrained_backbone=False)
    body = timm.create_model(name, features_only=True, output_stride=output_stride)
    features = model.backbone(torch.randn(2, 3, 64, 96))
    assert features["low_level"].shape == (2, body.feature_info.channels()[body.feature_info.reduction().index(4)],
                                           16, 24)
    assert features["out"].shape == (2, body.feature_info.channels()[-1], 64 // output_stride, 96 // output_stride)
    assert model.classifier.aspp.convs[1][0].dilation == ((6, 6) if output_stride == 16 else (12, 12))
    assert model(torch.randn(2, 3, 65, 97)).shape == (2, 3, 65, 97)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("output_stride", [16, 8])
def test_three_families_train_two_steps(name, output_stride):
    """Two SGD steps of the training loop's own step function on a batch of 2 crops, with main.py's defaults for
    this CPU (amp and channels_last auto): finite losses, and the encoder's weights move."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    amp, _ = resolve_amp("auto", device)
    channels_last, _ = resolve_channels_last("auto", device, amp)
    model = network.build_model(f"deeplabv3plus_tu-{name}", 3, output_stride, pretrained_backbone=False)
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format).train()
    before = copy.deepcopy(model.backbone.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    images, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    losses = [train_step(model, optimizer, scaler, build_criterion("cross_entropy"), images, labels, device, amp,
                         channels_last) for _ in range(2)]
    assert all(np.isfinite(losses))
    after = model.backbone.state_dict()
    moved = [key for key, value in before.items() if value.is_floating_point() and not torch.equal(value, after[key])]
    assert len(moved) > len(before) // 2


def test_a_v3_entry_takes_only_the_deepest_feature():
    model = network.build_model("deeplabv3_tu-test_efficientnet", 4, 16, pretrained_backbone=False)
    assert list(model.backbone(torch.randn(2, 3, 64, 64))) == ["out"]
    assert model(torch.randn(2, 3, 50, 70)).shape == (2, 4, 50, 70)


def test_channels_last_features_are_viewed_as_nchw_at_stride_32():
    """MambaOut's features are NHWC, as Swin's are, and it cannot dilate: stride 32 only."""
    model = network.build_model("deeplabv3plus_tu-test_mambaout", 3, 32, pretrained_backbone=False)
    features = model.backbone(torch.randn(2, 3, 64, 96))
    assert features["out"].shape[-2:] == (2, 3) and features["low_level"].shape[-2:] == (16, 24)
    assert model.classifier.aspp.convs[1][0].dilation == (3, 3)
    assert model(torch.randn(2, 3, 65, 97)).shape == (2, 3, 65, 97)


@pytest.mark.parametrize("name, fragment", [
    ("deeplabv3plus_tu-resnt50", "timm has no model 'resnt50'; close names: resnet50,"),
    ("deeplabv3_tu-convnxt_tiny", "close names: convnext_tiny,"),
    ("deeplabv3plus_tu-resnet50.no_such_tag", "timm has no weights 'no_such_tag' for resnet50; its tags: a1_in1k,"),
    ("deeplabv3plus_tu-test_mambaout", "cannot work at output stride 16: it builds at 32; pass --output_stride 32"),
    ("deeplabv3plus_tu-test_vit", "gives features at strides [16, 16, 16], none at 4, which the DeepLabV3+ decoder "
                                  "needs; use deeplabv3_tu-test_vit"),
    ("deeplabv3_tu", "unknown model 'deeplabv3_tu'"),
])
def test_names_strides_and_families_that_cannot_work_are_one_line(name, fragment):
    for build in (lambda: network.check_model(name, 16),
                  lambda: network.build_model(name, 3, 16, pretrained_backbone=False)):
        with pytest.raises(ValueError) as raised:
            build()
        assert fragment in str(raised.value) and "\n" not in str(raised.value)


def test_a_stride_the_family_cannot_dilate_to_names_those_it_can():
    with pytest.raises(TimmEncoderError, match=r"^timm's test_vit cannot work at output stride 8: it builds at 16; "
                                               r"pass --output_stride 16$"):
        network.build_model("deeplabv3_tu-test_vit", 3, 8, pretrained_backbone=False)


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".safetensors"])
def test_a_timm_state_dict_lands_unchanged(tmp_path, suffix):
    """ConvNeXt: timm's features_only model flattens its stages (stem.0 -> stem_0), so the keys differ."""
    state = _random_timm_state("test_convnext")
    path = str(tmp_path / f"convnext{suffix}")
    safetensors_torch.save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    model = network.build_model("deeplabv3plus_tu-test_convnext", 3, 8, pretrained_backbone=path)
    landed = model.backbone.body.state_dict()
    by_flat = {_flat(k): v for k, v in state.items()}
    assert all(torch.equal(tensor, by_flat[_flat(key)]) for key, tensor in landed.items())
    left_out = {k for k in by_flat if k not in {_flat(key) for key in landed}}
    assert left_out == {"head_norm_weight", "head_norm_bias", "head_fc_weight", "head_fc_bias"}  # the classifier
    assert model.backbone_weights == path


def test_a_state_dict_of_another_model_is_one_line_naming_the_file(tmp_path):
    path = str(tmp_path / "resnet.safetensors")
    safetensors_torch.save_file(_random_timm_state("test_resnet"), path)
    with pytest.raises(PretrainedWeightsError, match=rf"^weights {path} do not fit timm's test_convnext: missing "
                                                     r"\['stem_0.weight', .*a timm state_dict of test_convnext"):
        network.build_model("deeplabv3plus_tu-test_convnext", 3, 16, pretrained_backbone=path)
    (tmp_path / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(PretrainedWeightsError, match="cannot read weights file .*broken.safetensors"):
        network.build_model("deeplabv3plus_tu-test_convnext", 3, 16, pretrained_backbone=str(tmp_path / "broken"
                                                                                           ".safetensors"))


def _hub_cache(monkeypatch, folder) -> str:
    """An empty Hugging Face cache in ``folder`` that the hub client is told to use offline."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return str(folder)


def _put_in_hub_cache(cache: str, repo: str, state: dict) -> str:
    """``state`` as ``hf download`` leaves model.safetensors of ``repo`` in the cache."""
    revision = "0" * 40
    folder = os.path.join(cache, f"models--{repo.replace('/', '--')}")
    os.makedirs(os.path.join(folder, "refs"))
    with open(os.path.join(folder, "refs", "main"), "w") as f:
        f.write(revision)
    path = os.path.join(folder, "snapshots", revision, "model.safetensors")
    os.makedirs(os.path.dirname(path))
    safetensors_torch.save_file(state, path)
    return path


def test_default_weights_come_from_timm_s_cache(torch_home, tmp_path, monkeypatch):
    cache = _hub_cache(monkeypatch, tmp_path / "hf")
    state = _random_timm_state("test_resnet", seed=2)
    path = _put_in_hub_cache(cache, "timm/test_resnet.r160_in1k", state)
    model = network.build_model("deeplabv3plus_tu-test_resnet", 3, 16)  # pretrained by default
    assert all(torch.equal(v, state[k]) for k, v in model.backbone.body.state_dict().items())
    # timm's test weights were trained on inputs normalised with 0.5 / 0.5: said where the origin is logged
    assert model.backbone_weights.startswith(f"{path} (note: trained on inputs normalised with mean (0.5, 0.5, 0.5)")


def test_default_weights_offline_say_which_file_and_where(torch_home, tmp_path, monkeypatch):
    cache = _hub_cache(monkeypatch, tmp_path / "hf")
    with pytest.raises(PretrainedWeightsError) as raised:
        network.build_model("deeplabv3plus_tu-test_resnet", 3, 16)
    assert str(raised.value) == (
        f"tu-test_resnet: no pretrained weights: model.safetensors of timm/test_resnet.r160_in1k is not in the "
        f"Hugging Face cache {cache}, and HF_HUB_OFFLINE is set; `hf download timm/test_resnet.r160_in1k "
        "model.safetensors` puts it there, or pass --pretrained_backbone PATH (a timm state_dict: .pth, .bin or "
        ".safetensors), or --no-pretrained_backbone to train from scratch")


def _with_random_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("name", ["test_byobnet", "test_efficientnet"])
def test_folding_batchnorm_keeps_timm_s_batchnorm_activations(name):
    """byobnet's ConvNormAct is conv + bn, where bn is timm's BatchNorm + activation: folding keeps its ReLU."""
    model = _with_random_batchnorm(network.build_model(f"deeplabv3plus_tu-{name}", 3, 16, pretrained_backbone=False))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        folded = fold_batchnorm(copy.deepcopy(model))
        got = folded(x)
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-4
    if name == "test_byobnet":
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


def test_sync_batchnorm_keeps_timm_s_activations_and_the_keys():
    model = _with_random_batchnorm(network.build_model("deeplabv3plus_tu-test_byobnet", 3, 16,
                                                       pretrained_backbone=False))
    synced = network.convert_sync_batchnorm(copy.deepcopy(model)).eval()
    assert not any(type(m) is torch.nn.BatchNorm2d or type(m).__name__ == "BatchNormAct2d" for m in synced.modules())
    assert list(synced.state_dict()) == list(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # eval mode: SyncBatchNorm computes as BatchNorm, on the CPU too
        assert torch.equal(synced(x), model(x))


def test_an_input_size_a_family_cannot_take_is_one_line():
    model = network.build_model("deeplabv3_tu-test_maxvit", 3, 32, pretrained_backbone=False).eval()
    with pytest.raises(TimmEncoderError, match=r"^timm's test_maxvit cannot take a 96x64 input: .*divisible"):
        model(torch.randn(1, 3, 64, 96))


def test_the_twelve_entries_do_not_import_timm():
    code = ("import sys, network; network.build_model('deeplabv3plus_mobilenet', 3, 16, pretrained_backbone=False); "
            "print('timm' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_the_record_rebuilds_the_encoder_with_its_options():
    model = network.build_model("deeplabv3_tu-test_vit", 3, 16, pretrained_backbone=False)
    record = network.encoder_record(model)
    assert record == {"name": "test_vit", "options": {"dynamic_img_size": True, "dynamic_img_pad": True},
                      "timm_version": timm.__version__}
    again = network.build_model("deeplabv3_tu-test_vit", 3, 16, pretrained_backbone=False,
                                timm_options=record["options"])
    again.load_state_dict(model.state_dict())  # strict: the same keys and shapes
    assert isinstance(again.backbone, TimmFeatures) and again.backbone.options == record["options"]
    assert network.encoder_record(network.build_model("deeplabv3plus_mobilenet", 3, pretrained_backbone=False)) is None


@pytest.mark.parametrize("name", [*FAMILIES, "test_mambaout", "test_vit"])
def test_the_first_convolution_is_a_plain_conv2d_that_takes_the_image(name):
    """What a generic first-convolution adaptation (other band counts) looks for, as in the 12 entries."""
    arch, output_stride = ("deeplabv3_tu", 16) if name == "test_vit" else ("deeplabv3plus_tu", 32)
    with torch.device("meta"):
        model = network.build_model(f"{arch}-{name}", 3, output_stride, pretrained_backbone=False)
    first = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert type(first) is torch.nn.Conv2d and first.in_channels == 3
