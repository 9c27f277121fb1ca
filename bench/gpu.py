"""Every GPU measurement of the training-speed targets, in one run of at most 8 minutes on one GPU.

Usage (CUDA): python bench/gpu.py --original PATH/TO/DeepLabV3Plus-Pytorch [--parts ...] [--budget 480]
Check it on the CPU first (tiny sizes, the same code paths): python bench/gpu.py --device cpu --tiny --original PATH

Prints the GPU, torch, CUDA and cuDNN versions and a measured bf16 matmul peak, then, part by part (--parts):
- step: the training step (deeplabv3plus_hrnetv2_48, crop 513, batch 8) per precision and layout, with and
  without cuDNN autotuning, and with fused SGD: steady images/s, the warm-up's seconds, peak memory allocated and
  reserved during the warm-up and after it, TFLOP/s and the share of the matmul peak. The first row is the
  original's step (fp32, NCHW, no autotuning: its main.py does not turn cuDNN's benchmark on).
- runs: whole main.py runs, the original's (fp32) and ours (defaults), 60 and 300 iterations of crop 512, batch 8,
  each ending with one validation of 8 images (--crop_val) and its checkpoints, on the same demo data.
- predict: whole predict.py runs, the original's and ours (defaults), on a folder of 500x375 JPEGs.
- loader: training batches/s of the DataLoader with the original's 2 workers and with ours (cores per GPU - 1).
- infer: inference images/s per precision and layout (what --amp auto picks for evaluation and predict.py).
- compile: torch.compile of the training step, without and with CUDA graphs: compile seconds and images/s.
A part that would start after --budget seconds is skipped with a line saying so. The targets are in the README.
"""
import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import network  # noqa: E402
from bench import predict as predict_bench  # noqa: E402
from bench import train as train_bench  # noqa: E402
from bench._timing import setting_skip_reason  # noqa: E402
from bench.original import demo_voc  # noqa: E402
from utils.runtime.device import hardware_name, resolve_num_workers  # noqa: E402
from network.fusion import fold_batchnorm  # noqa: E402
from utils.inference.predictor import predict_logits  # noqa: E402
from utils.loss import build_criterion  # noqa: E402
from utils.runtime.run_timer import peak_memory, restart_peak_memory, synchronize, time_calls  # noqa: E402
from utils.runtime.training import train_step  # noqa: E402

PARTS = ("step", "runs", "predict", "loader", "infer", "compile")


@dataclass(frozen=True)
class Sizes:
    """What is measured: the full sizes for a GPU, tiny ones for checking the script on a CPU."""

    model: str = "deeplabv3plus_hrnetv2_48"
    crop: int = 513
    run_crop: int = 512  # the original's HRNet needs sides that are multiples of 32
    batch: int = 8
    warmup: int = 3
    steps: int = 10
    run_iters: tuple = (60, 300)
    predict_model: str = "deeplabv3plus_mobilenet"
    predict_images: int = 200
    loader_batches: int = 30
    matmul: int = 8192


TINY = Sizes(model="deeplabv3plus_mobilenet", crop=64, run_crop=64, batch=2, warmup=1, steps=2, run_iters=(4, 6),
             predict_images=6, loader_batches=4, matmul=512)


@dataclass(frozen=True)
class StepSetting:
    label: str
    amp: str
    channels_last: bool
    autotune: bool = True
    fused: bool = False


STEP_SETTINGS = (  # first use of each precision and layout autotunes (cuDNN caches results within the process)
    StepSetting("fp32, no autotuning (the original's)", "off", False, autotune=False),
    StepSetting("fp32", "off", False),
    StepSetting("fp32 + channels_last", "off", True),
    StepSetting("bf16", "bf16", False),
    StepSetting("bf16 + channels_last", "bf16", True),
    StepSetting("bf16 + channels_last, no autotuning", "bf16", True, autotune=False),
    StepSetting("fp16 + channels_last", "fp16", True),
    StepSetting("bf16 + channels_last, fused SGD", "bf16", True, fused=True),
)
INFER_SETTINGS = (("fp32", "off", False), ("fp32 + channels_last", "off", True), ("bf16", "bf16", False),
                  ("bf16 + channels_last", "bf16", True), ("fp16", "fp16", False),
                  ("fp16 + channels_last", "fp16", True))
COMPILE_MODES = (("compiled", "default"), ("compiled + CUDA graphs", "reduce-overhead"))


def versions(device: torch.device) -> str:
    cuda = f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}" if device.type == "cuda" else ""
    return f"{hardware_name(device)}; torch {torch.__version__}{cuda}"


