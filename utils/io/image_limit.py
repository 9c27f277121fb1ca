"""The largest image any tool here decodes: ``--max_image_pixels``, one option and one check for training,
prediction, annotation imports and INT8 calibration.

PIL's own guard against decompression bombs warns above ``Image.MAX_IMAGE_PIXELS`` (89 MP) and refuses above
twice that (179 MP); drone orthomosaics, satellite tiles and scans are larger, and they are the user's own files.
Here the guard is one number, checked on the size a file announces before any pixel is decoded, and an image
over it is refused with a line that names the file and the option. PIL's guard is turned off in its favour.

The limit travels in an environment variable, so that DataLoader workers see it whether they are forked or
spawned (spawned ones import this module afresh).
"""
import argparse
import os
from typing import Optional, Tuple

from PIL import Image

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "LIMIT_VARIABLE", "ImageTooLargeError", "parse_max_image_pixels",
           "add_max_image_pixels_option", "set_max_image_pixels", "max_image_pixels", "check_image_pixels"]

DEFAULT_MAX_IMAGE_PIXELS = 1_000_000_000  # a gigapixel: 3 GB as 8-bit RGB
LIMIT_VARIABLE = "DEEPLAB_MAX_IMAGE_PIXELS"
NO_LIMIT = ("0", "none")

Image.MAX_IMAGE_PIXELS = None  # check_image_pixels is the guard, with a message that says what to do


class ImageTooLargeError(ValueError):
    """An image with more pixels than ``--max_image_pixels`` allows."""


def parse_max_image_pixels(text: str) -> int:
    """argparse type: a pixel count; 0 or ``none`` (any case) for no limit, returned as 0."""
    if str(text).strip().lower() in NO_LIMIT:
        return 0
    try:
        limit = int(text)
    except ValueError:
        limit = -1
    if limit < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a pixel count (a whole number; 0 or none: no limit)")
    return limit


def add_max_image_pixels_option(parser: argparse.ArgumentParser) -> None:
    """``--max_image_pixels``, as main.py, predict.py, the export's calibration and the annotation import take it."""
    parser.add_argument("--max_image_pixels", type=parse_max_image_pixels, default=DEFAULT_MAX_IMAGE_PIXELS,
                        metavar="N", help="an image of more pixels than this is refused before it is decoded (a guard "
                                          "against decompression bombs, in place of PIL's, which stops at 179 MP); 0 "
                                          f"or none: no limit (default: {DEFAULT_MAX_IMAGE_PIXELS}, a gigapixel)")


def set_max_image_pixels(limit: Optional[int]) -> None:
    """Make ``limit`` (0 or None: none, as a config file's ``null``) the limit of this process and of the processes
    it starts."""
    os.environ[LIMIT_VARIABLE] = str(limit or 0)


def max_image_pixels() -> int:
    """The limit in force (0: none): the one set, else the default."""
    text = os.environ.get(LIMIT_VARIABLE, "")
    try:
        return parse_max_image_pixels(text) if text else DEFAULT_MAX_IMAGE_PIXELS
    except argparse.ArgumentTypeError:
        return DEFAULT_MAX_IMAGE_PIXELS


def check_image_pixels(size: Tuple[int, int], name: str) -> None:
    """ImageTooLargeError when an image of ``size`` (width, height) is over the limit; ``name`` says which image."""
    limit = max_image_pixels()
    width, height = size
    if limit and width * height > limit:
        raise ImageTooLargeError(f"{name} is {width}x{height} = {width * height:,} pixels, more than "
                                 f"--max_image_pixels {limit} (a guard against decompression bombs); if you trust the file, raise it "
                                 "or pass --max_image_pixels none")
