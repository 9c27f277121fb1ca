"""Train and evaluate DeepLabV3 / DeepLabV3+ (``python main.py --model deeplabv3plus_hrnetv2_48 ...``).

Reads top to bottom: parse -> data -> model -> optimizer/scheduler -> restore -> train loop -> validate.
"""
if __name__ == "__main__":  # first, before torch loads (seconds): Ctrl-C or SIGTERM then ends it in one line
    from utils.io.stop_signals import stop_quietly_while_starting
    from utils.runtime.collector import freeze_imported, pause_during_imports
    stop_quietly_while_starting()
    pause_during_imports()

import argparse
import contextlib
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils import data
from tqdm import tqdm

import network
from datasets import Cityscapes, DatasetError, FolderSegmentation, VOCSegmentation, make_demo_dataset
from datasets.band_stats import resolve_band_spec
from datasets.class_stats import background_only_warning, load_class_stats
from datasets.class_weights import resolve_class_weights
from datasets.demo import STAMP_FILE, demo_data_root, holds_demo_data
from datasets.utils import error_message
from datasets.raster_folder import RasterFolderSegmentation, holds_rasters
from datasets.sampling import SeededSamples, ShardedRandomSampler, ShardSampler
from metrics import StreamSegMetrics
from network import PretrainedWeightsError
from network.trained_model import (add_model_options, architecture_record, recorded_architecture, recorded_bands,
                                   recorded_timm_options, unused_output_stride)
from network.weights import init_model_from, module_names
from utils import ext_transforms as et
from utils.io.atomic import describe_removed, remove_orphaned_temporaries, removed_if_left_empty, require_writable
from utils.io.bands import BANDS_KEY, BandSpec, band_list, picture
from utils.io.checkpoint import (CheckpointError, capture_rng_state, extract_model_state, load_checkpoint,
                                 load_model_state, restore_process_rng_state, save_checkpoint, share_checkpoint)
from utils.config import (ConfigError, HelpFormatter, Unused, check_ranges, parse_with_config, refuse_conflicts,
                          warn_unused)
from utils.constants import IMAGENET_MEAN, IMAGENET_STD
from utils.runtime.device import (INFER, TRAIN, add_device_options, add_speed_options, compile_model, cudnn_benchmark,
                                  hardware_name, parse_auto_bool, resolve_cudnn_benchmark, resolve_num_workers,
                                  resolve_speed_options, unused_gpu_id)
from utils.runtime.distributed import (DistEnv, all_reduce_sum_, barrier, broadcast_buffers_, cleanup,
                                       from_process_zero, gather_to_process_zero, init_distributed, node_main_first,
                                       reduce_step_flags)
from utils.io.image_limit import add_max_image_pixels_option, set_max_image_pixels
from utils.io.locks import LockHeldError, file_lock
from utils.io.stop_signals import exit_keeping_status, starting_handlers_gone
from utils.runtime.host_memory import keep_freed_memory
from utils.runtime.interrupts import StopFlag, StoppedBySignal, WorkerLoader, stop_signals_raise, worker_death
from utils.inference.outputs import save_val_result
from utils.inference.predictor import (InferenceRecipe, InputTooSmallError, SegmentationPredictor, add_window_options,
                                       check_recipe_options)
from utils.reporting.logger import (ConsoleSink, EvaluationReport, LoggerError, RunLogger, build_logger,
                                    require_tensorboard)
from utils.loss import LOSS_TYPES, build_criterion, check_loss_options
from utils.io.own_outputs import same_path
from utils.runtime.resume import SETTINGS_KEY, apply_recorded_settings, flags, recorded_settings, settings_record
from utils.runtime.run_timer import RunTimer, process_age
from utils.scheduler import build_scheduler, retarget
from utils.runtime.training import build_sgd, forward_loss, load_optimizer_state, optimize
from utils.utils import set_bn_momentum

IMPORTS_SECONDS = process_age()  # the interpreter's start and the imports above: the time report's first phase

DATASETS = ("voc", "cityscapes", "folder", "demo")
VOC_YEARS = ("2012_aug", "2012", "2011", "2009", "2008", "2007")
BACKBONE_LR_FACTOR = 0.1
POSITIVE_OPTIONS = ("batch_size", "val_batch_size", "crop_size", "total_itrs", "val_interval", "print_interval",
                    "step_size", "lr", "vis_num_samples", "window", "stride")
NON_NEGATIVE_OPTIONS = ("num_workers", "weight_decay", "focal_gamma")
# With --amp fp16 the GradScaler skips steps whose gradients overflow; the schedule still follows iterations.
warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")


Report = Callable[[Dict[str, Optional[str]]], None]  # an evaluation's report, given the files holding its weights


class TrainingError(RuntimeError):
    """The run cannot go on (NaN loss, inconsistent options); the message says what to do."""


def _pretrained_arg(value: str):
    return {"true": True, "false": False}.get(value.lower(), value)


