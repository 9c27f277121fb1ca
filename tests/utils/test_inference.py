"""BatchNorm folding and conv + activation fusion keep outputs; TTA identity returns the plain logits."""
import copy

import pytest
import torch

import network
from tools.make_reference_outputs import deterministic_state_dict
from utils.device import autocast
from utils.inference import FusedConvActivation, fold_batchnorm, fuse_conv_activations, predict_logits


@pytest.mark.parametrize("name", ["deeplabv3plus_mobilenet", "deeplabv3_resnet50", "deeplabv3plus_hrnetv2_32",
                                  "deeplabv3plus_xception"])
def test_folded_model_gives_the_same_outputs(name):
    model = network.build_model(name, 5, 16, pretrained_backbone=False).eval()
    model.load_state_dict(deterministic_state_dict(model))
    folded = fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()
                   if not isinstance(m, torch.nn.Identity)) or name.endswith("xception")
    x = torch.randn(1, 3, 129, 97)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-5


@pytest.mark.parametrize("amp", ["off", pytest.param("bf16", marks=pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="oneDNN has no bf16 convolutions on this CPU"))])
@pytest.mark.parametrize("name,expected_fused", [("deeplabv3plus_mobilenet", 42), ("deeplabv3_resnet50", 7),
                                                 ("deeplabv3plus_hrnetv2_32", 28)])
def test_fused_conv_activations_give_the_same_numbers(name, expected_fused, amp):
    """oneDNN applies ReLU/ReLU6 as the convolution writes its output: the same values, one pass fewer."""
    model = fold_batchnorm(network.build_model(name, 5, 16, pretrained_backbone=False).eval())
    model = model.to(memory_format=torch.channels_last)
    model.load_state_dict(deterministic_state_dict(model))
    fused = copy.deepcopy(model).requires_grad_(False)
    assert fuse_conv_activations(fused) == expected_fused
    assert sum(isinstance(m, FusedConvActivation) for m in fused.modules()) == expected_fused
    assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)) for m in fused.modules()) or name != \
        "deeplabv3plus_mobilenet"  # mobilenet's every activation follows a convolution in a Sequential
    x = torch.randn(2, 3, 65, 97).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(torch.device("cpu"), amp):
        assert torch.equal(model(x), fused(x))
        one, fused_one = model(x[:1]), fused(x[:1])  # fp32, one image: oneDNN may pick another kernel
    assert float((fused_one - one).abs().max() / one.abs().max()) < 1e-5


def test_trainable_convolutions_are_not_fused():
    model = fold_batchnorm(network.build_model("deeplabv3plus_mobilenet", 3, 16, pretrained_backbone=False).eval())
    assert fuse_conv_activations(model) == 0


def test_folding_refuses_a_training_model():
    with pytest.raises(ValueError, match="model.eval"):
        fold_batchnorm(network.build_model("deeplabv3_mobilenet", 3, 16, pretrained_backbone=False))


def test_single_scale_without_flip_is_the_plain_forward():
    model = network.build_model("deeplabv3plus_mobilenet", 4, 16, pretrained_backbone=False).eval()
    x = torch.randn(2, 3, 65, 81)
    with torch.no_grad():
        assert torch.equal(predict_logits(model, x, scales=[1.0], flip=False), model(x))
        probs = predict_logits(model, x, scales=[0.5, 1.0], flip=True)
    assert probs.shape == (2, 4, 65, 81)
    assert torch.allclose(probs.sum(1), torch.full((2, 65, 81), 4.0), atol=1e-4)  # 4 variants of softmax
