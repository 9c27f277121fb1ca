"""Predict segmentation masks for an image, a video, a folder (recursive) or a glob with a trained checkpoint.

``python predict.py --input DIR --ckpt best.pth --model deeplabv3plus_mobilenet [--output color label overlay]``
``python predict.py --input DIR --onnx model.onnx [...]``: the same with ONNX Runtime (from tools/export_onnx.py)
"""
if __name__ == "__main__":  # first, before torch loads (seconds): Ctrl-C or SIGTERM then ends it in one line
    from utils.io.stop_signals import stop_quietly_while_starting
    from utils.runtime.collector import freeze_imported, pause_during_imports
    stop_quietly_while_starting()
    pause_during_imports()

import argparse
import errno
import operator
import os
import signal
import sys
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from datasets import DatasetError, VOCSegmentation
from datasets.class_info import NAMED_DATASETS, ClassInfo, label_id_table, resolve_classes
from datasets.image_files import ImageFiles, VideoFrames, find_images, is_video, left_out_of_search
from network import PretrainedWeightsError
from network.trained_model import ModelSpec, add_model_options, load_model_of, unused_output_stride
from utils.io.checkpoint import CheckpointError
from utils.config import ConfigError, HelpFormatter, Unused, check_ranges, parse_with_config, warn_unused
from utils.runtime.device import (add_device_options, add_speed_options, compile_model, native_bf16, resolve_device,
                                  resolve_num_workers, resolve_speed_options, unused_gpu_id)
from utils.io.atomic import (NAME_MAX, describe_removed, remove_orphaned_temporaries, removed_if_left_empty,
                             require_writable, write_advice)
from utils.io.bands import BandSpec, band_list, normalize_bands
from utils.inference.geotiff import PREVIEW_MAX_SIDE, predict_scene
from utils.io.image_limit import add_max_image_pixels_option, set_max_image_pixels
from network.fusion import fuse_conv_activations
from utils.inference.predictor import (InferenceRecipe, InputTooSmallError, SegmentationPredictor, add_window_options,
                                       check_recipe_options, normalize)
from utils.io.stop_signals import STOPPED_BY_SIGNAL_EXIT, exit_keeping_status
from utils.runtime.host_memory import keep_freed_memory
from utils.runtime.interrupts import StopFlag, StoppedBySignal, WorkerLoader, stop_signals_raise, worker_death
from utils.inference.onnx_model import OnnxModelError, OnnxSegmenter
from utils.inference.outputs import (OUTPUT_KINDS, OVERLAY_ALPHA, Drawing, ImageWriter, VideoWriter, output_names,
                                     planned_outputs, video_outputs)
from utils.io.own_outputs import input_clashes, is_own_output
from utils.io.raster import RasterError
from utils.io.video import VideoError, import_av

POSITIVE_OPTIONS = ("window", "stride", "val_batch_size", "crop_size", "num_classes")


class PredictError(RuntimeError):
    """Options that cannot work together; the message says what to change."""