def get_argparser() -> argparse.ArgumentParser:
    """The original's flags (same names and defaults) and ours, in groups by concern."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--config", help="YAML file whose keys are these options (flags given here win)")
    _add_data_options(parser.add_argument_group("data"))
    _add_architecture_options(parser.add_argument_group("model"))
    _add_schedule_options(parser.add_argument_group("training"))
    _add_loss_options(parser.add_argument_group("loss"))
    _add_runtime_options(parser.add_argument_group("devices and speed"))
    _add_run_options(parser.add_argument_group("optimizer, logging and files"))
    _add_evaluation_options(parser.add_argument_group("evaluation (--test_only and a training run's validations)"))
    _add_dashboard_options(parser.add_argument_group("dashboards"))
    return parser


def _add_data_options(group: argparse._ActionsContainer) -> None:
    """The dataset, its loading, and multi-band imagery (--dataset folder)."""
    group.add_argument("--data_root", type=str, default="./datasets/data",
                       help="folder that holds the dataset (VOCdevkit, Cityscapes, or your own data's folder); "
                            "--dataset demo writes its data into DATA_ROOT/demo")
    group.add_argument("--dataset", type=str, default="voc", choices=DATASETS, help="name of the dataset")
    group.add_argument("--num_classes", type=int, default=None, help="number of classes (default: the dataset's)")
    group.add_argument("--num_workers", type=int, default=None,
                       help="DataLoader workers (default: on a GPU the cores per GPU process less one, at most 16; "
                            "on the CPU min(4, cores))")
    add_max_image_pixels_option(group)
    # Multi-band imagery (--dataset folder): GeoTIFFs are read with all their bands unless --bands says otherwise
    group.add_argument("--bands", type=band_list, default=None, metavar="4,3,2",
                       help="--dataset folder: read these bands (1-based, in this order) of multi-band images; also "
                            "reads gray or 16-bit PNGs as 1 band with --bands 1 (default: every band of GeoTIFFs; "
                            "8-bit RGB for pictures)")
    group.add_argument("--band_stats", default=None, metavar="FILE.yaml",
                       help="per-band `mean: [...]` and `std: [...]` to normalise with, one per band of the files or "
                            "per band read (default: computed over the training split and cached)")
    group.add_argument("--rgb_bands", type=band_list, default=None, metavar="3,2,1",
                       help="the bands read that take ImageNet's R, G, B filters and are shown as colour (default: "
                            "the bands described as R, G, B in the files, else the first three)")
    group.set_defaults(recorded_bands=None)  # not a flag: what --ckpt records of its bands (resolve_architecture)
    group.add_argument("--year", type=str, default="2012", choices=VOC_YEARS, help="year of VOC")


def _add_architecture_options(group: argparse._ActionsContainer) -> None:
    """The architecture (shared with predict.py) and where its first weights come from."""
    add_model_options(group, num_classes=False)  # the checkpoint's is --ckpt's; --num_classes is the dataset's
    group.add_argument("--pretrained_backbone", nargs="?", const=True, default=None, type=_pretrained_arg,
                       help="ImageNet backbone weights: flag alone = the known source, or a file path "
                            "(default: the entry's default, as in the original: ImageNet for ResNet, MobileNetV2 "
                            "and Xception, none for HRNet; timm's pretrained weights for the tu- entries)")
    group.add_argument("--no-pretrained_backbone", dest="pretrained_backbone", action="store_false",
                       help="train the backbone from scratch (default: see --pretrained_backbone)")
    group.add_argument("--init_from", default=None,
                       help="start the whole model from 'torchvision_coco' (ResNet-50/101) or a checkpoint file in "
                            "any supported format; reports which tensors were filled (default: none)")


def _add_schedule_options(group: argparse._ActionsContainer) -> None:
    """What to run, the schedule, batches and crops, and the checkpoint to start from."""
    group.add_argument("--test_only", action=argparse.BooleanOptionalAction, default=False,
                       help="evaluate --ckpt on the validation set and stop, without training")
    group.add_argument("--save_val_results", action=argparse.BooleanOptionalAction, default=False,
                       help="save segmentation results to --results_dir")
    group.add_argument("--total_itrs", type=int, default=30000, help="training iterations")
    group.add_argument("--lr", type=float, default=0.01, help="learning rate of the head (the backbone's is 0.1x)")
    group.add_argument("--lr_policy", type=str, default="poly", choices=["poly", "step"],
                       help="poly: lr * (1 - iteration / total_itrs) ** 0.9; step: x0.1 every --step_size")
    group.add_argument("--step_size", type=int, default=10000, help="--lr_policy step: iterations per x0.1")
    group.add_argument("--crop_val", action=argparse.BooleanOptionalAction, default=False,
                       help="validate on images resized and centre-cropped to --crop_size (batched), not whole")
    group.add_argument("--batch_size", type=int, default=16, help="global batch size, split over torchrun processes")
    group.add_argument("--val_batch_size", type=int, default=4, help="validation batch size (with --crop_val)")
    group.add_argument("--crop_size", type=int, default=513, help="training crop (and --crop_val) size in pixels")
    group.add_argument("--ckpt", default=None, type=str,
                       help="checkpoint to start from (weights; with --continue_training the whole training state) "
                            "or, with --test_only, to evaluate (default: none)")
    group.add_argument("--continue_training", action=argparse.BooleanOptionalAction, default=False,
                       help="with --ckpt: resume iteration, optimizer, scheduler, best score and RNG state")


def _add_loss_options(group: argparse._ActionsContainer) -> None:
    """The loss and its class weights."""
    group.add_argument("--loss_type", type=str, default="cross_entropy", choices=LOSS_TYPES,
                       help="ohem: hard pixels only (HRNet's Cityscapes recipe); dice, ce+dice: for rare classes")
    group.add_argument("--class_weights", default="none",
                       help="none, auto (median-frequency balancing from the training masks, cached next to the "
                            "data) or a YAML file listing one weight per class")
    group.add_argument("--ohem_thresh", type=float, default=0.7,
                       help="ohem: keep pixels whose probability of the true class is below this")
    group.add_argument("--ohem_min_kept", type=int, default=100000,
                       help="ohem: keep at least this many pixels per image, as mmsegmentation counts (its value)")
    group.add_argument("--dice_weight", type=float, default=1.0, help="ce+dice: weight of the Dice term")
    group.add_argument("--focal_gamma", type=float, default=2.0,
                       help="focal loss focusing parameter (the paper's 2.0); 0 is plain cross-entropy, which is "
                            "what the original's focal_loss computed: use 0 to reproduce its runs")


def _add_runtime_options(group: argparse._ActionsContainer) -> None:
    """Devices, processes and precision."""
    add_device_options(group)
    group.add_argument("--sync_bn", action=argparse.BooleanOptionalAction, default=None,
                       help="SyncBatchNorm across processes (default: on for multi-GPU torchrun runs)")
    group.add_argument("--dist_timeout", type=float, default=1800,
                       help="seconds a process waits for the others before the run stops with an error")
    add_speed_options(group)
    group.add_argument("--cudnn_benchmark", nargs="?", const=True, default="auto", type=parse_auto_bool,
                       help="cuDNN autotuning for the training crops: auto/true/false (auto: on for runs of 1000 "
                            "iterations or more, whose speed-up pays back its ~20 s of tuning)")


def _add_run_options(group: argparse._ActionsContainer) -> None:
    """The optimizer, seeds, intervals, and where the run writes."""
    group.add_argument("--weight_decay", type=float, default=1e-4, help="SGD weight decay")
    group.add_argument("--bn_momentum", type=float, default=0.01,
                       help="backbone BatchNorm momentum: the original's 0.01 suits fine-tuning a pretrained "
                            "backbone; use 0.1 for short runs from scratch")
    group.add_argument("--random_seed", type=int, default=1, help="random seed")
    group.add_argument("--print_interval", type=int, default=10, help="iterations between log lines")
    group.add_argument("--val_interval", type=int, default=100, help="iterations between validations")
    group.add_argument("--download", action=argparse.BooleanOptionalAction, default=False,
                       help="download Pascal VOC into --data_root")
    group.add_argument("--checkpoint_dir", type=str, default="checkpoints",
                       help="where latest_* and best_* checkpoints are written")
    group.add_argument("--results_dir", type=str, default="results",
                       help="metrics.json and the confusion matrix of every evaluation (and --save_val_results)")


def _add_evaluation_options(group: argparse._ActionsContainer) -> None:
    """How each evaluation predicts: scales, flips, sliding windows."""
    group.add_argument("--eval_scales", type=float, nargs="+", default=[1.0],
                       help="evaluate at these scales and sum the probabilities, e.g. 0.5 0.75 1.0 1.25 1.5 1.75")
    group.add_argument("--eval_flip", action=argparse.BooleanOptionalAction, default=False,
                       help="add horizontally flipped copies to the evaluation")
    group.add_argument("--eval_slide", action=argparse.BooleanOptionalAction, default=False,
                       help="evaluate in sliding windows of --window with step --stride (bounded memory)")
    add_window_options(group, "--eval_slide")


def _add_dashboard_options(group: argparse._ActionsContainer) -> None:
    """Visdom and TensorBoard."""
    group.add_argument("--enable_vis", action=argparse.BooleanOptionalAction, default=False,
                       help="use visdom for visualization")
    group.add_argument("--vis_port", type=str, default="13570", help="port for visdom")
    group.add_argument("--vis_host", type=str, default="http://localhost", help="address of the visdom server")
    group.add_argument("--vis_env", type=str, default="main", help="env for visdom")
    group.add_argument("--vis_num_samples", type=int, default=8, help="number of samples for visualization")
    group.add_argument("--tensorboard", default=None, metavar="DIR",
                       help="also write TensorBoard event files to DIR (pip install tensorboard; default: none)")


def reads_bands(opts) -> bool:
    """Whether --dataset folder is read as multi-band imagery: asked for (--bands, --band_stats, --rgb_bands), a
    checkpoint that reads bands, or GeoTIFFs in the folder."""
    asked = [flag for flag in ("bands", "band_stats", "rgb_bands") if getattr(opts, flag) is not None]
    if opts.dataset != "folder":
        if asked:
            raise TrainingError(f"--{asked[0]} is for multi-band imagery in --dataset folder, not --dataset "
                                f"{opts.dataset}; drop it")
        return False
    return bool(asked) or opts.recorded_bands is not None or holds_rasters(opts.data_root)


def band_datasets(opts, train_steps: List[Callable], val_steps: List[Callable]) -> Tuple[data.Dataset, data.Dataset]:
    """Training and validation sets of multi-band imagery, normalised per band (see resolve_band_spec)."""
    recorded = BandSpec.from_record(opts.recorded_bands) if opts.recorded_bands else None
    bands = opts.bands or (recorded.bands if recorded else None)
    nodata = recorded.nodata if recorded else None
    train = RasterFolderSegmentation(opts.data_root, "train", bands=bands, nodata=nodata)
    spec = resolve_band_spec(train, opts.rgb_bands, opts.band_stats, recorded, log=print)
    normalize = [et.ExtToTensor(normalize=False), et.ExtNormalize(mean=spec.mean, std=spec.std)]
    train.transform = et.ExtCompose(train_steps + normalize)
    val = RasterFolderSegmentation(opts.data_root, "val", et.ExtCompose(val_steps + normalize), spec.bands,
                                   nodata=spec.nodata)
    train.band_spec = val.band_spec = spec
    return train, val


def get_dataset(opts) -> Tuple[data.Dataset, data.Dataset]:
    """Training and validation sets with the original's augmentation recipes."""
    normalize = et.ExtNormalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    if opts.dataset == "cityscapes":
        train_transform = et.ExtCompose([
            et.ExtRandomCrop(size=(opts.crop_size, opts.crop_size)),
            et.ExtColorJitter(brightness=0.5, contrast=0.5, saturation=0.5),
            et.ExtRandomHorizontalFlip(), et.ExtToTensor(), normalize])
        val_transform = et.ExtCompose([et.ExtToTensor(), normalize])
        return (Cityscapes(opts.data_root, split="train", transform=train_transform),
                Cityscapes(opts.data_root, split="val", transform=val_transform))
    train_steps = [et.ExtRandomScale((0.5, 2.0)),
                   et.ExtRandomCrop(size=(opts.crop_size, opts.crop_size), pad_if_needed=True),
                   et.ExtRandomHorizontalFlip()]
    train_transform = et.ExtCompose(train_steps + [et.ExtToTensor(), normalize])
    val_steps = [et.ExtResize(opts.crop_size), et.ExtCenterCrop(opts.crop_size)] if opts.crop_val else []
    val_transform = et.ExtCompose(val_steps + [et.ExtToTensor(), normalize])
    if reads_bands(opts):
        return band_datasets(opts, train_steps, val_steps)
    if opts.dataset == "folder":
        return (FolderSegmentation(opts.data_root, "train", train_transform),
                FolderSegmentation(opts.data_root, "val", val_transform))
    if opts.dataset == "demo":
        root, year = demo_data_root(opts.data_root), "2012"
    else:
        root, year = opts.data_root, opts.year
    return (VOCSegmentation(root, year, "train", False, train_transform),
            VOCSegmentation(root, year, "val", False, val_transform))


