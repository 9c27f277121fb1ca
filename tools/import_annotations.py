"""Turn LabelMe or COCO (CVAT, Label Studio, Roboflow) annotations into the folder layout `--dataset folder` reads.

Usage: python tools/import_annotations.py --from labelme DIR --out ROOT
       python tools/import_annotations.py --from coco FILE.json --images DIR --out ROOT
       [--classes a,b,c] [--unknown {error,ignore}] [--background {class,ignore}] [--val_fraction 0.2] [--seed 0]
       [--line_width 10] [--point_size 5] [--max_image_pixels N]

Writes ROOT/images, ROOT/masks (index PNGs), ROOT/classes.yaml and ROOT/splits/{train,val}.txt, prints what it
imported and skipped, then reads ROOT back as training does. The folder is built beside ROOT and renamed to it when
complete: a failed or stopped import leaves ROOT as it was. Exits non-zero when nothing could be imported (then ROOT is
not written).
"""
import argparse
import os
import sys
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":  # before torch loads (seconds): Ctrl-C or SIGTERM then ends it in one line
    from utils.io.stop_signals import stop_quietly_while_starting
    stop_quietly_while_starting()

import numpy as np  # noqa: E402

from datasets.annotations import (Export, ImportResult, LabelMap, check_folder, import_to_folder,  # noqa: E402
                                  read_coco, read_labelme_folder)
from datasets.annotations.classes import parse_class_list  # noqa: E402
from datasets.annotations.folder_writer import check_output_folder  # noqa: E402
from datasets.annotations.labelme import DEFAULT_LINE_WIDTH, DEFAULT_POINT_SIZE  # noqa: E402
from datasets.utils import DatasetError  # noqa: E402
from utils.io.atomic import (atomic_folder, describe_removed, remove_orphaned_temporaries,  # noqa: E402
                             folder_of, path_state, removed_if_left_empty, require_writable)
from utils.constants import IGNORE_INDEX  # noqa: E402
from utils.io.image_limit import add_max_image_pixels_option, set_max_image_pixels  # noqa: E402
from utils.io.stop_signals import exit_keeping_status  # noqa: E402
from utils.runtime.interrupts import StoppedBySignal, stop_signals_raise  # noqa: E402

FORMATS = ("labelme", "coco")
SHOWN_NAMES = 5  # stems listed in a summary line before "..."


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", nargs=2, metavar=("FORMAT", "PATH"), required=True,
                        help="labelme DIR (a folder of LabelMe .json files) or coco FILE.json")
    parser.add_argument("--images", help="--from coco: the folder the export's images are in")
    parser.add_argument("--out", required=True, help="new or empty folder to write the dataset to")
    parser.add_argument("--classes", help="class names 1..N in this order (class 0 is background); default: "
                                          "the labels found (COCO: by category id; LabelMe: by name)")
    parser.add_argument("--unknown", choices=("error", "ignore"), default="error",
                        help="a label that --classes does not list: an error, or its pixels 255 (ignored)")
    parser.add_argument("--background", choices=("class", "ignore"), default="class",
                        help="pixels outside every shape: class 0 (background), or 255 (ignored)")
    parser.add_argument("--val_fraction", type=float, default=0.2, help="share of the images in splits/val.txt")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val shuffle")
    parser.add_argument("--line_width", type=int, default=DEFAULT_LINE_WIDTH,
                        help="LabelMe lines and line strips: width in pixels")
    parser.add_argument("--point_size", type=int, default=DEFAULT_POINT_SIZE,
                        help="LabelMe points: radius in pixels")
    add_max_image_pixels_option(parser)
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """ValueError naming the first option that cannot work."""
    kind, path = args.source
    if kind not in FORMATS:
        raise ValueError(f"--from {kind} {path}: the format is one of {', '.join(FORMATS)}")
    if kind == "coco" and not args.images:
        raise ValueError("--from coco needs --images DIR, the folder that holds the export's images")
    if not 0 < args.val_fraction < 1:
        raise ValueError(f"--val_fraction must be between 0 and 1, not {args.val_fraction}")
    if args.line_width < 1 or args.point_size < 0:
        raise ValueError(f"--line_width must be 1 or more and --point_size 0 or more, not {args.line_width} and "
                         f"{args.point_size}")


def read_export(args: argparse.Namespace) -> Export:
    """The images of the export named by --from, with what had to be left out."""
    kind, path = args.source
    export = read_labelme_folder(path, args.line_width, args.point_size) if kind == "labelme" else \
        read_coco(path, args.images)
    export.drop_unwritable_names()
    return export


def labels_found(export: Export) -> Dict[str, str]:
    """Every label of the export -> the first image that has it, in reading order."""
    found: Dict[str, str] = {}
    for item in export.images:
        for label in item.labels:
            found.setdefault(label, item.source)
    return found


def _names(stems: Sequence[str]) -> str:
    return ", ".join(stems[:SHOWN_NAMES]) + (", ..." if len(stems) > SHOWN_NAMES else "")