def matmul_peak_tflops(device: torch.device, n: int) -> float:
    """bf16 dense peak as this device reaches it on an n x n matmul (the reference for the share of peak)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    seconds = time_calls(lambda: a @ b, device, 3, 10)
    return 2 * n ** 3 / seconds / 1e12


def training_flops_per_image(model_name: str, crop: int) -> float:
    """FLOPs of one training image (forward, loss and backward), counted on the meta device (shapes only)."""
    with torch.device("meta"):
        model = network.build_model(model_name, 21, 16, pretrained_backbone=False).train()
        images = torch.zeros(2, 3, crop, crop)
        labels = torch.zeros(2, crop, crop, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter:
        build_criterion("cross_entropy")(model(images), labels).backward()
    return counter.get_total_flops() / 2


def measure_step(sizes: Sizes, device: torch.device, setting: StepSetting,
                 wrap: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m) -> Dict[str, float]:
    """Warm-up seconds, steady images/s and peak memory of main.py's training step in ``setting``."""
    torch.backends.cudnn.benchmark = setting.autotune
    torch.manual_seed(0)
    model = network.build_model(sizes.model, 21, 16, pretrained_backbone=False).to(device).train()
    if setting.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4,
                                **({"fused": True} if setting.fused else {}))
    scaler = torch.amp.GradScaler(device.type, enabled=setting.amp == "fp16")
    criterion = build_criterion("cross_entropy")
    images = torch.randn(sizes.batch, 3, sizes.crop, sizes.crop, device=device)
    labels = torch.randint(0, 21, (sizes.batch, sizes.crop, sizes.crop), device=device)
    called = wrap(model)

    def step() -> None:
        train_step(called, optimizer, scaler, criterion, images, labels, device, setting.amp, setting.channels_last)

    restart_peak_memory(device)
    began = time.perf_counter()
    for _ in range(sizes.warmup):
        step()
    synchronize(device)
    warmup_seconds = time.perf_counter() - began
    warm_peak = peak_memory(device)
    restart_peak_memory(device)
    seconds = time_calls(step, device, 0, sizes.steps)
    return {"images_per_s": sizes.batch / seconds, "warmup_s": warmup_seconds, "warm_peak": warm_peak,
            "steady_peak": peak_memory(device)}


def step_part(sizes: Sizes, device: torch.device, peak_tflops: float) -> Dict[str, float]:
    flops = training_flops_per_image(sizes.model, sizes.crop)
    print(f"\n[step] {sizes.model}, crop {sizes.crop}, batch {sizes.batch}: {flops / 1e12:.3f} TFLOP per training "
          f"image; {sizes.warmup} warm-up steps, then {sizes.steps}")
    print(f"{'setting':38s} {'img/s':>7s} {'vs orig':>7s} {'warm-up':>8s} {'TFLOP/s':>8s} {'of peak':>7s} "
          f"{'warm alloc/resv GiB':>20s} {'steady alloc/resv GiB':>22s}")
    speeds = {}
    for setting in STEP_SETTINGS:
        reason = setting_skip_reason(device, setting.amp)
        if reason is None and setting.fused and device.type != "cuda":
            reason = "fused SGD is measured on CUDA"
        if reason:
            print(f"{setting.label:38s} skipped: {reason}")
            continue
        row = measure_step(sizes, device, setting)
        speeds[setting.label] = speed = row["images_per_s"]
        base = speeds.get(STEP_SETTINGS[0].label, speed)
        tflops = speed * flops / 1e12
        nan = float("nan")  # the CPU keeps no allocator figures
        warm, steady = ([peak.get(kind, nan) for kind in ("allocated", "reserved")]
                        for peak in (row["warm_peak"], row["steady_peak"]))
        print(f"{setting.label:38s} {speed:7.1f} {speed / base:6.2f}x {row['warmup_s']:7.1f}s {tflops:8.1f} "
              f"{tflops / peak_tflops:6.1%} {warm[0]:9.1f} / {warm[1]:7.1f}  {steady[0]:10.1f} / {steady[1]:7.1f}")
    return speeds


def runs_part(sizes: Sizes, original: Optional[str]) -> None:
    for iters in sizes.run_iters:
        args = argparse.Namespace(original=original, model=sizes.model, crop=sizes.run_crop, batch=sizes.batch,
                                  iters=iters, rounds=1)
        print(f"\n[runs] {iters} iterations")
        seconds = train_bench.whole_runs(args)
        if seconds:
            print(f"target: >= {1 if iters < 100 else 2}x the original")