def prepare_data(opts) -> None:
    """Generate the demo data or download VOC when asked. Under torchrun the first process of each machine
    does it; machines that share the folder take turns, so a later one finds the data complete."""
    if not (opts.dataset == "demo" or (opts.dataset == "voc" and opts.download)):
        return
    with file_lock(os.path.join(opts.data_root, ".prepare.lock")):
        if opts.dataset == "demo":
            make_demo_dataset(demo_data_root(opts.data_root))
        else:
            VOCSegmentation(opts.data_root, opts.year, "train", download=True)


def checkpoint_path(opts, kind: str) -> str:
    return os.path.join(opts.checkpoint_dir, f"{kind}_{opts.model}_{opts.dataset}_os{opts.output_stride}.pth")


def resolve_architecture(opts, device: torch.device) -> None:
    """--model, --output_stride and --separable_conv as given, else as --ckpt records them (this project's
    checkpoints do), else the original's defaults; a --model or --separable_conv that contradicts the checkpoint
    is an error naming both. Process 0 reads the checkpoint's record and sends it to the others."""
    record = from_process_zero(lambda: architecture_record(opts.ckpt), device) if opts.ckpt is not None else {}
    opts.model, opts.output_stride, opts.separable_conv = recorded_architecture(
        record, opts.ckpt, opts.model, opts.output_stride, opts.separable_conv,
        other_model=" (or --init_from to start another model from it)")
    recorded_bands(record, opts.ckpt)  # a malformed record is an error now
    opts.recorded_bands = record.get(BANDS_KEY)  # a multi-band checkpoint's bands and normalisation
    opts.timm_options = recorded_timm_options(record, opts.model)
    network.check_model(opts.model, opts.output_stride)  # a timm name or stride that cannot work: before any data



def check_checkpoints_spare_inputs(opts) -> None:
    """A TrainingError when --init_from, or --ckpt without --continue_training, is a checkpoint this run saves
    (latest_* or best_*): training would overwrite the weights it starts from."""
    for flag, path in (("--ckpt", None if opts.continue_training else opts.ckpt), ("--init_from", opts.init_from)):
        for kind in ("latest", "best"):
            if path and same_path(path, checkpoint_path(opts, kind)):
                resume = "add --continue_training to go on training it, or " if flag == "--ckpt" else ""
                raise TrainingError(f"{flag} {path} is the {kind}_* checkpoint that this run saves "
                                    f"({checkpoint_path(opts, kind)}), so training would overwrite the weights it "
                                    f"starts from; {resume}copy it elsewhere first, or give another --checkpoint_dir")


def _resume_record(path: str) -> Tuple[Dict[str, object], bool, int]:
    """(the settings checkpoint ``path`` holds, whether it has a record of them, its iteration); read mapped."""
    checkpoint = load_checkpoint(path, mmap=True)
    if "optimizer_state" not in checkpoint:
        raise TrainingError(f"--continue_training needs a full training checkpoint; {path} holds only weights (start "
                            "a new run from them with --init_from)")
    settings, recorded = recorded_settings(checkpoint)
    return settings, recorded, int(checkpoint.get("cur_itrs", 0))


def resume_settings(opts, device: torch.device, log) -> None:
    """--continue_training: each setting of RESUMED_OPTIONS that neither the command line nor --config gives comes
    from --ckpt; one line each says which given values differ from the checkpoint's, which of its values differ
    from this script's defaults, and what it does not record. Process 0 reads it and sends it to the others."""
    settings, recorded, itrs = from_process_zero(lambda: _resume_record(opts.ckpt), device)
    changed, taken, missing = apply_recorded_settings(opts, settings)
    if changed:
        log(f"Resuming with this run's settings from iteration {itrs + 1}: {', '.join(changed)}")
    if taken:
        log(f"Settings from {opts.ckpt} (a flag given now overrides one): {', '.join(taken)}")
    if missing and not recorded:
        log(f"note: {opts.ckpt} records no settings beyond its optimizer's and schedule's ({flags(settings)}), as the "
            "original's checkpoints: the others are this run's flags, else the defaults")
    elif missing:
        log(f"note: {opts.ckpt} does not record {flags(missing)}: this run's flags, else the defaults, are used")


CHECKPOINTS_HELD_BY = ("{owner} is already writing these checkpoints (lock {path}); wait for it, or give this run "
                       "another --checkpoint_dir")


@contextlib.contextmanager
def output_guard(opts, env: DistEnv) -> Iterator[None]:
    """On process 0: check that the output folders can be written and, when training, hold the checkpoints' lock
    for the run, so a read-only folder or a second run on the same files fails at once. The folders made here that
    the run leaves empty go when it ends, so a run that fails or is stopped before it writes anything leaves no
    empty folders (a process killed outright, by SIGKILL, leaves them for the next run)."""
    if not env.is_main:
        yield
        return
    outputs = {"--results_dir": opts.results_dir, "--tensorboard": opts.tensorboard,
               "--checkpoint_dir": None if opts.test_only else opts.checkpoint_dir}
    outputs = {flag: folder for flag, folder in outputs.items() if folder is not None}  # '' is refused below
    with removed_if_left_empty(outputs.values()):
        for flag, folder in outputs.items():
            require_writable(folder, flag)
        with contextlib.nullcontext() if opts.test_only else checkpoints_lock(opts):
            yield


