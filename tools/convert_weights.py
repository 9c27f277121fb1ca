"""Convert foreign weights into this project's format.

Backbone weights (timm HRNet / legacy_xception, official cls_hrnet, torchvision ImageNet files) become a
backbone state_dict for ``--pretrained_backbone PATH``. With ``--model``, whole-model weights (e.g.
torchvision's COCO DeepLabV3) become a checkpoint in the original's format (``model_state``) for ``--ckpt``
or ``--init_from``; tensors the file has no counterpart for keep their initial values and are listed.

Usage: python tools/convert_weights.py IN OUT [--format auto|FORMAT] [--model ENTRY --num_classes N]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":  # before torch loads (seconds): Ctrl-C or SIGTERM then ends it in one line
    from utils.io.stop_signals import stop_quietly_while_starting
    stop_quietly_while_starting()

import network  # noqa: E402
from network.weights import (FORMATS, PretrainedWeightsError, convert_state_dict, detect_format,  # noqa: E402
                             fill_model, model_format, module_names, read_state_dict)
from utils.config import check_ranges  # noqa: E402
from utils.io.atomic import path_state, require_file_name  # noqa: E402
from utils.io.checkpoint import CheckpointError, file_problem, save_checkpoint  # noqa: E402
from utils.io.own_outputs import refuse_writing_over  # noqa: E402
from utils.io.stop_signals import exit_keeping_status  # noqa: E402
from utils.runtime.interrupts import run_stoppable  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="weights file (any container: state_dict, 'model_state', 'state_dict', 'model')")
    parser.add_argument("output", help="where to write the converted file")
    parser.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="the input's layout")
    parser.add_argument("--model", choices=list(network.MODELS), help="write a whole-model checkpoint for this entry")
    parser.add_argument("--num_classes", type=int, default=21)
    parser.add_argument("--output_stride", type=int, default=16, choices=[8, 16])
    args = parser.parse_args(argv)
    before = path_state(args.output)
    return run_stoppable(lambda: convert(args), lambda stop: stop.say_about(args.output, before))


def convert(args: argparse.Namespace) -> int:
    """Read, convert and write the file of ``args``; the exit status (1 with one line for a file it cannot use)."""
    try:
        suggested = os.path.splitext(args.input)[0] + "_converted.pth"
        refuse_writing_over(args.output, "OUT", {"IN": args.input}, suggested)
        require_file_name(args.output, "OUT", os.path.basename(suggested))
        check_ranges(args, ("num_classes",))
        if os.path.isfile(args.output) and file_problem(args.output):  # not a checkpoint: a file of yours
            raise ValueError(f"OUT {args.output} exists and {file_problem(args.output)}: the converted checkpoint "
                             f"would replace it; give another name, e.g. {suggested}")
        state = read_state_dict(args.input)
        fmt = model_format(state, args.model, args.format) if args.model else (
            detect_format(state) if args.format == "auto" else args.format)
        converted = convert_state_dict(state, fmt)
        if args.model:
            model = network.build_model(args.model, args.num_classes, args.output_stride, pretrained_backbone=False)
            filled, initialised = fill_model(model, converted)
            if not filled:
                raise PretrainedWeightsError(f"{args.input} ({fmt}): no tensor fits {args.model}")
            if any(k.startswith("backbone.") for k in converted) and not any(k.startswith("backbone.") for k in filled):
                raise PretrainedWeightsError(f"{args.input} ({fmt}): its backbone fits none of {args.model}'s (another "
                                             "backbone: its head alone would be half filled); give the --model it "
                                             "was trained as")
            save_checkpoint({"model_state": model.state_dict(), "model_name": args.model,
                             "num_classes": args.num_classes, "output_stride": args.output_stride,
                             "converted_from": os.path.basename(args.input), "source_format": fmt}, args.output)
            print(f"{fmt} -> {args.model}: filled {len(filled)} tensors, initialised {len(initialised)}"
                  + (f" ({', '.join(module_names(initialised)[:8])} ...)" if initialised else ""))
        else:
            save_checkpoint({"state_dict": converted, "source_format": fmt}, args.output)
            print(f"{fmt} -> backbone state_dict with {len(converted)} tensors: {args.output}")
    except (PretrainedWeightsError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    exit_keeping_status(main())