def get_argparser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--config", help="YAML file whose keys are these options (flags given here win)")
    parser.add_argument("--input", type=str, required=True,
                        help="an image or video, a folder (searched recursively) or a glob")
    parser.add_argument("--dataset", type=str, default=None, choices=[*NAMED_DATASETS, "folder"],
                        help="draw with this dataset's palette (default: the colours the checkpoint or ONNX file "
                             "records, else VOC's; folder: the record, or give --classes); cityscapes: its label "
                             "ids for --output labelids")
    parser.add_argument("--classes", type=str, default=None,
                        help="classes.yaml of your own data: draw with its palette, and its ids for --output labelids "
                             "(default: none)")
    add_model_options(parser)
    parser.add_argument("--save_val_results_to", default="predictions",
                        help="folder for the results, made if needed; inputs' subfolders are mirrored in it")
    parser.add_argument("--output", nargs="+", default=["color"], choices=OUTPUT_KINDS,
                        help="color (palette image, as the original), label (palette PNG of class indices), overlay, "
                             "labelids (8-bit ids for a benchmark: Cityscapes' label ids, or classes.yaml's ids)")
    parser.add_argument("--overlay_alpha", type=float, default=OVERLAY_ALPHA,
                        help="overlay: weight of the class colours over the photo (0 to 1)")
    parser.add_argument("--crop_val", action=argparse.BooleanOptionalAction, default=False,
                        help="infer with the shorter side resized to --crop_size (results keep the input size)")
    parser.add_argument("--val_batch_size", type=int, default=4, help="images of equal size predicted together")
    parser.add_argument("--crop_size", type=int, default=513, help="--crop_val: the shorter side to infer at")
    parser.add_argument("--ckpt", type=str, help="checkpoint (this project's, the original's, or a state_dict)")
    parser.add_argument("--onnx", type=str, help="instead of --ckpt: an ONNX file from tools/export_onnx.py, run by "
                                                 "ONNX Runtime on the CPU")
    add_device_options(parser)
    add_speed_options(parser)
    parser.add_argument("--num_workers", type=int, default=None,
                        help="decoding workers (default: on a GPU the cores less one, at most 16; on the CPU "
                             "min(4, cores))")
    add_max_image_pixels_option(parser)
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=False,
                        help="test-time augmentation: flip and scales")
    parser.add_argument("--tta_scales", type=float, nargs="+", default=[0.75, 1.0, 1.25],
                        help="with --tta: the scales whose probabilities are summed")
    parser.add_argument("--tta_flip", action=argparse.BooleanOptionalAction, default=True,
                        help="with --tta: add horizontally flipped copies")
    parser.add_argument("--slide", action=argparse.BooleanOptionalAction, default=False,
                        help="sliding-window inference for images larger than the training crop")
    add_window_options(parser, "--slide")
    parser.add_argument("--rgb_bands", type=band_list, default=None, metavar="3,2,1",
                        help="multi-band models: the bands (1-based) the overlay shows as R, G, B (default: those the "
                             "model records, else the first band as gray)")
    return parser


def load_model(opts, device: torch.device) -> Tuple[torch.nn.Module, ModelSpec]:
    """The model of --ckpt (options left unset come from the checkpoint, see :func:`load_trained_model`),
    set up for ``device`` and the speed options; returns it with what the checkpoint says of it."""
    model, spec = load_model_of(opts)
    model.to(device)
    if opts.channels_last:
        model.to(memory_format=torch.channels_last)
    # oneDNN's fused bf16 convolutions need AVX-512 (emulated bf16 is the unfused path); inductor fuses by itself
    if device.type == "cpu" and not opts.compile and (opts.amp == "off" or native_bf16(device)):
        fuse_conv_activations(model.requires_grad_(False))
    return compile_model(model, opts.compile), spec


# A whole-image forward pass needs memory in proportion to the pixels (the decoder's stride-4 features and the
# full-size logits: about 9 GB of logits alone at 12000x9000). Larger images are predicted in sliding windows.
WHOLE_IMAGE_MAX_PIXELS = 4096 * 4096


def recipe_from(opts) -> InferenceRecipe:
    """The inference recipe the options ask for (--tta, --slide, --crop_val, precision)."""
    return InferenceRecipe(scales=tuple(opts.tta_scales) if opts.tta else (1.0,), flip=opts.tta and opts.tta_flip,
                           slide=opts.slide, window=opts.window, stride=opts.stride,
                           short_side=opts.crop_size if opts.crop_val else None,
                           slide_above_pixels=WHOLE_IMAGE_MAX_PIXELS, amp=opts.amp, channels_last=opts.channels_last)


def check_model_source(opts) -> None:
    """Exactly one of --ckpt and --onnx (a --config file may give one of them)."""
    if opts.ckpt and opts.onnx:
        raise PredictError("--ckpt and --onnx are both given (one may come from --config); keep one")
    if not (opts.ckpt or opts.onnx):
        raise PredictError("give the model: --ckpt CHECKPOINT (PyTorch) or --onnx MODEL.onnx (ONNX Runtime)")


