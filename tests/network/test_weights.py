"""Pretrained weights: every supported format loads with equal outputs; hub cache, timm, COCO starts, errors.

Source models are built with random weights (torchvision ``weights=None``, timm ``pretrained=False``),
saved as their own libraries save them, then loaded into ours.
"""
import os

import pytest
import torch
import torchvision

import network
from network import PretrainedWeightsError, weights
from network.backbone import hrnetv2, mobilenetv2, resnet, xception
from network.weights import BACKBONE_SOURCES, COCO_SOURCES, hub_checkpoint_path, init_model_from

timm = pytest.importorskip("timm", reason="timm is a test dependency (requirements-dev.txt)")
TOL = 1e-5


def _save(state, path):
    torch.save(state, path)
    return str(path)


def _close(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) < TOL


def test_torchvision_resnet_loads_with_equal_logits(tmp_path):
    source = torchvision.models.resnet50(weights=None).eval()
    ours = resnet.resnet50(pretrained=_save(source.state_dict(), tmp_path / "r50.pth")).eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert _close(ours(x), source(x))


def test_torchvision_mobilenet_v2_keys_are_identical(tmp_path):
    source = torchvision.models.mobilenet_v2(weights=None)
    ours = mobilenetv2.mobilenet_v2(pretrained=_save(source.state_dict(), tmp_path / "m.pth"))
    for key, value in source.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


@pytest.mark.parametrize("width", [32, 48])
def test_timm_hrnet_converts_with_equal_features(tmp_path, width):
    source = timm.create_model(f"hrnet_w{width}", pretrained=False).eval()
    ours = hrnetv2.__dict__[f"hrnetv2_{width}"](pretrained=_save(source.state_dict(), tmp_path / "h.pth")).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        stem = source.act2(source.bn2(source.conv2(source.act1(source.bn1(source.conv1(x))))))
        expected = source.stages(stem)
        got = ours(x)
    assert len(got) == 4 and all(_close(g, e) for g, e in zip(got, expected))


def test_official_cls_hrnet_layout_converts(tmp_path):
    state = timm.create_model("hrnet_w32", pretrained=False).state_dict()  # official keys = timm's
    converted = weights.convert_state_dict(state, "cls_hrnet")
    assert "transition2.0.weight" in converted and not any(k.startswith("incre_modules.") for k in converted)
    hrnetv2.hrnetv2_32().load_state_dict(converted, strict=True)


def test_timm_legacy_xception_loads_with_equal_features(tmp_path):
    source = timm.create_model("legacy_xception", pretrained=False).eval()
    ours = xception.xception(pretrained=_save(source.state_dict(), tmp_path / "x.pth")).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert _close(torch.relu(ours.features(x)), source.forward_features(x))


def test_cadene_xception_with_last_linear_loads(tmp_path):
    state = xception.Xception().state_dict()
    state = {("last_linear." + k[3:] if k.startswith("fc.") else k): v for k, v in state.items()}
    model = network.deeplabv3plus_xception(output_stride=16, pretrained_backbone=_save(state, tmp_path / "c.pth"))
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])


def _torchvision_deeplab(tmp_path, depth=50):
    builder = getattr(torchvision.models.segmentation, f"deeplabv3_resnet{depth}")
    source = builder(weights=None, weights_backbone=None, num_classes=21, aux_loss=True).eval()
    return source, _save(source.state_dict(), tmp_path / "tv_deeplab.pth")


def test_torchvision_deeplabv3_whole_model_gives_equal_logits(tmp_path):
    source, path = _torchvision_deeplab(tmp_path)
    ours = network.deeplabv3_resnet50(num_classes=21, output_stride=8, pretrained_backbone=False)
    filled, initialised, origin = init_model_from(ours, "deeplabv3_resnet50", path)
    assert origin == path
    assert initialised == [] and len(filled) == len(ours.state_dict())
    ours.eval()
    x = torch.randn(1, 3, 65, 81)
    with torch.no_grad():
        assert _close(ours(x), source(x)["out"])


