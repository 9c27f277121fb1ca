"""Does mixed precision or channels_last change what a model learns? One model per setting, same batches.

Every setting starts from the same weights and trains on the same demo batches. The script reports:
- BN@1: how far the BatchNorm running statistics are from the fp32 run after one training-mode forward
  pass from identical weights, in units of the fp32 statistics (only the kernels differ: about 1e-5 for
  fp32+cl and 0.05 for bf16 on the CPU);
- the training loss at the first and last step;
- the validation mean IoU of each trained model, evaluated in every setting's precision and layout.

It was written for README "Known issues": on an H100, `--amp fp16 --channels_last` training reached a
normal loss but evaluated to mostly background. A training-side fault shows as a large BN@1 or a low
mean IoU in every evaluation column of that row; an evaluation-side fault shows as a low column for the
fp32 row. The "+bn-native" settings run BatchNorm on PyTorch's own kernels instead of cuDNN, whose
channels_last training kernel is its "persistent" mode, documented as range-limited.

Usage: python tools/check_precision.py [--device cuda] [--model deeplabv3plus_hrnetv2_48] [--steps 60]
CUDA default settings: fp32, fp32+cl, bf16, bf16+cl, fp16, fp16+cl and the two +bn-native variants;
on the CPU: fp32, fp32+cl, bf16, bf16+cl (fp16 autocast is CUDA-only here).
"""
import argparse
import copy
import itertools
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":  # before torch loads (seconds): Ctrl-C or SIGTERM then ends it in one line
    from utils.io.stop_signals import stop_quietly_while_starting
    stop_quietly_while_starting()

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils import data  # noqa: E402

import main as trainer  # noqa: E402
import network  # noqa: E402
from datasets import make_demo_dataset  # noqa: E402
from datasets.demo import demo_data_root  # noqa: E402
from datasets.sampling import SeededSamples, ShardedRandomSampler  # noqa: E402
from metrics import StreamSegMetrics  # noqa: E402
from utils.io.atomic import atomic_write, path_state  # noqa: E402
from utils.io.stop_signals import exit_keeping_status  # noqa: E402
from utils.runtime.device import autocast  # noqa: E402
from utils.runtime.interrupts import run_stoppable  # noqa: E402
from utils.loss import build_criterion  # noqa: E402
from utils.runtime.training import build_sgd, train_step  # noqa: E402
from utils.utils import set_bn_momentum  # noqa: E402


@dataclass(frozen=True)
class Setting:
    """One way to run the model: autocast dtype, memory format, and whether BatchNorm may use cuDNN."""

    name: str
    amp: str
    channels_last: bool
    cudnn_bn: bool = True


SETTINGS = {s.name: s for s in (
    Setting("fp32", "off", False), Setting("fp32+cl", "off", True),
    Setting("bf16", "bf16", False), Setting("bf16+cl", "bf16", True),
    Setting("fp16", "fp16", False), Setting("fp16+cl", "fp16", True),
    Setting("bf16+cl+bn-native", "bf16", True, False), Setting("fp16+cl+bn-native", "fp16", True, False),
)}
CPU_DEFAULT = ("fp32", "fp32+cl", "bf16", "bf16+cl")


def batchnorm_without_cudnn(model: nn.Module) -> None:
    """Make every BatchNorm of ``model`` run with cuDNN switched off (its backward follows the forward's choice)."""
    def off(module, args):
        torch.backends.cudnn.enabled = False

    def on(module, args, output):
        torch.backends.cudnn.enabled = True

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.register_forward_pre_hook(off)
            m.register_forward_hook(on)