def check_onnx_options(opts) -> None:
    """Refuse the options only PyTorch runs with --onnx; --amp auto and --channels_last auto become off, as ONNX
    Runtime computes in fp32 on NCHW tensors on the CPU."""
    torch_only = [("--compile", opts.compile), (f"--amp {opts.amp}", opts.amp in ("bf16", "fp16")),
                  ("--channels_last", opts.channels_last is True),
                  (f"--device {opts.device}", opts.device not in ("auto", "cpu"))]
    for flag, given in torch_only:
        if given:
            raise PredictError(f"{flag} needs PyTorch, and --onnx runs ONNX Runtime in fp32 on the CPU; drop "
                               f"{flag.split()[0]}, or predict with --ckpt")
    for flag in ("model", "output_stride", "separable_conv", "num_classes"):
        if getattr(opts, flag) is not None:
            raise PredictError(f"--{flag} comes from the ONNX file's metadata with --onnx; drop it")
    opts.amp, opts.channels_last = "off", False


def check_sizes(opts) -> None:
    """Sizes, counts and scales must be positive (a stride of 0 or less would leave class-0 bands, for one), the
    overlay's opacity within 0..1, and windows must not skip pixels: with or without --slide, since huge images
    are predicted in windows anyway."""
    check_ranges(opts, POSITIVE_OPTIONS, ("num_workers",), fractions=("overlay_alpha",))
    check_recipe_options(opts.tta_scales, "--tta_scales", True, opts.window, opts.stride)


def unused_options(opts, device: torch.device, bands: Optional[BandSpec]) -> List[Unused]:
    """The options this combination leaves unused, for :func:`warn_unused` (what the command line gives of them
    is warned about); ``bands``: those of a multi-band model, whose scenes are always predicted in windows."""
    gpu_id = "--onnx runs ONNX Runtime on the CPU" if opts.onnx else unused_gpu_id(opts.device, opts.gpu_id, device)
    side = int(WHOLE_IMAGE_MAX_PIXELS ** 0.5)
    return [
        (("tta_scales", "tta_flip"), not opts.tta, "--tta is off"),
        (("window", "stride"), not opts.slide and bands is None,
         f"--slide is off: only images over {side}x{side} pixels are predicted in windows"),
        (("overlay_alpha",), "overlay" not in opts.output, "--output has no overlay"),
        (("crop_size",), not opts.crop_val, "--crop_val is off"),
        (("dataset",), bool(opts.classes) and opts.dataset not in (None, "folder"),
         "--classes gives the classes' names, colours and ids"),
        (("gpu_id",), gpu_id is not None, gpu_id),
    ]


def predict_video(opts, path: str, stem: str, predictor: SegmentationPredictor, drawing: Drawing,
                  stop: StopFlag) -> int:
    """Predict the video at ``path`` in batches of frames, writing its outputs as it goes; returns the frames done.

    Each output frame keeps its input frame's timestamp, and the outputs carry the input's sound. Stops after the
    batch in progress on a signal, leaving playable videos under partial names. VideoError when the file cannot be
    read (its videos are then not written), or when it ends well before what its header announces (a file cut
    short: the outputs hold the frames it has)."""
    with VideoFrames(path, opts.val_batch_size) as frames:
        with VideoWriter(opts.save_val_results_to, stem, opts.output, drawing, frames.info.format) as writer, \
                tqdm(total=frames.info.frames or None, unit="frame", disable=None,
                     desc=os.path.basename(path)) as progress:
            for batch in frames:
                writer.write_sound(batch.sound)
                if batch.times:
                    with torch.inference_mode():
                        labels = predictor.labels(batch.images).to(torch.uint8).cpu().numpy()
                    for image, label, pts in zip(batch.images.permute(0, 2, 3, 1).numpy(), labels, batch.times):
                        writer.write(image, label, pts)
                progress.update(len(batch.times))
                if stop.signal_name:
                    writer.stop()  # the outputs keep their partial names
                    break
        shortfall = "" if stop.signal_name else frames.shortfall()
    if shortfall:
        raise VideoError(f"{path} ends after {shortfall} its header announces (cut short?); its outputs hold the "
                         f"{writer.frames} frames it has")
    return writer.frames


def find_inputs(opts) -> List[Tuple[str, str]]:
    """The images and videos of --input, without the output folder and without the files that this project wrote
    (they carry its mark: earlier results beside the photos), unless --input names that file itself."""
    files = find_images(opts.input, exclude=opts.save_val_results_to)
    if os.path.isfile(opts.input):
        return files
    own = {path for path, _ in files if is_own_output(path)}
    if len(own) == len(files):
        raise PredictError(f"--input {opts.input} holds only results of earlier runs ({len(own)} file(s), such as "
                           f"{min(own)}); give the folder of the photos or videos")
    if own:
        print(f"note: skipped {len(own)} file(s) in {opts.input} that earlier runs wrote (such as {min(own)}); "
              "give one as --input to predict it")
    return [file for file in files if file[0] not in own]


