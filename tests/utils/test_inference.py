"""BatchNorm folding keeps outputs; TTA identity returns the plain logits."""
import copy

import pytest
import torch

import network
from tools.make_reference_outputs import deterministic_state_dict
from utils.inference import fold_batchnorm, predict_logits


@pytest.mark.parametrize("name", ["deeplabv3plus_mobilenet", "deeplabv3_resnet50", "deeplabv3plus_hrnetv2_32",
                                  "deeplabv3plus_xception"])
def test_folded_model_gives_the_same_outputs(name):
    model = network.build_model(name, 5, 16).eval()
    model.load_state_dict(deterministic_state_dict(model))
    folded = fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()
                   if not isinstance(m, torch.nn.Identity)) or name.endswith("xception")
    x = torch.randn(1, 3, 129, 97)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-5


def test_folding_refuses_a_training_model():
    with pytest.raises(ValueError, match="model.eval"):
        fold_batchnorm(network.build_model("deeplabv3_mobilenet", 3, 16))


def test_single_scale_without_flip_is_the_plain_forward():
    model = network.build_model("deeplabv3plus_mobilenet", 4, 16).eval()
    x = torch.randn(2, 3, 65, 81)
    with torch.no_grad():
        assert torch.equal(predict_logits(model, x, scales=[1.0], flip=False), model(x))
        probs = predict_logits(model, x, scales=[0.5, 1.0], flip=True)
    assert probs.shape == (2, 4, 65, 81)
    assert torch.allclose(probs.sum(1), torch.full((2, 65, 81), 4.0), atol=1e-4)  # 4 variants of softmax
