"""BatchNorm folding and conv + activation fusion keep outputs; TTA identity returns the plain logits."""
import copy

import pytest
import torch

import network
from tools.make_reference_outputs import deterministic_state_dict
from utils.runtime.device import autocast
from network.fusion import FusedConvActivation, fold_batchnorm, fuse_conv_activations
from utils.inference.predictor import (InferenceRecipe, InputTooSmallError, SegmentationPredictor, predict_logits,
                                       smallest_side)


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
    """oneDNN applies ReLU/ReLU6 as the convolution writes its output, one pass fewer. The values are the same up to
    the rounding of another kernel: oneDNN may pick one for the fused call (with one thread, or for one image, it
    does here), so they agree to 1e-5 of the logits' scale in fp32 and to a bf16 step in bf16."""
    model = fold_batchnorm(network.build_model(name, 5, 16, pretrained_backbone=False).eval())
    model = model.to(memory_format=torch.channels_last)
    model.load_state_dict(deterministic_state_dict(model))
    fused = copy.deepcopy(model).requires_grad_(False)
    assert fuse_conv_activations(fused) == expected_fused
    assert sum(isinstance(m, FusedConvActivation) for m in fused.modules()) == expected_fused
    assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)) for m in fused.modules()) or name != \
        "deeplabv3plus_mobilenet"  # mobilenet's every activation follows a convolution in a Sequential
    x = torch.randn(2, 3, 65, 97).contiguous(memory_format=torch.channels_last)
    tolerance = 1e-5 if amp == "off" else 2 ** -7
    with torch.inference_mode(), autocast(torch.device("cpu"), amp):
        for batch in (x, x[:1]):
            plain, fused_out = model(batch).float(), fused(batch).float()
            assert float((fused_out - plain).abs().max() / plain.abs().max()) < tolerance
            assert float((fused_out.argmax(1) == plain.argmax(1)).float().mean()) > 0.999


def test_trainable_convolutions_are_not_fused():
    model = fold_batchnorm(network.build_model("deeplabv3plus_mobilenet", 3, 16, pretrained_backbone=False).eval())
    assert fuse_conv_activations(model) == 0


def test_folding_is_pytorchs_own_fusion():
    """Each Conv2d + BatchNorm2d pair becomes exactly what torch.nn.utils.fuse_conv_bn_eval makes of it."""
    torch.manual_seed(0)
    model = network.build_model("deeplabv3plus_mobilenet", 3, 16, pretrained_backbone=False).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    stem_conv, stem_bn = model.backbone.low_level_features[0][0], model.backbone.low_level_features[0][1]
    expected = torch.nn.utils.fuse_conv_bn_eval(stem_conv, stem_bn)
    folded = fold_batchnorm(copy.deepcopy(model)).backbone.low_level_features[0]
    assert isinstance(folded[1], torch.nn.Identity)
    assert torch.equal(folded[0].weight, expected.weight) and torch.equal(folded[0].bias, expected.bias)


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


class _ShapeRecorder(torch.nn.Module):
    """Records the spatial size of every input; scores say 'class 1' on the left half of what it sees."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        scores = torch.zeros(x.shape[0], 2, *x.shape[-2:])
        scores[:, 1] = 1.0
        return scores


def test_crop_val_with_windows_slides_over_the_resized_image():
    """--crop_val --slide: the image is resized to the short side first, the windows are real crops of it (never
    upscaled windows), and the labels come back at the input's size."""
    model = _ShapeRecorder()
    recipe = InferenceRecipe(slide=True, window=64, stride=32, short_side=100)
    labels = SegmentationPredictor(model, 2, recipe).labels(torch.zeros(1, 3, 200, 300))
    assert labels.shape == (1, 200, 300) and bool((labels == 1).all())
    assert model.seen and set(model.seen) == {(64, 64)}  # windows of the 100x150 image


@pytest.mark.parametrize("make_model", [
    lambda: network.build_model("deeplabv3plus_mobilenet", 3, 16, pretrained_backbone=False).eval(),
    lambda: torch.nn.Sequential(torch.nn.Conv2d(3, 2, 9), torch.nn.Upsample(scale_factor=1.0))])
def test_an_image_too_small_is_said_in_our_words_with_the_smallest_size(make_model):
    predictor = SegmentationPredictor(make_model(), 3, InferenceRecipe(scales=(0.5, 1.0)))
    with pytest.raises(InputTooSmallError) as err, torch.inference_mode():
        predictor.labels(torch.zeros(1, 3, 1, 1))
    message = str(err.value)
    smallest = smallest_side(predictor.model, lambda side: torch.zeros(1, 3, side, side))
    assert message == (f"an image of 1x1 is smaller than this model takes at the smallest scale 0.5: at least "
                       f"{2 * smallest}x{2 * smallest} pixels")
    assert "Calculated padded" not in message and "scales" not in message.split(":")[0]


def test_smallest_side_is_found_by_trying():
    conv = torch.nn.Conv2d(3, 1, 9)  # takes 9x9 and up
    assert smallest_side(conv, lambda side: torch.zeros(1, 3, side, side)) == 9


def test_too_small_names_the_crop_size_or_window_that_cut_the_image_down():
    conv = torch.nn.Conv2d(3, 2, 9)  # takes 9x9 and up
    windows = SegmentationPredictor(conv, 2, InferenceRecipe(slide=True, window=6, stride=4))
    with pytest.raises(InputTooSmallError, match=r"^--window 6 is smaller than this model takes: at least 9x9 pixels$"):
        windows.labels(torch.zeros(1, 3, 40, 30))
    resized = SegmentationPredictor(conv, 2, InferenceRecipe(short_side=5))
    with pytest.raises(InputTooSmallError, match=r"^--crop_size 5 \(--crop_val\) is smaller than this model takes"):
        resized.labels(torch.zeros(1, 3, 40, 30))