def inputs_and_outputs(opts) -> Tuple[List[Tuple[str, str]], List[str], List[Tuple[str, str]]]:
    """(images, their output stems, videos with theirs) of --input, once the output folder is ready for them
    (:func:`prepare_output_folder`)."""
    files = find_inputs(opts)
    names = output_names(files)
    videos = [(path, name) for (path, _), name in zip(files, names) if is_video(path)]
    image_names = [name for (path, _), name in zip(files, names) if not is_video(path)]
    images = [file for file in files if not is_video(file[0])]
    prepare_output_folder(opts, images, image_names, videos)
    return images, image_names, videos


def prepare_output_folder(opts, images: Sequence[Tuple[str, str]], image_stems: Sequence[str],
                          videos: Sequence[Tuple[str, str]]) -> None:
    """Refuse before any work when an output would be written over an input (whatever the spelling of either
    path), or over a file without the mark of this project's outputs in an output folder inside --input (whose
    files the search leaves out); then remove what killed runs left in the folders that this run writes."""
    out = opts.save_val_results_to
    files, frame_folders = planned_outputs(out, image_stems, [stem for _, stem in videos], opts.output)
    clashes = input_clashes([path for path, _ in images] + [path for path, _ in videos], files, frame_folders)
    if clashes:
        output, path = clashes[0]
        folder = os.path.normpath(out)
        instead = "predictions" if folder in (os.curdir, os.pardir) else folder + "_predictions"
        raise PredictError(f"--save_val_results_to {out} would write {output} over the input {path}"
                           f"{and_more(clashes)}; nothing was written: give another folder, e.g. --save_val_results_to "
                           f"{instead}")
    if left_out_of_search(opts.input, out):  # its files are not inputs: a photo there would not count as one
        partial = {pair[1] for _, stem in videos for pair in video_outputs(out, stem, opts.output).values()}
        unmarked = [path for path in files if path not in partial and os.path.isfile(path) and not is_own_output(path)]
        if unmarked:
            raise PredictError(
                f"--save_val_results_to {out} lies inside --input {opts.input}, which is not searched there, and "
                f"holds {unmarked[0]}{and_more(unmarked)}, which this project's outputs would replace; it carries no "
                "mark of them (a photo? results of the original or of versions before 6 December carry none either); "
                "nothing was written: move it away, or give another folder")
    folders = sorted({os.path.dirname(path) for path in files} | set(frame_folders))
    removed = [entry for folder in folders for entry in remove_orphaned_temporaries(folder)]
    if removed:
        print(describe_removed(removed, "temporary file(s) that a killed run left", out))


def and_more(items: Sequence[object]) -> str:
    """" (and N more)" after the first of ``items`` named in a message; nothing for one."""
    return f" (and {len(items) - 1} more)" if len(items) > 1 else ""


def stopped_video_line(path: str, frames: int, outputs: Dict[str, Tuple[str, str]]) -> str:
    """What a stop signal left of the video at ``path``: its partial outputs, and the complete ones of an earlier
    run, which are kept."""
    if not frames:
        return f"stopped before {path}; nothing of it was written"
    partial = ", ".join(part + ("" if part.endswith(".mp4") else os.sep) for _, part in outputs.values())
    complete = [final for final, _ in outputs.values() if os.path.exists(final)]
    kept = f"; the complete outputs of an earlier run are kept: {', '.join(complete)}" if complete else ""
    return f"stopped after {frames} frames of {path}; they are in {partial} (playable){kept}"


def check_scene_options(opts) -> None:
    """What a multi-band model cannot do: benchmark label ids, and --crop_val (a scene is predicted at its own
    resolution)."""
    if "labelids" in opts.output:
        raise PredictError("--output labelids writes benchmark ids of RGB images; for a multi-band model use --output "
                           "label (a GeoTIFF of class indices)")
    if opts.crop_val:
        raise PredictError("--crop_val resizes RGB images; a multi-band scene is predicted at its own resolution: "
                           "drop it")


