"""The SGD update of a channels_last model on the CPU: PyTorch's default loop, torch.optim.SGD's fused step and
main.py's (MemoryOrderSGD), taking turns in one run.

Usage: python bench/sgd.py [--model deeplabv3plus_hrnetv2_48] [--rounds 4] [--steps 5]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import network  # noqa: E402
from utils.runtime.device import hardware_name  # noqa: E402
from utils.runtime.training import MOMENTUM, MemoryOrderSGD  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplabv3plus_hrnetv2_48")
    parser.add_argument("--rounds", type=int, default=4, help="turns of each optimizer")
    parser.add_argument("--steps", type=int, default=5, help="updates timed per turn")
    args = parser.parse_args()
    model = network.build_model(args.model, 21, 16, pretrained_backbone=False)
    params = list(model.to(memory_format=torch.channels_last).parameters())
    for param in params:
        param.grad = torch.randn_like(param)
    common = dict(lr=1e-3, momentum=MOMENTUM, weight_decay=1e-4)
    optimizers = {"PyTorch's default loop": torch.optim.SGD(params, foreach=False, **common),
                  "torch.optim.SGD fused": torch.optim.SGD(params, fused=True, **common),
                  "MemoryOrderSGD (main.py)": MemoryOrderSGD(params, fused=True, **common)}
    times = {name: [] for name in optimizers}
    for optimizer in optimizers.values():  # momentum buffers made, first-call costs paid
        optimizer.step()
    for _ in range(args.rounds):
        for name, optimizer in optimizers.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                optimizer.step()
            times[name].append((time.perf_counter() - start) / args.steps)
    print(f"{hardware_name(torch.device('cpu'))}, torch {torch.__version__}; {args.model}, "
          f"{sum(p.numel() for p in params) / 1e6:.1f}M channels_last parameters (best of {args.rounds}):")
    slowest = max(min(seconds) for seconds in times.values())
    for name, seconds in times.items():
        print(f"{name:26s} {min(seconds) * 1000:6.1f} ms   {slowest / min(seconds):.2f}x")


if __name__ == "__main__":
    main()
