"""main.py starts each entry's backbone as the original does: ImageNet weights for ResNet, MobileNetV2 and Xception
unless told otherwise, none for HRNet; never a silent fall-back to random weights, and the log says which."""
import inspect
import os

import pytest
import torch
import torchvision

import main as train_script
import network
from network.weights import BACKBONE_SOURCES, hub_checkpoint_path
from tests.helpers import write_voc

MODEL = "deeplabv3plus_mobilenet"


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    write_voc(root / "data")
    return root


def _args(voc, *extra):
    return ["--data_root", str(voc / "data"), "--model", MODEL, "--crop_size", "32", "--batch_size", "2",
            "--num_workers", "0", "--total_itrs", "1", "--val_interval", "1", "--checkpoint_dir", str(voc / "ck"),
            "--results_dir", str(voc / "res"), "--amp", "off", *extra]


def _cache_mobilenet(seed: int = 3) -> torchvision.models.MobileNetV2:
    torch.manual_seed(seed)
    source = torchvision.models.mobilenet_v2(weights=None)
    path = hub_checkpoint_path(BACKBONE_SOURCES["mobilenet_v2"].filename)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(source.state_dict(), path)
    return source


def test_no_flag_and_an_empty_cache_offline_is_one_line_naming_the_file_and_the_ways_out(voc, torch_home, capsys):
    assert train_script.main(_args(voc)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: mobilenet_v2: no ImageNet weights")
    assert f"mobilenet_v2-b0353104.pth is not in {torch_home / 'hub' / 'checkpoints'}" in err
    assert "put the file there (download https://download.pytorch.org/models/mobilenet_v2-b0353104.pth)" in err
    assert "--no-pretrained_backbone" in err


def test_no_flag_starts_from_the_cached_file_and_says_so(voc, torch_home, capsys):
    source = _cache_mobilenet()
    opts = train_script.get_argparser().parse_args(_args(voc))
    train_script.resolve_architecture(opts, torch.device("cpu"))
    opts.num_classes = 21
    _, model = train_script.build_training_model(opts, train_script.DistEnv(), torch.device("cpu"))
    first_conv = model.backbone.low_level_features[0][0].weight
    assert torch.equal(first_conv, source.features[0][0].weight)  # the first convolution is the file's
    path = hub_checkpoint_path("mobilenet_v2-b0353104.pth")
    assert capsys.readouterr().out.count("Backbone weights:") == 1
    assert train_script.main(_args(voc)) == 0
    out = capsys.readouterr().out
    assert out.count("Backbone weights:") == 1
    assert f"Backbone weights: ImageNet, from {path} (the default, as in the original" in out


def test_no_pretrained_backbone_trains_from_scratch_and_says_so(voc, torch_home, capsys):
    assert train_script.main(_args(voc, "--no-pretrained_backbone")) == 0
    assert "Backbone weights: from scratch (--no-pretrained_backbone)" in capsys.readouterr().out


def test_hrnet_starts_from_scratch_by_default_as_in_the_original(voc, torch_home, capsys):
    def pretrained_by_default(name: str) -> bool:  # the entry's own default, as the original's entries have it
        return inspect.signature(network.MODELS[name]).parameters["pretrained_backbone"].default

    assert not pretrained_by_default("deeplabv3plus_hrnetv2_32")
    assert all(pretrained_by_default(f"deeplabv3plus_{b}") for b in ("resnet50", "mobilenet", "xception"))
    args = _args(voc)
    args[args.index(MODEL)] = "deeplabv3plus_hrnetv2_32"
    assert train_script.main(args) == 0  # offline, empty cache: nothing is fetched
    assert "Backbone weights: from scratch (deeplabv3plus_hrnetv2_32 has no ImageNet weights by default, as in " \
           "the original" in capsys.readouterr().out


def test_a_checkpoint_replaces_the_backbone_so_nothing_is_fetched(voc, torch_home, capsys):
    assert train_script.main(_args(voc, "--no-pretrained_backbone")) == 0
    ckpt = str(voc / "ck" / f"latest_{MODEL}_voc_os16.pth")
    capsys.readouterr()
    assert train_script.main(_args(voc, "--test_only", "--ckpt", ckpt)) == 0  # offline, empty cache
    assert f"Backbone weights: from --ckpt {ckpt}\n" in capsys.readouterr().out
    assert train_script.main(_args(voc, "--test_only", "--ckpt", ckpt, "--pretrained_backbone")) == 0
    out, err = capsys.readouterr()
    assert f"Backbone weights: from --ckpt {ckpt}\n" in out
    assert ("warning: --pretrained_backbone is not used: the weights of --ckpt or --init_from replace the "
            "backbone's (nothing is fetched)\n") in err


def test_init_from_fetches_no_backbone_and_names_the_file_it_read(voc, torch_home, capsys):
    """The own-data recipe offline: --init_from a trained model with an entry whose default is ImageNet weights
    (MobileNetV2), an empty cache and no network; the log names the file, not ImageNet."""
    torch.manual_seed(0)
    start = voc / "start.pth"
    torch.save({"model_state": network.build_model(MODEL, 21, 16, pretrained_backbone=False).state_dict()}, start)
    assert train_script.main(_args(voc, "--init_from", str(start), "--checkpoint_dir", str(voc / "ck_init"))) == 0
    out = capsys.readouterr().out
    assert f"Backbone weights: from --init_from {start}\n" in out and "ImageNet" not in out
    assert f"--init_from {start}: filled 356 of 356 tensors" in out
    assert not os.path.exists(torch_home / "hub" / "checkpoints")  # nothing fetched, nothing cached