def predict_scenes(opts, files: List[Tuple[str, str]], stems: Sequence[str], videos: Sequence[Tuple[str, str]],
                   predictor: SegmentationPredictor, drawing: Drawing, bands: BandSpec, stop: StopFlag) -> int:
    """A multi-band model's inputs (``files``, written under ``stems``), each read, predicted in sliding windows
    (always: --window, --stride) and written window by window (utils.geotiff); the exit status as :func:`run`'s."""
    for path, _ in videos:
        print(f"skipped: {path}: a multi-band model does not read videos", file=sys.stderr)
    done, skipped = 0, len(videos)
    for (path, _), stem in zip(files, stems):
        if stop.signal_name:
            return stopped(stop, progress_line(done, len(files), "inputs", opts.save_val_results_to))
        try:
            with torch.inference_mode():
                info = predict_scene(path, os.path.join(opts.save_val_results_to, stem), bands,
                                     predictor.probabilities, predictor.num_classes, opts.window, opts.stride,
                                     opts.output, drawing.palette, opts.rgb_bands or bands.rgb_bands,
                                     opts.overlay_alpha)
        except (RasterError, InputTooSmallError) as exc:
            print(skipped_line(path, exc), file=sys.stderr)
            skipped += 1
            continue
        except OSError as exc:  # a full disk: every file already written is whole (atomic_write)
            if not skipped_for_a_long_name(path, exc):
                raise write_failure(path, exc, opts.save_val_results_to, done, "inputs") from exc
            skipped += 1
            continue
        if "label" in opts.output and not info.georeferenced:
            print(f"note: {path} has no CRS: its label map {stem}_label.tif is a plain TIFF, not georeferenced")
        if max(info.width, info.height) > PREVIEW_MAX_SIDE and set(opts.output) & {"color", "overlay"}:
            print(f"note: the PNG previews of {path} ({info.width}x{info.height}) are scaled down to at most "
                  f"{PREVIEW_MAX_SIDE} pixels a side; the label GeoTIFF has every pixel")
        done += 1
    print(f"{done} done, {skipped} skipped; results in {opts.save_val_results_to}")
    return 1 if skipped else 0


def stopped(stop: StopFlag, what: str) -> int:
    """Say that ``stop``'s signal ended the run and ``what`` was done and kept; the exit status a shell reports."""
    print(f"{stop.signal_name} received: {what}", file=sys.stderr)
    return STOPPED_BY_SIGNAL_EXIT + signal.Signals[stop.signal_name]


def progress_line(done: int, total: int, kind: str, folder: str) -> str:
    """How far a stopped run got: ``done`` of ``total`` inputs (``kind``: images, inputs) written to ``folder``."""
    if not done:
        return f"stopped before the first of {total} {kind}; nothing was written"
    return f"stopped after {done} of {total} {kind}; the results in {folder} are complete"


def skipped_line(path: str, exc: Exception) -> str:
    """The line for an input that is skipped (a decoder's or reader's error names the file itself)."""
    return f"skipped: {path}: {exc}" if isinstance(exc, InputTooSmallError) else f"skipped: {exc}"


def skipped_for_a_long_name(path: str, exc: OSError) -> bool:
    """Whether ``exc`` says that the names of ``path``'s outputs are too long for the file system; the input is then
    skipped alone, with a line (other inputs go on)."""
    if exc.errno != errno.ENAMETOOLONG:
        return False
    print(f"skipped: {path}: the names of its outputs are too long for the file system (over the {NAME_MAX} bytes a "
          "file name may have, or a path too long); shorten its name or the output folder's path", file=sys.stderr)
    return True


def write_failure(path: str, exc: OSError, folder: str, done: Optional[int] = None,
                  inputs: str = "images") -> PredictError:
    """The error for results of ``path`` that cannot be written to ``folder``: the cause, the ``done`` inputs
    before it that are complete (every file written is whole), and what to do about the cause."""
    kept = "" if done is None else f"the {done} {inputs} before it are complete in {folder}; "
    return PredictError(f"cannot write the results of {path} ({exc.strerror or exc}); {kept}"
                        f"{write_advice(exc, folder)}")