def test_torchvision_deeplabv3_into_plus_fills_aspp_and_classifier(tmp_path):
    source, path = _torchvision_deeplab(tmp_path)
    ours = network.deeplabv3plus_resnet50(num_classes=21, output_stride=16, pretrained_backbone=False)
    filled, initialised, _ = init_model_from(ours, "deeplabv3plus_resnet50", path)
    assert "classifier.aspp.project.0.weight" in filled and "classifier.classifier.3.weight" in filled
    assert torch.equal(ours.classifier.aspp.convs[1][0].weight, source.classifier[0].convs[1][0].weight)
    assert sorted({k.rsplit(".", 1)[0] for k in initialised}) == [
        "classifier.classifier.0", "classifier.classifier.1", "classifier.project.0", "classifier.project.1"]


def test_init_from_torchvision_coco_uses_the_hub_cache(torch_home, tmp_path):
    source, _ = _torchvision_deeplab(tmp_path, depth=101)
    path = hub_checkpoint_path(COCO_SOURCES["resnet101"].filename)
    os.makedirs(os.path.dirname(path))
    torch.save(source.state_dict(), path)
    ours = network.deeplabv3_resnet101(output_stride=8, pretrained_backbone=False)
    filled, initialised, origin = init_model_from(ours, "deeplabv3_resnet101", "torchvision_coco")
    assert origin == path  # the file actually read, for the log
    assert not initialised and torch.equal(ours.backbone.conv1.weight, source.backbone.conv1.weight)


def test_init_from_torchvision_coco_offline_says_what_to_fetch(torch_home):
    ours = network.deeplabv3plus_resnet50(pretrained_backbone=False)
    with pytest.raises(PretrainedWeightsError) as err:
        init_model_from(ours, "deeplabv3plus_resnet50", "torchvision_coco")
    message = str(err.value)
    assert COCO_SOURCES["resnet50"].url in message and os.path.dirname(hub_checkpoint_path("")) in message
    assert "no COCO weights" in message and "drop --init_from" in message
    with pytest.raises(PretrainedWeightsError, match="resnet50 and resnet101"):
        init_model_from(network.deeplabv3_mobilenet(pretrained_backbone=False), "deeplabv3_mobilenet",
                        "torchvision_coco")


def test_hrnet_without_any_source_says_where_to_put_the_file(torch_home):
    with pytest.raises(PretrainedWeightsError) as err:
        network.deeplabv3plus_hrnetv2_48(pretrained_backbone=True)
    message = str(err.value)
    assert f"hrnetv2_48_imagenet.pth is not in {os.path.dirname(hub_checkpoint_path(''))}" in message
    assert "timm/hrnet_w48.ms_in1k" in message and "--no-pretrained_backbone" in message


def test_hrnet_from_the_hub_cache_in_timm_format(torch_home):
    source = timm.create_model("hrnet_w32", pretrained=False)
    path = hub_checkpoint_path(BACKBONE_SOURCES["hrnetv2_32"].filename)
    os.makedirs(os.path.dirname(path))
    torch.save(source.state_dict(), path)
    model = network.deeplabv3plus_hrnetv2_32(pretrained_backbone=True)
    assert torch.equal(model.backbone.transition2[0].weight, source.transition2[2][0][0].weight)


def test_hrnet_through_timm_when_it_can_fetch(torch_home, monkeypatch):
    calls = []
    source = timm.create_model("hrnet_w32", pretrained=False)

    def fake_create_model(arch, pretrained=False, **kwargs):  # stands in for timm's hub download
        calls.append((arch, pretrained, kwargs.get("pretrained_cfg_overlay")))
        return source

    monkeypatch.setattr(weights, "_hub_reachable", lambda: True)
    monkeypatch.setattr(timm, "create_model", fake_create_model)
    model = network.deeplabv3_hrnetv2_32(pretrained_backbone=True)
    assert calls == [("hrnet_w32", True, {"tag": "ms_in1k"})]
    assert torch.equal(model.backbone.stage4[0].branches[3][0].conv2.weight,
                       source.stage4[0].branches[3][0].conv2.weight)