@contextlib.contextmanager
def checkpoints_lock(opts) -> Iterator[None]:
    """Hold the lock of this run's checkpoints in --checkpoint_dir; under it, remove (and say) what a killed save of
    them left behind. The lock's file goes with the run."""
    check_checkpoints_spare_inputs(opts)
    lock = os.path.splitext(checkpoint_path(opts, ".lock"))[0]  # hidden, and not a *.pth
    with file_lock(lock, held_by=CHECKPOINTS_HELD_BY):
        names = [os.path.basename(checkpoint_path(opts, kind)) for kind in ("latest", "best")]
        removed = remove_orphaned_temporaries(opts.checkpoint_dir, names)
        if removed:
            print(describe_removed(removed, "temporary checkpoint file(s) that a killed save left",
                                   opts.checkpoint_dir))
        try:
            yield
        finally:
            with contextlib.suppress(OSError):  # already gone with its folder
                os.remove(lock)  # while it is held: a run waiting on it locks the file made after it (file_lock)


def build_predictor(opts, model: nn.Module, device: torch.device, log=print) -> SegmentationPredictor:
    """``model`` with the evaluation recipe of the options (--eval_scales, --eval_flip, --eval_slide)."""
    recipe = InferenceRecipe(scales=tuple(opts.eval_scales), flip=opts.eval_flip, slide=opts.eval_slide,
                             window=opts.window, stride=opts.stride, amp=opts.eval_amp,
                             channels_last=opts.channels_last)
    return SegmentationPredictor(model, opts.num_classes, recipe,
                                 prepare=lambda images: images.to(device, non_blocking=True), log=log)


def evaluate(opts, predictor: SegmentationPredictor, loader: data.DataLoader, device: torch.device,
             metrics: StreamSegMetrics, sample_ids: Sequence[int] = ()) -> Tuple[dict, list]:
    """Evaluate on ``loader`` with ``predictor``'s recipe; return (scores, [(image, target, prediction)] of the
    first image of each batch in ``sample_ids``).

    Under torchrun every process evaluates its own shard and the confusion matrices are summed, so the
    scores equal a single-process evaluation of the same checkpoint, whatever the recipe.
    """
    # Without SyncBatchNorm every process's running statistics followed its own batches since DDP last
    # synchronised them; evaluate with process 0's, the ones its checkpoint saves.
    broadcast_buffers_(predictor.model)
    metrics.reset()
    samples = []
    shard = loader.sampler.indices if isinstance(loader.sampler, ShardSampler) else range(len(loader.dataset))
    seen = 0  # samples of the shard evaluated so far
    predictor.model.eval()
    # fixed sizes only with --crop_val
    with torch.inference_mode(), cudnn_benchmark(bool(opts.crop_val) and opts.cudnn_benchmark):
        for i, (images, labels) in enumerate(tqdm(loader, desc="validation", leave=False, disable=None)):
            indices, seen = shard[seen:seen + len(images)], seen + len(images)  # the batch's samples in the dataset
            labels = labels.to(device, non_blocking=True)
            preds = labels_naming_the_file(predictor, images, loader.dataset,
                                           () if opts.crop_val else indices).to(device)  # crops: --crop_size's fault
            metrics.update(labels, preds)
            if i in sample_ids:
                samples.append((images[0].float().numpy(), labels[0].cpu().numpy(), preds[0].cpu().numpy()))
            if opts.save_val_results:  # named by the sample's index in the dataset (shards never collide)
                for index, image, target, pred in zip(indices, images.float(), labels.cpu().numpy(),
                                                      preds.cpu().numpy()):
                    rgb = picture(image.numpy(), loader.dataset.band_spec).transpose(1, 2, 0)
                    save_val_result(opts.results_dir, index, rgb, target, pred, loader.dataset.cmap)
    # a process with an empty shard never moved its matrix to the device, where NCCL needs it
    metrics.confusion_matrix = all_reduce_sum_(metrics.confusion_matrix.to(device))
    return metrics.get_results(), samples


def labels_naming_the_file(predictor: SegmentationPredictor, images: torch.Tensor, dataset: data.Dataset,
                           indices: Sequence[int]) -> torch.Tensor:
    """``predictor.labels(images)``; a whole validation image too small for the model is named by its file, found
    by its index in ``dataset`` (``indices``: those of the batch, none to name no file)."""
    try:
        return predictor.labels(images)
    except InputTooSmallError as exc:
        files = getattr(dataset, "images", None)
        if files is None or len(indices) != 1 or exc.option:  # --window's fault, not the image's
            raise
        raise InputTooSmallError(f"validation image {files[indices[0]]}: {exc}; take it out of the validation "
                                 "split") from exc


@dataclass
class TrainState:
    """Counters that a checkpoint saves and --continue_training restores."""

    cur_itrs: int = 0
    best_score: float = 0.0