def load_segmenter(opts, device: torch.device) -> Tuple[Any, int, ClassInfo, Optional[BandSpec]]:
    """The model of --ckpt or --onnx, its class count, classes (names and colours, see :func:`resolve_classes`)
    and the bands it reads (None for RGB); warns once about options that the model leaves unused."""
    if opts.onnx:
        model = OnnxSegmenter(opts.onnx)
        meta = model.metadata
        num_classes, class_names, colours, bands, stride_rule = (meta.num_classes, meta.class_names, meta.palette,
                                                                 meta.bands, [])
    else:
        model, spec = load_model(opts, device)
        num_classes, class_names, colours, bands = spec.num_classes, spec.class_names, spec.palette, spec.bands
        stride_rule = [unused_output_stride(spec.model_name)]
    warn_unused(opts, unused_options(opts, device, bands) + stride_rule)
    classes = resolve_classes(num_classes, opts.classes, opts.dataset, class_names, colours,
                              model=opts.onnx or opts.ckpt)
    if classes.from_indices and num_classes != len(VOCSegmentation.class_names):
        print(f"note: {opts.onnx or opts.ckpt} does not record its classes; the {num_classes} classes are drawn with "
              "the VOC colours (give --classes classes.yaml for your own)")
    return model, num_classes, classes, bands


def run(opts, stop: StopFlag) -> int:
    """Check the options and inputs, load the model, and predict every input; the exit status (1 when an input
    was skipped, 128 + the signal's number when one stopped the run)."""
    check_model_source(opts)
    check_sizes(opts)
    require_writable(opts.save_val_results_to, "--save_val_results_to")
    if opts.onnx:
        check_onnx_options(opts)
        device = torch.device("cpu")
    else:
        device = resolve_device(opts.device, opts.gpu_id)
        resolve_speed_options(opts, device)
    opts.num_workers, workers_note = resolve_num_workers(opts.num_workers, device)
    if workers_note:
        print(workers_note)
    keep_freed_memory(device)  # each image reuses the last one's pages
    set_max_image_pixels(opts.max_image_pixels)
    try:
        with stop_signals_raise():  # a search may take long: a slow network share, a ** glob through linked folders
            files, names, videos = inputs_and_outputs(opts)
    except StoppedBySignal as exc:
        return exc.say("nothing was written (the search of --input was cut short)")
    if videos:
        import_av()  # a missing package is one line before any work
    loader = image_loader(files, opts.num_workers, device)  # before the model: see WorkerLoader.start_workers
    model, num_classes, classes, bands = load_segmenter(opts, device)
    label_ids = label_id_table(opts.classes, opts.dataset) if "labelids" in opts.output else None
    drawing = Drawing(classes.colour_table(), opts.overlay_alpha, label_ids)
    if bands is not None:
        del loader  # scenes are read window by window: its idle workers end here
        check_scene_options(opts)
        predictor = SegmentationPredictor(model, num_classes, recipe_from(opts), prepare=lambda values: normalize_bands(
            values.to(device, non_blocking=True), bands))
        return predict_scenes(opts, files, names, videos, predictor, drawing, bands, stop)
    predictor = SegmentationPredictor(model, num_classes, recipe_from(opts),
                                      prepare=lambda images: normalize(images.to(device, non_blocking=True)))
    images = predict_images(opts, loader, files, names, predictor, ImageWriter(opts.save_val_results_to, opts.output,
                                                                                drawing), stop)
    del loader  # its workers end, and the memory they hold, before the videos
    if images.stopped:  # the images in flight are left for a rerun; every file written is whole
        return stopped(stop, progress_line(images.done, len(files), "images", opts.save_val_results_to))
    return predict_videos(opts, videos, predictor, drawing, stop, images.done, images.skipped)


class ImagesDone(NamedTuple):
    """What :func:`predict_images` did: images written and skipped, and whether a stop signal ended it early."""

    done: int
    skipped: int
    stopped: bool