def batchnorm_stats(model: nn.Module) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    return {name: (m.running_mean.detach().float().cpu().clone(), m.running_var.detach().float().cpu().clone())
            for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def worst_deviation(stats, reference) -> Tuple[float, str]:
    """The largest change of a running mean or variance against the reference, in units of the reference:
    |mean - ref_mean| / ref_std and |var - ref_var| / ref_var, over all channels; and where it is."""
    worst, where = 0.0, ""
    for name, (mean, var) in stats.items():
        ref_mean, ref_var = reference[name]
        for kind, dev in (("mean", (mean - ref_mean).abs() / ref_var.sqrt()), ("var", (var - ref_var).abs() / ref_var)):
            dev = float(dev.max())
            if not dev <= worst:  # NaN counts as worst
                worst, where = dev, f"{name}.running_{kind}"
    return worst, where


def first_step_statistics(model: nn.Module, setting: Setting, images: torch.Tensor,
                          device: torch.device) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """BatchNorm running statistics after one training-mode forward of ``images`` from ``model``'s weights.

    Dropout is off for this probe: its masks follow the memory layout, which would hide kernel differences.
    """
    probe = copy.deepcopy(model).train()
    for m in probe.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    images = images.to(device)
    if setting.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(device, setting.amp):
        probe(images)
    return batchnorm_stats(probe)


def options(args, root: str, setting: Setting, device: torch.device) -> argparse.Namespace:
    """main.py's options for ``setting``, resolved as main.py resolves them before a run."""
    opts = trainer.get_argparser().parse_args([
        "--dataset", "demo", "--data_root", root, "--model", args.model, "--crop_size", str(args.crop),
        "--amp", setting.amp, "--no-pretrained_backbone", "--device", device.type,
        "--channels_last" if setting.channels_last else "--no-channels_last"])
    trainer.configure(opts, trainer.DistEnv(), device, log=lambda *lines, **kwargs: None)
    opts.num_classes = 21
    return opts


def first_batches(train_dst: data.Dataset, steps: int, batch: int,
                  seed: int) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """The first ``steps`` training batches, drawn once so every setting sees the same ones."""
    sampler = ShardedRandomSampler(len(train_dst), batch, 0, 1, seed)
    loader = data.DataLoader(SeededSamples(train_dst, seed), sampler=sampler, batch_size=batch)
    return list(itertools.islice(loader, steps))


def train(args, setting: Setting, batches, device: torch.device) -> Tuple[nn.Module, List[float], dict]:
    torch.manual_seed(args.seed)
    model = network.build_model(args.model, 21, 16, pretrained_backbone=False)
    set_bn_momentum(model.backbone, 0.1)
    model.to(device).train()
    if setting.channels_last:
        model.to(memory_format=torch.channels_last)
    if not setting.cudnn_bn:
        batchnorm_without_cudnn(model)
    optimizer = build_sgd([{"params": model.parameters()}], args.lr, 1e-4, device)
    scaler = torch.amp.GradScaler(device.type, enabled=setting.amp == "fp16")
    criterion = build_criterion("cross_entropy")
    stats = first_step_statistics(model, setting, batches[0][0], device)
    losses = [train_step(model, optimizer, scaler, criterion, images, labels, device, setting.amp, setting.channels_last)
              for images, labels in batches]
    return model, losses, stats


def evaluate(model: nn.Module, opts, val_loader, device: torch.device) -> float:
    model.to(memory_format=torch.channels_last if opts.channels_last else torch.contiguous_format)
    metrics = StreamSegMetrics(21)
    opts.num_classes = 21
    score, _ = trainer.evaluate(opts, trainer.build_predictor(opts, model, device), val_loader, device, metrics)
    return score["Mean IoU"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="deeplabv3plus_hrnetv2_48")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=None)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--num_val", type=int, default=24)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    before = path_state(args.json) if args.json else None
    return run_stoppable(lambda: measure(args), lambda stop: stop.say_about(args.json, before) if args.json
                         else stop.say("nothing more is measured"))


def measure(args: argparse.Namespace) -> int:
    """Train and evaluate with each setting of ``args``, print the table and write --json; the exit status."""
    device = torch.device(args.device)
    names = args.settings or (list(SETTINGS) if device.type == "cuda" else CPU_DEFAULT)
    settings = [SETTINGS[n] for n in names]
    if settings[0].name != "fp32":
        settings.insert(0, SETTINGS["fp32"])  # the reference
    eval_settings = [s for s in settings if s.cudnn_bn]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, {args.model}, crop {args.crop}, batch {args.batch}, "
          f"{args.steps} steps, lr {args.lr}")

    with tempfile.TemporaryDirectory() as root:
        make_demo_dataset(demo_data_root(root), num_train=args.steps * args.batch, num_val=args.num_val,
                          seed=args.seed)
        train_dst, val_dst = trainer.get_dataset(options(args, root, settings[0], device))
        batches = first_batches(train_dst, args.steps, args.batch, args.seed)
        val_loader = data.DataLoader(val_dst, batch_size=1)
        rows, reference = {}, None
        for setting in settings:
            model, losses, stats = train(args, setting, batches, device)
            reference = reference or stats
            deviation, layer = worst_deviation(stats, reference)
            ious = {e.name: evaluate(copy.deepcopy(model), options(args, root, e, device), val_loader, device)
                    for e in eval_settings}
            rows[setting.name] = {"loss_first": losses[0], "loss_last": losses[-1], "bn_dev_step1": deviation,
                                  "bn_dev_layer": layer, "mean_iou": ious}
            print(f"  {setting.name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}, BN@1 {deviation:.1e}"
                  + (f" ({layer})" if layer else "") + ", mIoU " + " ".join(f"{v:.3f}" for v in ious.values()),
                  flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()

    width = max(len(s.name) for s in settings)
    print(f"\n{'trained as':{width}s} {'loss@1':>7s} {'loss@N':>7s} {'BN@1':>8s}   mean IoU evaluated as: "
          + "  ".join(e.name for e in eval_settings))
    for setting in settings:
        r = rows[setting.name]
        print(f"{setting.name:{width}s} {r['loss_first']:7.3f} {r['loss_last']:7.3f} {r['bn_dev_step1']:8.1e}   "
              + "  ".join(f"{r['mean_iou'][e.name]:{len(e.name)}.3f}" for e in eval_settings))
    if args.json:
        with atomic_write(args.json) as f:  # a stopped run never leaves half a file over an earlier one
            f.write(json.dumps({"device": name, "torch": torch.__version__, "args": vars(args), "rows": rows},
                               indent=1).encode())
    return 0


if __name__ == "__main__":
    exit_keeping_status(main())
