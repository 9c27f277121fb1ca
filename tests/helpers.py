"""Tiny datasets and checkpoints the tests write themselves."""
import os
import pickletools
import signal
import subprocess
import threading
import time
import zipfile
from typing import Callable, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from datasets.voc import voc_cmap
from utils.scheduler import PolyLR

NUMPY2_SCALAR = "numpy._core.multiarray scalar"
NUMPY1_SCALAR = "numpy.core.multiarray scalar"


def write_voc(root: str, names_train: Sequence[str] = ("a", "b", "c", "d"), names_val: Sequence[str] = ("e", "f"),
              size=(40, 30), num_classes: int = 3, seed: int = 0) -> str:
    """A minimal VOC2012 folder under ``root`` (VOCdevkit/VOC2012/...) with random images and masks."""
    rng = np.random.default_rng(seed)
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        os.makedirs(os.path.join(voc, sub), exist_ok=True)
    palette = voc_cmap().flatten().tolist()
    for name in list(names_train) + list(names_val):
        w, h = size
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            os.path.join(voc, "JPEGImages", name + ".jpg"))
        mask = rng.integers(0, num_classes, (h, w)).astype(np.uint8)
        mask[0, :] = 255
        m = Image.fromarray(mask, mode="L").convert("P")
        m.putpalette(palette)
        m.save(os.path.join(voc, "SegmentationClass", name + ".png"))
    for split, names in (("train", names_train), ("val", names_val)):
        with open(os.path.join(voc, "ImageSets", "Segmentation", split + ".txt"), "w") as f:
            f.write("\n".join(names) + "\n")
    return voc


def coco_run_lengths(mask: np.ndarray) -> List[int]:
    """COCO's uncompressed RLE counts of ``mask``, computed here: run lengths of the column-major pixels,
    starting with a run of zeros (of length 0 when the first pixel is set)."""
    flat = mask.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return ([0] if flat[0] else []) + runs


def write_original_checkpoint(path: str, model: nn.Module, cur_itrs: int = 3, numpy1_pickle: bool = False) -> str:
    """A checkpoint as the original's main.py writes it, for ``model``: its five keys, SGD state with momentum
    buffers (backbone at 0.1x the learning rate), PolyLR state one step behind ``cur_itrs`` (it saved before its
    scheduler's step), and ``best_score`` from ``np.nanmean`` (a NumPy float64, 0.25 here). ``numpy1_pickle`` spells
    the scalar's global as NumPy 1.x pickled it."""
    optimizer = torch.optim.SGD([{"params": model.backbone.parameters(), "lr": 0.001},
                                 {"params": model.classifier.parameters(), "lr": 0.01}],
                                lr=0.01, momentum=0.9, weight_decay=1e-4)
    scheduler = PolyLR(optimizer, 30000, power=0.9)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    for itrs in range(1, cur_itrs + 1):
        optimizer.step()
        if itrs < cur_itrs:  # it saved latest_* after the optimizer's step, before the scheduler's
            scheduler.step()
    best_score = np.nanmean(np.array([0.5, np.nan, 0.0]))
    torch.save({"cur_itrs": cur_itrs, "model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(),
                "scheduler_state": scheduler.state_dict(), "best_score": best_score}, path)
    if numpy1_pickle:
        _respell_global(path, NUMPY2_SCALAR, NUMPY1_SCALAR)
    return path