class SpeedMeter:
    """Mean loss and images/s of the steps since the last log line, validations between them left out."""

    def __init__(self):
        self.reset_interval()

    def reset_interval(self) -> None:
        self.loss_sum, self.steps, self.images, self.seconds = 0.0, 0, 0, 0.0

    def add(self, loss: float, images: int, seconds: float) -> None:
        """One step of ``images`` that took ``seconds``, its batch's loading included."""
        self.loss_sum += loss
        self.steps += 1
        self.images += images
        self.seconds += seconds

    def mean_loss(self) -> float:
        return self.loss_sum / max(self.steps, 1)

    def images_per_second(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def build_loaders(opts, train_dst, val_dst, env: DistEnv, device: torch.device):
    """Training batches from ShardedRandomSampler (global --batch_size split over processes); validation shards."""
    if opts.batch_size % env.world_size:
        raise TrainingError(f"--batch_size {opts.batch_size} is the global batch and must be divisible by the "
                            f"{env.world_size} processes")
    if len(train_dst) < opts.batch_size and not opts.test_only:
        raise TrainingError(f"--batch_size {opts.batch_size} is larger than the training set ({len(train_dst)})")
    # Own generators: a new DataLoader iterator otherwise draws from the global torch RNG, which would make
    # dropout after a resume differ from an uninterrupted run.
    workers = dict(num_workers=opts.num_workers, pin_memory=device.type == "cuda",
                   persistent_workers=opts.num_workers > 0, generator=torch.Generator().manual_seed(opts.random_seed))
    train_sampler = ShardedRandomSampler(len(train_dst), opts.batch_size, env.rank, env.world_size, opts.random_seed)
    train_loader = WorkerLoader(SeededSamples(train_dst, opts.random_seed), sampler=train_sampler,
                                batch_size=opts.batch_size // env.world_size, drop_last=True, **workers)
    val_loader = WorkerLoader(val_dst, batch_size=opts.val_batch_size if opts.crop_val else 1,
                              sampler=ShardSampler(len(val_dst), env.rank, env.world_size), **workers)
    return train_loader, val_loader


def resolve_num_classes(opts, train_dst) -> int:
    fixed = train_dst.num_classes
    if opts.num_classes is not None and opts.num_classes != fixed:
        raise TrainingError(f"--num_classes {opts.num_classes} does not match the {opts.dataset} dataset's "
                            f"{fixed} classes; drop the flag (for your own classes use --dataset folder)")
    return fixed


def build_training_model(opts, env: DistEnv, device: torch.device,
                         bands: Optional[BandSpec] = None) -> Tuple[nn.Module, nn.Module]:
    """(model to call, model to save): DDP-wrapped, with SyncBatchNorm where asked, under torchrun.

    The backbone starts from ImageNet weights as the entry does by default (as in the original), or as
    --pretrained_backbone says; with --ckpt or --init_from it is left initialised (nothing is fetched), since
    their weights replace it. For multi-band ``bands`` the first convolution takes them (adapted from the RGB one:
    see network.input_conv).
    """
    pretrained = False if opts.ckpt is not None or opts.init_from else opts.pretrained_backbone
    with node_main_first(env):  # downloads of pretrained weights: once per machine, into its cache
        model = network.build_model(opts.model, opts.num_classes, opts.output_stride, pretrained_backbone=pretrained,
                                    separable_conv=opts.separable_conv, timm_options=opts.timm_options,
                                    in_channels=bands.count if bands else 3,
                                    rgb_positions=bands.rgb_positions if bands else None)
        filled, initialised, origin = (init_model_from(model, opts.model, opts.init_from) if opts.init_from
                                       else ((), (), model.backbone_weights))
    if env.is_main:
        print(f"Backbone weights: {backbone_origin(opts, origin, initialised)}")
        if model.input_adaptation:
            print(f"Input bands: {model.input_adaptation}")
    if opts.init_from and env.is_main:
        source = opts.init_from if origin == opts.init_from else f"{opts.init_from} ({origin})"
        print(f"--init_from {source}: filled {len(filled)} of {len(filled) + len(initialised)} tensors"
              + (f"; initialised: {', '.join(module_names(initialised))}" if initialised else ""))
    set_bn_momentum(model.backbone, momentum=opts.bn_momentum)
    sync_bn = opts.sync_bn if opts.sync_bn is not None else (env.distributed and device.type == "cuda")
    if sync_bn:
        if device.type != "cuda":
            raise TrainingError("--sync_bn needs CUDA devices (PyTorch's SyncBatchNorm does not run on the CPU); "
                                "drop it or pass --no-sync_bn")
        model = network.convert_sync_batchnorm(model)
    elif opts.batch_size // env.world_size < 2 and not opts.test_only:  # build_loaders checked it divides
        raise TrainingError(f"a batch of {opts.batch_size // env.world_size} image per process cannot train "
                            "BatchNorm (the ASPP image-pooling branch sees one value per channel); use --batch_size "
                            f"{2 * env.world_size} or more" + (" or --sync_bn on CUDA" if env.distributed else ""))
    model.to(device)
    if opts.channels_last:
        model.to(memory_format=torch.channels_last)
    if not env.distributed:
        return compile_model(model, opts.compile), model
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return compile_model(ddp, opts.compile), model


def backbone_origin(opts, loaded_from: str, initialised: Sequence[str] = ()) -> str:
    """Where the backbone's weights come from, for the log: the file or hub id, the checkpoint, or from scratch
    (``initialised``: the keys that --init_from's file did not fill)."""
    if opts.ckpt is not None:
        return f"from --ckpt {opts.ckpt}"
    if opts.init_from:
        unfilled = sum(key.startswith("backbone.") for key in initialised)
        return f"from --init_from {loaded_from}" + (
            f"; {unfilled} backbone tensors it does not fill start at random (--init_from fetches no ImageNet "
            "weights)" if unfilled else "")
    if loaded_from.startswith("none"):
        why = ("--no-pretrained_backbone" if opts.pretrained_backbone is False
               else f"{opts.model} has no ImageNet weights by default, as in the original; --pretrained_backbone "
                    "fetches them")
        return f"from scratch ({why})"
    default = " (the default, as in the original; --no-pretrained_backbone trains from scratch)" \
        if opts.pretrained_backbone is None else ""
    return f"ImageNet, from {loaded_from}{default}"


@dataclass
class Training:
    """What the training loop updates: the model (as called, and as saved), its optimisation and its counters."""

    model: nn.Module
    plain_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    state: TrainState
    meter: SpeedMeter = field(default_factory=SpeedMeter)  # the log line's figures, across validations


def group_learning_rates(lr: float) -> Tuple[float, float]:
    """The learning rates of the two parameter groups: the backbone at BACKBONE_LR_FACTOR of --lr, the head at it."""
    return BACKBONE_LR_FACTOR * lr, lr


def build_training(opts, env: DistEnv, device: torch.device, train_dst, log) -> Training:
    """Model, SGD with the backbone at BACKBONE_LR_FACTOR of --lr, schedule, loss (and class weights), loss scale."""
    model, plain_model = build_training_model(opts, env, device, train_dst.band_spec)
    backbone_lr, head_lr = group_learning_rates(opts.lr)
    optimizer = build_sgd([{"params": plain_model.backbone.parameters(), "lr": backbone_lr},
                           {"params": plain_model.classifier.parameters(), "lr": head_lr}],
                          opts.lr, opts.weight_decay, device)
    scheduler = build_scheduler(optimizer, opts.lr_policy, opts.total_itrs, opts.step_size)

    def class_weights() -> Optional[torch.Tensor]:
        """On process 0: the masks counted once (and cached) for the auto weights and the binary-data warning."""
        binary = train_dst.num_classes == 2
        stats = load_class_stats(train_dst, log) if binary or opts.class_weights == "auto" else None
        weights = resolve_class_weights(opts.class_weights, train_dst, log, stats)
        if binary:
            remedies = [flag for flag, used in (("--class_weights auto", opts.class_weights != "none"),
                                                ("--loss_type ce+dice", "dice" in opts.loss_type)) if not used]
            warning = background_only_warning(stats, train_dst.class_names, remedies)
            if warning:
                print(warning, file=sys.stderr)
        return weights

    weights = None if opts.test_only else from_process_zero(class_weights, device)
    criterion = build_criterion(opts.loss_type, focal_gamma=opts.focal_gamma, class_weights=weights,
                                ohem_thresh=opts.ohem_thresh, ohem_min_kept=opts.ohem_min_kept,
                                dice_weight=opts.dice_weight)
    scaler = torch.amp.GradScaler(device.type, enabled=opts.amp == "fp16")
    return Training(model, plain_model, optimizer, scheduler, scaler, criterion, TrainState())


def save_training(opts, env: DistEnv, device: torch.device, training: Training, dataset, best: bool) -> str:
    """Write the ``latest_*`` checkpoint in the original's format plus what a resume needs, and return its path;
    ``best``: these weights are the best so far: they are written as ``best_*``, and ``latest_*`` becomes the same
    file (its bytes are not written a second time: see utils.io.checkpoint.share_checkpoint)."""
    path = checkpoint_path(opts, "latest")
    rng_states = gather_to_process_zero(capture_rng_state(device))  # each process resumes its own stream
    if env.is_main:
        state, scaler = training.state, training.scaler
        encoder = network.encoder_record(training.plain_model)
        save_checkpoint({
            "cur_itrs": state.cur_itrs, "model_state": training.plain_model.state_dict(),
            "optimizer_state": training.optimizer.state_dict(), "scheduler_state": training.scheduler.state_dict(),
            "best_score": state.best_score, "rng_state": rng_states[0], "rng_states": rng_states,
            "model_name": opts.model,
            "num_classes": opts.num_classes, "output_stride": opts.output_stride,
            "separable_conv": opts.separable_conv, "class_names": list(dataset.class_names),
            **({"timm_encoder": encoder} if encoder else {}),  # a tu- entry's timm name, options and version
            # the colours predict.py and export_onnx.py draw the classes with
            "palette": dataset.cmap[:len(dataset.class_names)].tolist(),
            SETTINGS_KEY: settings_record(opts),  # what --continue_training takes unless given again
            # multi-band data: the bands, their order, normalisation and nodata that predict.py and the export read
            **({BANDS_KEY: dataset.band_spec.to_record()} if dataset.band_spec else {}),
            **({"scaler_state": scaler.state_dict()} if scaler.is_enabled() else {}),
        }, checkpoint_path(opts, "best") if best else path)
        if best:  # best_* first: a crash before latest_* follows leaves latest_* older and consistent
            share_checkpoint(checkpoint_path(opts, "best"), path)
    return path


def training_batches(loader: data.DataLoader, state: TrainState) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Batches without end, epoch after epoch; the first epoch starts at ``state.cur_itrs`` (a resume)."""
    sampler = loader.sampler
    while True:
        epoch, start_batch = divmod(state.cur_itrs, sampler.batches_per_epoch)
        sampler.set_epoch(epoch, start_batch)  # resumes mid-epoch with the batches it would have seen
        yield from loader


def train_interval(opts, training: Training, batches: Iterator, until: int, stop: StopFlag, logger: RunLogger,
                   env: DistEnv, device: torch.device, timer: RunTimer) -> bool:
    """Train until iteration ``until``; return True if a signal asked to stop (after the step it came in).

    Every process agrees on a NaN loss and on a signal before the backward pass: a process that skipped the
    step alone would leave the others waiting in DDP's gradient all-reduce.
    """
    state = training.state
    meter = training.meter
    training.model.train()
    while state.cur_itrs < until:
        began = time.perf_counter()
        images, labels = next(batches)
        fetched = time.perf_counter()
        state.cur_itrs += 1
        batch_loss = forward_loss(training.model, training.criterion, images, labels, device, opts.amp,
                                  opts.channels_last)
        local_loss = batch_loss.item()
        loss, (nonfinite, stopping) = reduce_step_flags(
            local_loss, [not np.isfinite(local_loss), stop.signal_name is not None], device)
        if nonfinite:
            kept = checkpoint_path(opts, "latest")
            raise TrainingError(
                f"loss is {local_loss if not np.isfinite(local_loss) else 'nan on another process'} at iteration "
                f"{state.cur_itrs} (lr {training.scheduler.get_last_lr()[-1]:.3g}); stopped without saving, the "
                f"last good checkpoint is {kept if os.path.exists(kept) else 'none'}; lower --lr or check the data")
        optimize(batch_loss, training.optimizer, training.scaler)
        lr = training.scheduler.get_last_lr()[-1]  # the rate of this step (the log's lr), before the next one's
        training.scheduler.step()
        took = time.perf_counter() - began
        meter.add(loss, images.shape[0] * env.world_size, took)
        timer.step(took, images.shape[0] * env.world_size, fetched - began)
        logger.scalars(state.cur_itrs, {"Loss": loss}, "step")
        if state.cur_itrs % opts.print_interval == 0:
            logger.scalars(state.cur_itrs, {"Loss": meter.mean_loss(), "LR": lr,
                                            "Images/s": meter.images_per_second()}, "interval")
            meter.reset_interval()
        if stopping:
            return True
    return False


def evaluation_report(opts, results: dict, metrics: StreamSegMetrics, samples: list, dataset, step: Optional[int],
                      checkpoints: Dict[str, Optional[str]], recipe: InferenceRecipe,
                      device: torch.device) -> EvaluationReport:
    """What the logger's sinks show and write of one evaluation (the text, the files, the dashboards); ``step``
    is the iteration of the evaluated weights (None: a checkpoint that does not record it), ``checkpoints`` the
    files that hold them (metrics.json keys: "checkpoint", and in training "best_checkpoint", None unless this
    evaluation made them the best)."""
    header = "" if opts.test_only else f"Validation at iteration {step}:\n"
    pictures = [np.concatenate((picture(img, dataset.band_spec),
                                dataset.decode_target(target).transpose(2, 0, 1).astype(np.uint8),
                                dataset.decode_target(pred).transpose(2, 0, 1).astype(np.uint8)), axis=2)
                for img, target, pred in samples]
    info = {**checkpoints, "iteration": step, "model": opts.model, "dataset": opts.dataset,
            "output_stride": opts.output_stride, "crop_val": opts.crop_val,
            **({"crop_size": opts.crop_size} if opts.crop_val else {}), "evaluation": recipe.settings(),
            # bf16 evaluation (CPUs with native bfloat16) can move scores slightly: say what computed them
            "computed_with": {"amp": recipe.amp, "channels_last": recipe.channels_last,
                              "device": hardware_name(device)}}
    return EvaluationReport(header + metrics.to_str(results), results, metrics.confusion_matrix.cpu().numpy(),
                            list(dataset.class_names), info, pictures)


TRAINING_ONLY_OPTIONS = ("total_itrs", "lr", "lr_policy", "step_size", "weight_decay", "batch_size", "bn_momentum",
                         "loss_type", "class_weights", "focal_gamma", "ohem_thresh", "ohem_min_kept", "dice_weight",
                         "print_interval", "val_interval", "checkpoint_dir", "continue_training", "sync_bn")


def check_options(opts) -> None:
    """Values out of range, and options that cannot be honoured together: refused in one line before any work."""
    check_ranges(opts, POSITIVE_OPTIONS, NON_NEGATIVE_OPTIONS)
    refuse_conflicts([
        (opts.test_only and opts.ckpt is None,
         "--test_only evaluates --ckpt: give --ckpt CHECKPOINT (a model that was never trained scores nothing)"),
        (opts.continue_training and opts.ckpt is None,
         "--continue_training resumes --ckpt: give --ckpt CHECKPOINT (e.g. a latest_*.pth), or drop it to start anew"),
        (opts.init_from is not None and opts.ckpt is not None,
         "--init_from and --ckpt both give the starting weights: keep --ckpt to evaluate or resume a checkpoint, or "
         "--init_from to start a new run from a file"),
    ])


def unused_options(opts, env: DistEnv, device: torch.device) -> List[Unused]:
    """The options this combination leaves unused, for :func:`warn_unused` (what the command line gives of them
    is warned about)."""
    training = not opts.test_only
    gpu_id = unused_gpu_id(opts.device, opts.gpu_id, device)
    return [
        (TRAINING_ONLY_OPTIONS, opts.test_only, "--test_only trains nothing"),
        (("step_size",), training and opts.lr_policy == "poly", "the poly schedule has no steps (--lr_policy step)"),
        (("ohem_thresh", "ohem_min_kept"), training and opts.loss_type != "ohem", "--loss_type is not ohem"),
        (("dice_weight",), training and opts.loss_type != "ce+dice", "--loss_type is not ce+dice"),
        (("focal_gamma",), training and opts.loss_type != "focal_loss", "--loss_type is not focal_loss"),
        (("window", "stride"), not opts.eval_slide, "--eval_slide is off"),
        (("val_batch_size",), not opts.crop_val,
         "without --crop_val whole images, of many sizes, are validated one at a time"),
        (("crop_size",), opts.test_only and not opts.crop_val, "--test_only without --crop_val evaluates whole images"),
        (("vis_port", "vis_host", "vis_env"), not opts.enable_vis, "--enable_vis is off"),
        (("vis_num_samples",), not (opts.enable_vis or opts.tensorboard),
         "neither --enable_vis nor --tensorboard shows samples"),
        (("year", "download"), opts.dataset != "voc", f"--dataset {opts.dataset} is not Pascal VOC"),
        (("bands", "band_stats", "rgb_bands"), opts.dataset != "folder",
         f"--dataset {opts.dataset} holds RGB pictures (multi-band imagery is read by --dataset folder)"),
        (("pretrained_backbone",), opts.pretrained_backbone not in (None, False)
         and (opts.ckpt is not None or opts.init_from is not None),
         "the weights of --ckpt or --init_from replace the backbone's (nothing is fetched)"),
        (("gpu_id",), gpu_id is not None, gpu_id),
        (("cudnn_benchmark",), device.type != "cuda", "cuDNN runs on CUDA devices only"),
        (("dist_timeout",), not env.distributed, "this is a single-process run (torchrun starts distributed ones)"),
        unused_output_stride(opts.model),
    ]


def configure(opts, env: DistEnv, device: torch.device, log) -> None:
    """What is checked and set before any data is read: the evaluation recipe, the options left unused, the losses,
    precision and layout, seeds, cuDNN. (--ckpt was read before, by resolve_architecture.)"""
    check_recipe_options(opts.eval_scales, "--eval_scales", opts.eval_slide, opts.window, opts.stride)
    warn_unused(opts, unused_options(opts, env, device), lambda line: log(line, file=sys.stderr))
    check_loss_options(opts.ohem_thresh, opts.ohem_min_kept, opts.dice_weight)
    if opts.tensorboard:
        require_tensorboard()  # on every process, so that all of them stop
    resolve_speed_options(opts, device, log, INFER if opts.test_only else TRAIN)
    keep_freed_memory(device)  # each step reuses the last one's pages, the DataLoader workers' included
    opts.num_workers, workers_note = resolve_num_workers(opts.num_workers, device)
    opts.cudnn_benchmark, benchmark_note = resolve_cudnn_benchmark(opts.cudnn_benchmark, device, opts.total_itrs)
    for note in (workers_note, None if opts.test_only else benchmark_note):
        if note:
            log(note)
    seed_everything(opts.random_seed)
    set_max_image_pixels(opts.max_image_pixels)  # before any image is read, DataLoader workers included
    # training crops have one size; evaluate() decides for itself
    torch.backends.cudnn.benchmark = opts.cudnn_benchmark and not opts.test_only


def build_run_logger(opts, env: DistEnv, train_loader: data.DataLoader, state: TrainState) -> RunLogger:
    """The console, the evaluation files in --results_dir, and the dashboards asked for (process 0 only)."""
    console = ConsoleSink(opts.total_itrs, train_loader.sampler.batches_per_epoch, state.cur_itrs)
    visdom = dict(port=opts.vis_port, env=opts.vis_env, host=opts.vis_host) if opts.enable_vis else None
    logger = build_logger(env.is_main, console, opts.results_dir, visdom, opts.tensorboard, state.cur_itrs)
    logger.table("Options", vars(opts))
    return logger


def process_zero_log(env: DistEnv) -> Callable[..., None]:
    """``print`` on process 0, nothing on the others: one copy of each line."""
    return print if env.is_main else (lambda *args, **kwargs: None)


def load_data(opts, env: DistEnv, device: torch.device, log) -> Tuple[data.Dataset, data.Dataset, data.DataLoader,
                                                                       data.DataLoader]:
    """Prepare the data (once per machine), build both splits and their loaders, set --num_classes, and log the
    sizes."""
    if env.is_node_main:
        prepare_data(opts)
    barrier()
    train_dst, val_dst = get_dataset(opts)
    if opts.dataset == "voc" and env.is_main and holds_demo_data(train_dst.voc_root):
        print(f"warning: {train_dst.voc_root} holds the synthetic demo data ({STAMP_FILE} is there), not Pascal VOC: "
              "scores on it say nothing about VOC; point --data_root at the folder that holds your VOC download, "
              "or use --dataset demo", file=sys.stderr)
    opts.num_classes = resolve_num_classes(opts, train_dst)
    train_loader, val_loader = build_loaders(opts, train_dst, val_dst, env, device)
    training_line = "" if opts.test_only else (f"Train set: {len(train_dst)}, global batch {opts.batch_size} = "
                                                 f"{env.world_size} x {opts.batch_size // env.world_size}, ")
    log(f"Device: {device} x {env.world_size} process(es)  Dataset: {opts.dataset}, {training_line}"
        f"Val set: {len(val_dst)}")
    return train_dst, val_dst, train_loader, val_loader


def run(opts, env: DistEnv, device: torch.device, timer: RunTimer) -> int:
    log = process_zero_log(env)
    configure(opts, env, device, log)
    timer.lap("set-up")
    train_dst, val_dst, train_loader, val_loader = load_data(opts, env, device, log)
    for loader in (val_loader,) if opts.test_only else (train_loader, val_loader):
        loader.start_workers()
    timer.lap("data")

    training = build_training(opts, env, device, train_dst, log)
    state = training.state
    timer.lap("model")
    checkpoint_itrs = (restore(opts, opts.ckpt, training, env, device, train_dst.class_names, log)
                       if opts.ckpt is not None else None)
    if opts.ckpt is not None:
        timer.lap("restore")
    # Not DDP: its first forward after training broadcasts buffers, a collective that a process with an empty
    # validation shard never joins. evaluate() gives every process process 0's buffers itself.
    eval_model = compile_model(training.plain_model, opts.compile) if env.distributed else training.model
    predictor = build_predictor(opts, eval_model, device, log)
    # with --crop_val the loader resizes and crops: the predictor is given whole crops
    log("Evaluation: " + (predictor.recipe.describe(f"images resized and centre-cropped to {opts.crop_size} "
                                                    "(--crop_val)") if opts.crop_val else predictor.recipe.describe()))
    metrics = StreamSegMetrics(opts.num_classes, train_dst.class_names)
    logger = build_run_logger(opts, env, train_loader, state)
    shows_samples = env.is_main and (opts.enable_vis or opts.tensorboard) and len(val_loader) > 0
    sample_ids = np.random.randint(0, len(val_loader), opts.vis_num_samples, np.int32) if shows_samples else ()
    timer.lap("set-up")

    def validate(step: Optional[int]) -> Tuple[dict, Report]:
        """Evaluate; return the scores, and how to report them once the files that hold these weights are known
        (metrics.json names them: "checkpoint", and in training "best_checkpoint")."""
        with timer.phase("evaluation"):
            results, samples = evaluate(opts, predictor, val_loader, device, metrics, sample_ids)

        def report(checkpoints: Dict[str, Optional[str]]) -> None:
            with timer.phase("evaluation", counts=False):  # the same evaluation's files and charts
                logger.evaluation(step or 0, evaluation_report(opts, results, metrics, samples, val_dst, step,
                                                               checkpoints, predictor.recipe, device))
        return results, report

    def save(best: bool) -> str:
        with timer.phase("checkpoint writes"):
            return save_training(opts, env, device, training, train_dst, best)

    try:
        if opts.test_only:
            validate(checkpoint_itrs)[1]({"checkpoint": opts.ckpt})
        else:
            train_and_validate(opts, training, train_loader, env, device, logger, timer, validate, save, log)
        logger.text("Time report", state.cur_itrs, timer.report())
        logger.scalars(state.cur_itrs, timer.scalars(), "time")
        return 0
    finally:
        logger.close()


def train_and_validate(opts, training: "Training", train_loader: data.DataLoader, env: DistEnv,
                       device: torch.device, logger: RunLogger, timer: RunTimer,
                       validate: Callable[[Optional[int]], Tuple[dict, Report]], save: Callable[[bool], str],
                       log) -> None:
    """Train to --total_itrs, validating every --val_interval, then saving ``latest_*`` once (and ``best_*`` as the
    same file on a new best), or until a signal: then save and say how to resume."""
    state = training.state
    batches = training_batches(train_loader, state)
    with StopFlag() as stop:
        while state.cur_itrs < opts.total_itrs:
            next_val = min((state.cur_itrs // opts.val_interval + 1) * opts.val_interval, opts.total_itrs)
            stopped = train_interval(opts, training, batches, next_val, stop, logger, env, device, timer)
            validates = state.cur_itrs == next_val  # also when stopping here: a resume would not come back to it
            if stopped and validates:  # the trained steps are on disk before a validation the stop may cut short
                latest = save(False)
            report, best = None, False
            if validates:
                results, report = validated(validate, state.cur_itrs, state.cur_itrs == opts.total_itrs,
                                            None if stopped or env.distributed else save, log)
                best = results["Mean IoU"] > state.best_score
                state.best_score = max(state.best_score, results["Mean IoU"])  # saved with the weights it rates
            if best or not (stopped and validates):
                latest = save(best)
            if best:
                log(f"New best Mean IoU {state.best_score:.4f}: saved {checkpoint_path(opts, 'best')}")
            if report:
                report({"checkpoint": latest, "best_checkpoint": checkpoint_path(opts, "best") if best else None})
            if stopped:
                log(f"{stop.signal_name or 'A signal to another process'} received: saved {latest} at "
                    f"iteration {state.cur_itrs}; resume with --ckpt {latest} --continue_training")
                return
    log(f"Finished {state.cur_itrs} iterations; best Mean IoU {state.best_score:.4f}")


def validated(validate: Callable[[Optional[int]], Tuple[dict, Report]], step: int, last: bool,
              save: Optional[Callable[[bool], str]], log) -> Tuple[dict, Report]:
    """``validate(step)``; when it fails (a bad validation file, no memory left), ``save`` first keeps the steps
    trained since the last checkpoint in ``latest_*``, as the original, which saved before each validation, kept
    them (``last``: the run's final step). None: they are on disk already, or a torchrun process cannot save alone
    (saving gathers every process's random state). A failed save is said, and the validation's error raised."""
    try:
        return validate(step)
    except Exception as failure:
        if save is None:
            raise
        try:
            path = save(False)
        except Exception as exc:
            log(f"validation at iteration {step} failed, and saving the steps before it failed too: {exc}")
            raise failure
        then = (f"evaluate them with --test_only --ckpt {path}" if last else
                f"resume with --ckpt {path} --continue_training (it validates next at the following interval)")
        log(f"validation at iteration {step} failed: saved {path} first; once the problem below is fixed, {then}")
        raise


def restore(opts, path: str, training: Training, env: DistEnv, device: torch.device, class_names: Sequence[str],
            log=print) -> Optional[int]:
    """Load weights from ``path``, which must have been trained on ``class_names`` (the data's) where it records
    its classes; with --continue_training also the optimizer, scheduler, fp16 loss scale, counters and RNG. Returns
    the checkpoint's iteration (None for a file that holds only weights).

    Under torchrun process 0 reads the file and sends it to the others: only the first machine of a
    multi-node run needs it (that is where checkpoints are written).
    """
    model, optimizer, scheduler = training.plain_model, training.optimizer, training.scheduler
    scaler, state = training.scaler, training.state
    checkpoint = from_process_zero(lambda: load_checkpoint(path), device)
    weights = extract_model_state(checkpoint, path)
    reinit = load_model_state(model, weights, path)
    if reinit:
        raise CheckpointError(other_class_count(opts, path, int(weights[reinit[0]].shape[0])))
    check_class_names(opts, path, checkpoint.get("class_names"), class_names, log)
    if opts.continue_training:
        state.cur_itrs = int(checkpoint["cur_itrs"])
        if state.cur_itrs > opts.total_itrs:
            raise TrainingError(f"{path} is at iteration {state.cur_itrs}, beyond --total_itrs {opts.total_itrs}; "
                                f"pass a --total_itrs above {state.cur_itrs} to train on, or --test_only to evaluate")
        load_optimizer_state(optimizer, checkpoint["optimizer_state"])
        scheduler.load_state_dict(checkpoint["scheduler_state"])
        if scheduler.last_epoch == state.cur_itrs - 1:  # the original saved before its scheduler's step: in step now
            scheduler.last_epoch = state.cur_itrs
        retarget(scheduler, opts.total_itrs, opts.step_size, group_learning_rates(opts.lr), opts.weight_decay)
        state.best_score = max(float(checkpoint["best_score"]), best_saved_score(opts, device, log))
        if "rng_state" in checkpoint:
            note = restore_process_rng_state(checkpoint, env.rank, env.world_size, device)
            if note:
                log(f"note: {note}")
        if scaler.is_enabled() and "scaler_state" in checkpoint:  # else fp16 restarts at scale 2**16, skipping steps
            scaler.load_state_dict(checkpoint["scaler_state"])
        log(f"Training state restored from {path} at iteration {state.cur_itrs}")
    log(f"Model restored from {path}")
    return int(checkpoint["cur_itrs"]) if "cur_itrs" in checkpoint else None


def other_class_count(opts, path: str, checkpoint_classes: int) -> str:
    """The error for a --ckpt whose classifier predicts another number of classes than the data has: evaluating
    or training a head re-initialised at random is never what was meant."""
    data = (f"the folder data in {opts.data_root}" if opts.dataset == "folder" else f"--dataset {opts.dataset}")
    use = "evaluate it with" if opts.test_only else "use"
    return (f"checkpoint {path} predicts {checkpoint_classes} classes, but {data} has {opts.num_classes}; {use} the "
            f"--dataset (and --data_root) it was trained on, or start a new run on these {opts.num_classes} classes "
            f"from it with --init_from {path} (its classifier is then initialised, and the log says so)")


def check_class_names(opts, path: str, recorded: object, names: Sequence[str], log) -> None:
    """A checkpoint that records other class names than the data's (as many: other_class_count is for another
    number). A class at another index is refused by --continue_training, which would go on training it on another
    class's pixels; otherwise (a class renamed, or --test_only) a warning line."""
    if not isinstance(recorded, (list, tuple)) or [str(name) for name in recorded] == list(names):
        return  # the original's files record none
    recorded = [str(name) for name in recorded]
    message = f"checkpoint {path} was trained on classes {recorded}, but the data names {list(names)}"
    moved = [name for index, name in enumerate(names) if name in recorded and recorded.index(name) != index]
    if opts.continue_training and moved:
        raise CheckpointError(f"{message}: {moved[0]!r} is at another index; a resumed run keeps its classes in their "
                              f"order: give it the data it was trained on, or start a new run on these classes from "
                              f"it with --init_from {path}")
    log(f"warning: {message}: each class {'is scored' if opts.test_only else 'goes on'} under the data's name for "
        "its index", file=sys.stderr)


def best_saved_score(opts, device: torch.device, log=print) -> float:
    """The score of the best_* checkpoint that this run would overwrite (0 if there is none).

    A resume compares against it too: a latest_* written between a new best_* and its own update, or by an
    earlier version of this script (which saved latest_* before validating), holds an older, lower score.
    """
    path = checkpoint_path(opts, "best")
    score = from_process_zero(lambda: float(load_checkpoint(path, mmap=True).get("best_score", 0.0))
                              if os.path.isfile(path) else 0.0, device)
    if score:
        log(f"Best Mean IoU so far {score:.4f}, from {path}")
    return score


PEER_FAILURE_MARKS = ("gloo", "NCCL", "Connection reset", "Connection closed", "timed out", "Timeout")


def _lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another process died or stalled."""
    return isinstance(exc, torch.distributed.DistError) or any(mark in str(exc) for mark in PEER_FAILURE_MARKS)


def main(argv: Optional[List[str]] = None) -> int:
    # Progress lines show up promptly in logs and pipes; a path that is not UTF-8 prints escaped, not as a crash.
    sys.stdout.reconfigure(line_buffering=True, errors="backslashreplace")
    timer = RunTimer(IMPORTS_SECONDS if __name__ == "__main__" else 0.0)  # imported by a test: not our start-up
    opts = parse_with_config(get_argparser(), argv)
    # Process 0 only: the others of a torchrun run own no output, and one waiting in a collective could not run a
    # handler (stopped at once by the default instead). The training loop takes the signals over: it saves first.
    if os.environ.get("RANK", "0") == "0":
        stopping = stop_signals_raise()
    else:
        starting_handlers_gone()
        stopping = contextlib.nullcontext()
    try:
        with stopping:
            check_options(opts)
            env, device = init_distributed(opts.device, opts.gpu_id, opts.dist_timeout)
            timer.device = device
            try:
                resolve_architecture(opts, device)
                if opts.continue_training:
                    resume_settings(opts, device, process_zero_log(env))
                with output_guard(opts, env):
                    return run(opts, env, device, timer)
            finally:
                cleanup()
    except StoppedBySignal as exc:
        return exc.say("every file written so far is whole (a signal during training saves a resumable checkpoint "
                       "first)")
    except (DatasetError, CheckpointError, PretrainedWeightsError, ConfigError, TrainingError, LoggerError,
            LockHeldError, ValueError) as exc:
        # a DataLoader worker that died while a checkpoint loaded is not the file's fault
        print(f"error: {worker_death(exc) or error_message(exc)}", file=sys.stderr)
        return 1
    except (torch.distributed.DistError, RuntimeError) as exc:
        death = worker_death(exc)  # raised wherever the main process happened to be
        if death:
            print(f"error: {death}", file=sys.stderr)
            return 1
        if not _lost_peer(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: lost contact with another process of the distributed run ({first}); a process died (its "
              f"own error is above) or stalled for --dist_timeout {opts.dist_timeout:g} s. Resume from the latest "
              "checkpoint with --ckpt ... --continue_training", file=sys.stderr)
        return 1


if __name__ == "__main__":
    freeze_imported()
    exit_keeping_status(main())