def predict_part(sizes: Sizes, original: Optional[str], tmp: str) -> None:
    print(f"\n[predict] {sizes.predict_images} JPEGs of 500x375, {sizes.predict_model}; target: >= 3x the original")
    workers, _ = resolve_num_workers(None, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    args = argparse.Namespace(original=original, model=sizes.predict_model, images=sizes.predict_images,
                              batch=8, workers=workers, rounds=1)
    folder, ckpt = predict_bench.prepare(args, tmp)
    predict_bench.whole_runs(args, folder, ckpt, tmp)


def loader_part(sizes: Sizes, device: torch.device, tmp: str) -> None:
    """Batches/s of main.py's training DataLoader at crop 513 with the original's 2 workers and ours."""
    import main as train_script

    data_root = demo_voc(os.path.join(tmp, "loader_data"), 8)
    ours, _ = resolve_num_workers(None, device)
    print(f"\n[loader] VOC training transforms on the demo data, crop {sizes.crop}, batch {sizes.batch}")
    for workers in dict.fromkeys((2, ours)):
        opts = train_script.get_argparser().parse_args(
            ["--dataset", "voc", "--data_root", data_root, "--crop_size", str(sizes.crop),
             "--batch_size", str(sizes.batch), "--num_workers", str(workers)])
        train_dst, val_dst = train_script.get_dataset(opts)
        loader, _ = train_script.build_loaders(opts, train_dst, val_dst, train_script.DistEnv(), device)
        batches = train_script.training_batches(loader, train_script.TrainState())
        next(batches)  # workers started
        began = time.perf_counter()
        for _ in range(sizes.loader_batches):
            next(batches)
        rate = sizes.loader_batches / (time.perf_counter() - began)
        print(f"{workers:2d} workers: {rate:6.1f} batches/s = {rate * sizes.batch:7.1f} images/s")


def infer_part(sizes: Sizes, device: torch.device) -> None:
    print(f"\n[infer] {sizes.model}, BatchNorm folded, batch {sizes.batch} of {sizes.crop}x{sizes.crop}")
    torch.backends.cudnn.benchmark = True  # one size, as in predict.py's batches and --crop_val
    base = None
    for label, amp, channels_last in INFER_SETTINGS:
        reason = setting_skip_reason(device, amp)
        if reason:
            print(f"{label:22s} skipped: {reason}")
            continue
        model = fold_batchnorm(network.build_model(sizes.model, 21, 16, pretrained_backbone=False).to(device).eval())
        if channels_last:
            model.to(memory_format=torch.channels_last)
        images = torch.randn(sizes.batch, 3, sizes.crop, sizes.crop, device=device)

        def run() -> None:
            with torch.inference_mode():
                predict_logits(model, images, amp, channels_last).max(1)

        speed = sizes.batch / time_calls(run, device, sizes.warmup, sizes.steps)
        base = base or speed
        print(f"{label:22s} {speed:8.1f} images/s {speed / base:6.2f}x")


def compile_part(sizes: Sizes, device: torch.device) -> None:
    setting = STEP_SETTINGS[4]  # bf16 + channels_last, autotuned
    if setting_skip_reason(device, setting.amp):
        setting = STEP_SETTINGS[1]
    print(f"\n[compile] the training step in {setting.label}; compile seconds are the warm-up's")
    eager = measure_step(sizes, device, setting)
    print(f"{'eager':24s} {eager['images_per_s']:7.1f} images/s  warm-up {eager['warmup_s']:6.1f} s")
    for label, mode in COMPILE_MODES:
        if mode == "reduce-overhead" and device.type != "cuda":
            print(f"{label:24s} skipped: CUDA graphs need CUDA")
            continue
        torch._dynamo.reset()
        row = measure_step(sizes, device, setting, wrap=lambda m: torch.compile(m, mode=mode))
        gain = row["images_per_s"] / eager["images_per_s"]
        pays_after = (row["warmup_s"] - eager["warmup_s"]) / max(sizes.batch / eager["images_per_s"] -
                                                                  sizes.batch / row["images_per_s"], 1e-9)
        print(f"{label:24s} {row['images_per_s']:7.1f} images/s  warm-up {row['warmup_s']:6.1f} s  {gain:5.2f}x; "
              + (f"pays for its compile after {pays_after:,.0f} steps" if gain > 1 else "never pays"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", type=os.path.abspath, help="folder of a VainF/DeepLabV3Plus-Pytorch checkout")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--budget", type=float, default=480, help="seconds; later parts are skipped after it")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, to check this script on a CPU")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA device; check it on the CPU with --device cpu --tiny")
    device = torch.device(args.device)
    sizes = TINY if args.tiny else Sizes()
    started = time.perf_counter()
    peak = matmul_peak_tflops(device, sizes.matmul)
    print(f"{versions(device)}\nbf16 matmul peak {peak:.1f} TFLOP/s ({sizes.matmul}x{sizes.matmul})")
    parts: Dict[str, Callable[[], object]] = {
        "step": lambda: step_part(sizes, device, peak), "runs": lambda: runs_part(sizes, args.original),
        "predict": lambda: predict_part(sizes, args.original, tmp), "loader": lambda: loader_part(sizes, device, tmp),
        "infer": lambda: infer_part(sizes, device), "compile": lambda: compile_part(sizes, device)}
    skipped: List[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.parts:
            if time.perf_counter() - started > args.budget:
                skipped.append(name)
                continue
            parts[name]()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if skipped:
        print(f"\nskipped after the {args.budget:.0f} s budget: {', '.join(skipped)}")
    print(f"\nbench/gpu.py took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