def _respell_global(path: str, old: str, new: str) -> None:
    """Rewrite the pickle GLOBAL ``old`` ("module name") as ``new`` inside the torch zip at ``path``.

    torch.save pickles with protocol 2, where GLOBAL is newline-terminated text, not length-prefixed:
    replacing the bytes keeps the pickle valid, which parsing it again checks.
    """
    def spelled(name: str) -> bytes:
        return b"c" + name.replace(" ", "\n").encode() + b"\n"

    with zipfile.ZipFile(path) as archive:
        records = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for info, data in records:
            if info.filename.endswith("/data.pkl"):
                assert data.count(spelled(old)) == 1, f"{old} is not pickled once in {path}"
                data = data.replace(spelled(old), spelled(new))
                globals_ = [arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"]
                assert new in globals_ and old not in globals_
            archive.writestr(info, data)


def signal_group_when(cmd: Sequence[str], ready: Callable[[str], bool], signum: int, cwd: str, env=None,
                      timeout: float = 180) -> Tuple[int, str]:
    """Run ``cmd`` as its own process group; once ``ready(output so far)`` holds, send ``signum`` to the whole
    group (as a job scheduler or Ctrl-C in a terminal does). Returns (exit status, everything it printed)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env,
                            start_new_session=True)
    lines: List[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.time() + timeout
    while not ready("".join(lines)):
        if time.time() > deadline or proc.poll() is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended before it was ready, and its group with it
                pass
            reader.join(timeout=10)
            raise AssertionError(f"not ready within {timeout} s (exit status {proc.poll()}):\n{''.join(lines)}")
        time.sleep(0.05)
    os.killpg(proc.pid, signum)
    proc.wait(timeout=timeout)
    reader.join(timeout=timeout)
    return proc.returncode, "".join(lines)


UTM_33N = "EPSG:32633"


def grid(west: float = 500000.0, north: float = 5100000.0, pixel: float = 10.0):
    """The geotransform of a north-up grid with its north-west corner at (west, north)."""
    from rasterio.transform import Affine

    return Affine(pixel, 0.0, west, 0.0, -pixel, north)


def write_raster_folder(root: str, num_train: int = 4, num_val: int = 2, size: int = 32, bands: int = 4,
                        nodata: int = 0, classes: Sequence[str] = ("background", "object", "other"),
                        seed: int = 0) -> str:
    """A folder of ``bands``-band uint16 GeoTIFF tiles (band b holds values around 1000 * b; class 1 is brighter in
    the last band), single-band GeoTIFF masks on the same grid, splits and classes.yaml. The first training tile's
    top-left 4x4 pixels are nodata (every band ``nodata``)."""
    from utils.io.raster import write_raster

    rng = np.random.default_rng(seed)
    for sub in ("images", "masks", "splits"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    names = [f"t{i:03d}" for i in range(num_train + num_val)]
    for index, name in enumerate(names):
        labels = rng.integers(0, len(classes), (size, size)).astype(np.uint8)
        values = (1000 * np.arange(1, bands + 1)[:, None, None] + rng.integers(0, 200, (bands, size, size)))
        values[-1] += 3000 * (labels == 1)
        if index == 0:
            values[:, :4, :4] = nodata
        transform = grid(500000.0 + index * size * 10.0)
        write_raster(os.path.join(root, "images", name + ".tif"), values.astype(np.uint16), UTM_33N, transform,
                     nodata)
        write_raster(os.path.join(root, "masks", name + ".tif"), labels[None], UTM_33N, transform)
    for split, split_names in (("train", names[:num_train]), ("val", names[num_train:])):
        with open(os.path.join(root, "splits", split + ".txt"), "w") as f:
            f.write("\n".join(split_names) + "\n")
    with open(os.path.join(root, "classes.yaml"), "w") as f:
        f.write(f"names: [{', '.join(classes)}]\n")
    return root


def _shapes(value) -> List[Tuple[int, ...]]:
    return [tuple(v.shape) for v in value] if isinstance(value, (list, tuple)) else [tuple(value.shape)]


def repeated_blocks_dropped(model: nn.Module, example: torch.Tensor, block_types: Tuple[type, ...]) -> int:
    """Replace by ``nn.Identity`` each block of ``block_types`` that keeps its input's shape (run on ``example``)
    and follows a sibling of its type that does too; returns how many went. The model keeps one of each repeated
    block, so every kind of layer, resize and fusion it has, with far fewer nodes for an exporter to trace."""
    keeps_shape = {}

    def record(module, inputs, output):
        keeps_shape[module] = _shapes(inputs[0]) == _shapes(output)

    hooks = [module.register_forward_hook(record) for module in model.modules() if isinstance(module, block_types)]
    with torch.no_grad():
        model(example)
    for hook in hooks:
        hook.remove()
    dropped = 0
    for parent in list(model.modules()):
        kept_types = set()
        for name, child in list(parent.named_children()):
            if not keeps_shape.get(child):
                kept_types = set()
            elif type(child) in kept_types:
                setattr(parent, name, nn.Identity())
                dropped += 1
            else:
                kept_types.add(type(child))
    return dropped