def test_download_failure_is_one_clear_error(torch_home):
    with pytest.raises(PretrainedWeightsError, match=r"resnet50: no ImageNet weights: resnet50-19c8e357.pth or "
                                                     r"resnet50-0676ba61.pth is not in .* the download failed .*put "
                                                     r"the file there \(download https://.*--no-pretrained_backbone"):
        network.deeplabv3plus_resnet50(pretrained_backbone=True)


def test_the_originals_file_and_torchvisions_later_name_both_count(torch_home):
    """A user of the original has resnet50-19c8e357.pth in the cache; torchvision today names it -0676ba61."""
    source = torchvision.models.resnet50(weights=None)
    for name in (BACKBONE_SOURCES["resnet50"].filename, *BACKBONE_SOURCES["resnet50"].aliases):
        path = hub_checkpoint_path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(source.state_dict(), path)
        model = network.build_model("deeplabv3plus_resnet50", 21, 16)
        assert model.backbone_weights == path and torch.equal(model.backbone.conv1.weight, source.conv1.weight)
        os.remove(path)
    assert BACKBONE_SOURCES["resnet50"].url == "https://download.pytorch.org/models/resnet50-19c8e357.pth"


def test_the_weight_files_are_torchvision_s():
    """The file names written in network/weights.py (so that importing it needs no torchvision) are the ones the
    installed torchvision's weight enums download."""
    enums = {"resnet18": "ResNet18", "resnet34": "ResNet34", "resnet50": "ResNet50", "resnet101": "ResNet101",
             "resnet152": "ResNet152", "resnext50_32x4d": "ResNeXt50_32X4D", "resnext101_32x8d": "ResNeXt101_32X8D",
             "wide_resnet50_2": "Wide_ResNet50_2", "wide_resnet101_2": "Wide_ResNet101_2",
             "mobilenet_v2": "MobileNet_V2"}
    assert sorted(enums) == sorted(n for n, source in BACKBONE_SOURCES.items() if source.fmt == "torchvision")
    for name, enum in enums.items():
        later = getattr(torchvision.models, f"{enum}_Weights").IMAGENET1K_V1.url.rsplit("/", 1)[-1]
        assert later in (BACKBONE_SOURCES[name].filename, *BACKBONE_SOURCES[name].aliases), name
    segmentation = torchvision.models.segmentation
    assert COCO_SOURCES["resnet50"].url == segmentation.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.url
    assert COCO_SOURCES["resnet101"].url == segmentation.DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1.url


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pth"
    torch.save(mobilenetv2.MobileNetV2().state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(PretrainedWeightsError, match="weights file .*broken.pth is a truncated or damaged zip"):
        network.deeplabv3_mobilenet(pretrained_backbone=str(path))


def test_wrong_backbone_file_is_a_clear_error(tmp_path):
    path = _save(hrnetv2.hrnetv2_32().state_dict(), tmp_path / "hrnet.pth")
    with pytest.raises(PretrainedWeightsError, match="do not fit backbone mobilenet_v2"):
        network.deeplabv3_mobilenet(pretrained_backbone=path)
    with pytest.raises(PretrainedWeightsError, match="no tensor fits deeplabv3_mobilenet"):
        init_model_from(network.deeplabv3_mobilenet(pretrained_backbone=False), "deeplabv3_mobilenet", path)


def test_missing_local_file_is_a_clear_error(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        network.deeplabv3_resnet50(pretrained_backbone=str(tmp_path / "nope.pth"))


def test_convert_tool_writes_backbone_and_whole_model_files(tmp_path, capsys):
    from tools import convert_weights

    hrnet = timm.create_model("hrnet_w32", pretrained=False)
    src = _save(hrnet.state_dict(), tmp_path / "timm_hrnet.pth")
    assert convert_weights.main([src, str(tmp_path / "bb.pth")]) == 0
    assert "timm_hrnet -> backbone state_dict" in capsys.readouterr().out
    model = network.deeplabv3plus_hrnetv2_32(pretrained_backbone=str(tmp_path / "bb.pth"))
    assert torch.equal(model.backbone.transition3[0].weight, hrnet.transition3[3][0][0].weight)

    source, path = _torchvision_deeplab(tmp_path)
    out = tmp_path / "ours.pth"
    assert convert_weights.main([path, str(out), "--model", "deeplabv3_resnet50", "--output_stride", "8"]) == 0
    checkpoint = torch.load(out, weights_only=True)
    ours = network.deeplabv3_resnet50(output_stride=8, pretrained_backbone=False)
    ours.load_state_dict(checkpoint["model_state"], strict=True)
    ours.eval()
    x = torch.randn(1, 3, 49, 57)
    with torch.no_grad():
        assert _close(ours(x), source(x)["out"])
    assert convert_weights.main([str(tmp_path / "missing.pth"), str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert convert_weights.main([path, str(tmp_path / "mobile.pth"), "--model", "deeplabv3plus_mobilenet"]) == 1
    assert capsys.readouterr().err.strip().endswith("its backbone fits none of deeplabv3plus_mobilenet's (another "
                                                    "backbone: its head alone would be half filled); give the --model "
                                                    "it was trained as")


def test_convert_tool_refuses_to_write_over_its_input(tmp_path, capsys, monkeypatch):
    from tools import convert_weights

    src = _save(network.deeplabv3plus_mobilenet(pretrained_backbone=False).backbone.state_dict(), tmp_path / "bb.pth")
    before = open(src, "rb").read()
    monkeypatch.chdir(tmp_path)
    assert convert_weights.main([src, "bb.pth"]) == 1
    assert capsys.readouterr().err.strip() == (f"error: OUT bb.pth is the same file as IN {src}: writing it would "
                                               f"destroy that input; write to another file, e.g. "
                                               f"{tmp_path / 'bb'}_converted.pth")
    assert open(src, "rb").read() == before
    (tmp_path / "notes.txt").write_text("mine")
    assert convert_weights.main([src, "notes.txt"]) == 1  # not a checkpoint: the user's own file
    assert capsys.readouterr().err.strip().startswith("error: OUT notes.txt exists and is not a PyTorch file")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert convert_weights.main([src, "out.pth", "--model", "deeplabv3plus_mobilenet", "--num_classes", "0"]) == 1
    assert capsys.readouterr().err.strip() == "error: --num_classes must be positive, not 0"


def test_convert_tool_names_a_folder_input_and_an_unwritable_output(tmp_path, capsys):
    from tools import convert_weights

    assert convert_weights.main([str(tmp_path), str(tmp_path / "out.pth")]) == 1
    assert capsys.readouterr().err.strip() == f"error: weights file {tmp_path} is a folder, not a file"
    src = _save(network.deeplabv3plus_mobilenet(pretrained_backbone=False).backbone.state_dict(), tmp_path / "bb.pth")
    (tmp_path / "a_file").write_text("")
    assert convert_weights.main([src, str(tmp_path / "a_file" / "out.pth")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot write checkpoint {tmp_path / 'a_file' / 'out.pth'}") and "\n" not in err
    for folder in (str(tmp_path / "new") + os.sep, str(tmp_path)):  # a folder to make, or one that is there
        assert convert_weights.main([src, folder]) == 1
        assert capsys.readouterr().err == (f"error: OUT {folder} is a folder; give a file name, e.g. "
                                           f"{os.path.join(folder, 'bb_converted.pth')}\n")
    assert not os.path.exists(tmp_path / "new")
