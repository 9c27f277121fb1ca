"""Record the original DeepLabV3Plus-Pytorch's outputs for every entry, for the equality tests.

Usage: python tools/make_reference_outputs.py --original PATH/TO/DeepLabV3Plus-Pytorch [--out FILE]

Both implementations have the same state_dict keys in the same order, so filling each tensor in
key order from one seeded generator (:func:`deterministic_state_dict`) gives both the same weights
without storing them. The fixture keeps, per case, the input seed and size and a strided sample
of the logits (every ``SAMPLE_STRIDE``-th pixel), enough to catch any architectural difference.
"""
import argparse
import importlib
import math
import sys
from typing import Dict, List, Tuple

import torch
from torch import nn

SAMPLE_STRIDE = 4
NUM_CLASSES = 21
DEFAULT_OUT = "tests/fixtures/original_outputs.pt"

# (entry name, output stride, input height, width). HRNet: the original needs multiples of 32.
CASES: List[Tuple[str, int, int, int]] = [
    (f"{arch}_{backbone}", stride, h, w)
    for arch in ("deeplabv3", "deeplabv3plus")
    for backbone, strides, (h, w) in (
        ("resnet50", (8, 16), (65, 97)),
        ("resnet101", (16,), (65, 97)),
        ("mobilenet", (8, 16), (65, 97)),
        ("xception", (8, 16), (129, 161)),  # its conv3/conv4 trim the map at dilation > 1
        ("hrnetv2_32", (4,), (64, 96)),
        ("hrnetv2_48", (4,), (64, 64)),
    )
    for stride in strides
]


def deterministic_state_dict(model: nn.Module, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Seeded values for every state_dict entry, in key order, scaled so activations stay finite."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = value.clone()
            continue
        noise = torch.randn(value.shape, generator=generator)
        if key.endswith("running_var"):
            state[key] = 1.0 + 0.5 * noise.abs()
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = 0.1 * noise
        elif value.dim() == 1:  # norm scales
            state[key] = 1.0 + 0.1 * noise
        else:
            fan_in = value[0].numel()
            state[key] = noise / math.sqrt(fan_in)
    return state


def case_input(height: int, width: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


def sample(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, :, ::SAMPLE_STRIDE, ::SAMPLE_STRIDE].contiguous()


def _original_model(modeling, name: str, output_stride: int) -> nn.Module:
    arch, backbone = name.split("_", 1)
    backbone = {"mobilenet": "mobilenetv2"}.get(backbone, backbone)
    # Call _load_model directly: the original's HRNet entries pass their arguments in swapped order.
    return modeling._load_model(arch, backbone, NUM_CLASSES, output_stride, False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", required=True, help="checkout of the original DeepLabV3Plus-Pytorch")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    sys.path.insert(0, args.original)
    modeling = importlib.import_module("network.modeling")
    records = []
    for name, stride, height, width in CASES:
        model = _original_model(modeling, name, stride).eval()
        model.load_state_dict(deterministic_state_dict(model))
        with torch.no_grad():
            logits = model(case_input(height, width))
        records.append({"name": name, "output_stride": stride, "size": (height, width), "sample": sample(logits)})
        print(f"{name} os{stride} {height}x{width}: |logits| max {logits.abs().max():.3g}")
    torch.save(records, args.out)
    print(f"wrote {len(records)} cases to {args.out}")


if __name__ == "__main__":
    main()