def image_loader(files: List[Tuple[str, str]], num_workers: int, device: torch.device) -> WorkerLoader:
    """A loader of ``files`` as :class:`ImageFiles` items, one at a time, its worker processes started, idle (none
    for no files: videos alone)."""
    num_workers = num_workers if files else 0
    loader = WorkerLoader(ImageFiles(files), batch_size=1, collate_fn=operator.itemgetter(0), num_workers=num_workers,
                          persistent_workers=num_workers > 0, pin_memory=device.type == "cuda")
    loader.start_workers()
    return loader


def predict_images(opts, loader: Iterable, files: List[Tuple[str, str]], names: Sequence[str],
                   predictor: SegmentationPredictor, writer: ImageWriter,
                   stop: StopFlag) -> ImagesDone:
    """Predict the images of ``loader`` (index, image or the reason it was skipped), batching images of one size
    up to --val_batch_size, and write them, until ``stop`` has a signal."""
    done, skipped = 0, 0
    pending: List[Tuple[int, torch.Tensor]] = []

    def flush() -> None:
        nonlocal done, skipped
        if not pending:
            return
        try:
            with torch.inference_mode():
                labels = predictor.labels(torch.stack([image for _, image in pending])).to(torch.uint8).cpu().numpy()
        except InputTooSmallError as exc:  # images of one size are batched together: skip them all
            for index, _ in pending:
                print(skipped_line(files[index][0], exc), file=sys.stderr)
            skipped += len(pending)
            pending.clear()
            return
        for (index, image), label in zip(pending, labels):
            try:
                writer.write(names[index], image.permute(1, 2, 0).numpy(), label)
            except OSError as exc:  # a full disk: every file already written is whole (atomic_write)
                if not skipped_for_a_long_name(files[index][0], exc):
                    raise write_failure(files[index][0], exc, opts.save_val_results_to, done) from exc
                skipped += 1
                continue
            done += 1
        pending.clear()

    for index, item in loader:
        if stop.signal_name:
            return ImagesDone(done, skipped, stopped=True)
        if isinstance(item, str):
            print(f"skipped: {item}", file=sys.stderr)
            skipped += 1
            continue
        if pending and (item.shape != pending[0][1].shape or len(pending) >= opts.val_batch_size):
            flush()
        pending.append((index, item))
    flush()
    return ImagesDone(done, skipped, stopped=False)


def predict_videos(opts, videos: Sequence[Tuple[str, str]], predictor: SegmentationPredictor, drawing: Drawing,
                   stop: StopFlag, done: int, skipped: int) -> int:
    """Predict each video (path, output stem) frame by frame after ``done`` and ``skipped`` images; print the
    totals and return the exit status as :func:`run` does."""
    for path, stem in videos:
        frames = 0
        try:
            if not stop.signal_name:
                frames = predict_video(opts, path, stem, predictor, drawing, stop)
        except (VideoError, InputTooSmallError) as exc:
            print(skipped_line(path, exc), file=sys.stderr)
            skipped += 1
            continue
        except OSError as exc:  # a full disk, a folder in the way
            if not skipped_for_a_long_name(path, exc):
                raise write_failure(path, exc, opts.save_val_results_to) from exc
            skipped += 1
            continue
        if stop.signal_name:
            return stopped(stop, stopped_video_line(path, frames, video_outputs(opts.save_val_results_to, stem,
                                                                                opts.output)))
        done += 1
    print(f"{done} done, {skipped} skipped; results in {opts.save_val_results_to}")
    return 1 if skipped else 0


def main(argv: Optional[List[str]] = None) -> int:
    sys.stdout.reconfigure(errors="backslashreplace")  # a path that is not UTF-8 prints escaped, not as a crash
    opts = parse_with_config(get_argparser(), argv)
    try:
        # from the start: a signal while the model loads also ends the run in one line; an output folder that
        # this run made and wrote nothing in goes at its end
        with StopFlag() as stop, removed_if_left_empty([opts.save_val_results_to]):
            return run(opts, stop)
    except (DatasetError, CheckpointError, PretrainedWeightsError, ConfigError, PredictError, OnnxModelError,
            ValueError) as exc:
        # a DataLoader worker that died while the model loaded is not the file's fault
        print(f"error: {worker_death(exc) or exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        death = worker_death(exc)  # raised wherever this process happened to be
        if death is None:
            raise
        print(f"error: {death}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    freeze_imported()
    exit_keeping_status(main())