def print_summary(args: argparse.Namespace, result: ImportResult, notes: Sequence[str] = ()) -> None:
    """What was imported, which images had no shape, how much was left out, and what the reader decided."""
    print(f"imported {len(result.stems)} image(s) from {args.source[1]} into {args.out}: "
          f"{len(result.train)} train, {len(result.val)} val (seed {args.seed})")
    for note in notes:
        print(f"note: {note}")
    if result.without_shapes:
        print(f"{len(result.without_shapes)} image(s) without any shape (all "
              f"{'background' if args.background == 'class' else 'ignored'}): {_names(result.without_shapes)}")
    if result.problems or result.skipped_shapes:
        print(f"skipped (the lines above say why): {len(result.problems)} image(s) or file(s), "
              f"{len(result.skipped_shapes)} shape(s)")


def print_pixels(names: Sequence[str], counts: np.ndarray) -> None:
    """A table of each class's pixels (and the ignored ones): count and share of all pixels."""
    total = max(int(counts.sum()), 1)
    print("pixels per class:")
    rows = [(str(index), name, int(counts[index])) for index, name in enumerate(names)]
    rows.append(("255", "(ignored)", int(counts[IGNORE_INDEX])))
    width = max(len(name) for _, name, _ in rows)
    for index, name, count in rows:
        print(f"  {index:>5}  {name:<{width}}  {count:>12,}  {count / total:7.2%}")


def inputs_of(args: argparse.Namespace) -> List[str]:
    """The export's files and folders, which --out must stay apart from."""
    kind, path = args.source
    return [path, args.images] if kind == "coco" else [path]


def import_checked(args: argparse.Namespace, export: Export, label_map: LabelMap) -> Tuple[ImportResult, List[str],
                                                                                            np.ndarray]:
    """Import into a new folder beside --out, read it back as training does, then rename it to --out: a failed
    import leaves --out as it was. Returns the result, the class names and the pixels of each mask value."""
    parent, name = os.path.split(os.path.abspath(args.out))
    removed = remove_orphaned_temporaries(parent, [name])
    if removed:
        print(describe_removed(removed, "unfinished import folder(s) that a killed run left", parent))
    try:
        with atomic_folder(args.out) as staging:
            result = import_to_folder(export, staging, label_map, 0 if args.background == "class" else IGNORE_INDEX,
                                      args.val_fraction, args.seed)
            for problem in result.problems + result.skipped_shapes:
                print(f"skipped: {problem}", file=sys.stderr)
            if not result.stems:
                raise DatasetError(f"nothing could be imported from {args.source[1]} (see the lines above)")
            if len(label_map.names) < 2:
                raise DatasetError(f"{args.source[1]} has no labelled shape, only background: there is no class to "
                                   f"train; label some shapes first (nothing was written to {args.out})")
            try:
                names, counts = check_folder(staging)
            except DatasetError as exc:
                found = str(exc).replace(staging, args.out)  # the folder's name as the user knows it
                raise DatasetError(f"the import does not pass the checks of --dataset folder ({found}); nothing was "
                                   f"written to {args.out}") from None
    except OSError as exc:
        raise DatasetError(f"cannot write {args.out} ({exc.strerror or exc}); nothing was written there") from None
    return result, names, counts


def print_report(args: argparse.Namespace, result: ImportResult, names: Sequence[str], counts: np.ndarray,
                 notes: Sequence[str]) -> None:
    """What was imported, the classes and their pixels, and how to train on it."""
    print_summary(args, result, notes)
    shown = [repr(name) if "," in name or name != name.strip() else name for name in names]  # 'crack, wide' is one
    print(f"classes ({os.path.join(args.out, 'classes.yaml')}): {', '.join(shown)}")
    print_pixels(names, counts)
    print(f"checked: every image and mask of {args.out} loads as --dataset folder reads it; train with\n"
          f"  python main.py --dataset folder --data_root {args.out} --model deeplabv3plus_mobilenet")


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a name that is not UTF-8 prints escaped, not as a crash
        stream.reconfigure(errors="backslashreplace")
    args = parse_args(argv)
    before = path_state(args.out)
    with stop_signals_raise(), removed_if_left_empty([folder_of(args.out)]):  # a folder made for nothing
        try:
            check_args(args)
            set_max_image_pixels(args.max_image_pixels)
            given = parse_class_list(args.classes) if args.classes else None
            check_output_folder(args.out, inputs_of(args))
            export = read_export(args)
            label_map = LabelMap.build(labels_found(export), export.declared_labels, given, args.unknown == "ignore")
            require_writable(folder_of(args.out), f"--out {args.out}: its folder")
            result, names, counts = import_checked(args, export, label_map)
            print_report(args, result, names, counts, export.notes)
        except (DatasetError, ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except StoppedBySignal as exc:
            return exc.say_about(args.out, before)
    return 0


if __name__ == "__main__":
    exit_keeping_status(main())
