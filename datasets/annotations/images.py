"""The pixels of an annotated image: a file, or bytes embedded in the export, the way the tool showed them.

Annotation tools draw on the image as a viewer shows it, with its EXIF orientation applied, while training
reads the stored pixels. A rotated photo is therefore written upright, as PNG (as is an image type that
training does not read); every other image is copied byte for byte.
"""
import dataclasses
import os
import shutil
from typing import Optional, Tuple

from PIL import ExifTags, Image, ImageOps

from utils.io.atomic import atomic_write

from ..folder import IMAGE_EXTENSIONS
from ..utils import DatasetError, decode_image

__all__ = ["SourceImage", "open_file", "open_bytes"]

# PIL's format name -> the extension an embedded image is written with (all in IMAGE_EXTENSIONS)
EXTENSION_OF_FORMAT = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}
PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")


@dataclasses.dataclass
class SourceImage:
    """A decoded image and where its bytes come from (``path``, or ``data`` embedded in the export).

    ``turn`` says whether the written pixels are the EXIF-turned ones; :meth:`match` sets it.
    """

    image: Image.Image
    name: str
    extension: str
    path: Optional[str] = None
    data: Optional[bytes] = None
    turn: bool = False

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height) of the pixels that will be written."""
        return self.pixels().size

    @property
    def reencode(self) -> bool:
        """Whether the image is written as PNG rather than copied."""
        return self.turn or self.extension.lower() not in IMAGE_EXTENSIONS

    def pixels(self) -> Image.Image:
        """The pixels that will be written: upright when ``turn``, else as stored."""
        return ImageOps.exif_transpose(self.image) if self.turn else self.image

    def match(self, annotated_size: Optional[Tuple[int, int]]) -> None:
        """Write the stored or the upright pixels, whichever has the size the annotations were drawn on
        (upright when both have, as the tools show it); DatasetError when neither has."""
        turned = self.image.getexif().get(ExifTags.Base.Orientation) not in (None, 1)
        upright_size = ImageOps.exif_transpose(self.image).size if turned else self.image.size
        if annotated_size is None or tuple(annotated_size) == upright_size:
            self.turn = turned
        elif tuple(annotated_size) == self.image.size:
            self.turn = False
        else:
            width, height = annotated_size
            raise DatasetError(f"the annotations are for a {width}x{height} image but {self.name} is "
                               f"{self.image.size[0]}x{self.image.size[1]} (another version of the image?); "
                               "export again from the tool, or put the annotated image there")

    def write(self, folder: str, stem: str) -> str:
        """Write the image to ``folder/stem.ext`` atomically; returns the file name."""
        target = os.path.join(folder, stem + (".png" if self.reencode else self.extension))
        with atomic_write(target) as out:
            if self.reencode:
                pixels = self.pixels()
                (pixels if pixels.mode in PNG_MODES else pixels.convert("RGB")).save(out, format="PNG")
            elif self.data is not None:
                out.write(self.data)
            else:
                with open(self.path, "rb") as source:
                    shutil.copyfileobj(source, out)
        return os.path.basename(target)


def open_file(path: str) -> SourceImage:
    """An image file; DatasetError naming it when it is missing or cannot be decoded."""
    return SourceImage(decode_image(path, f"image {path}"), path, os.path.splitext(path)[1], path=path)


def open_bytes(data: bytes, name: str) -> SourceImage:
    """An image embedded in an export (LabelMe's ``imageData``); ``name`` says where, for messages."""
    image = decode_image(data, f"the image embedded in {name}")
    # a format training does not read (GIF, say) keeps its own extension, so that it is re-encoded
    extension = EXTENSION_OF_FORMAT.get(image.format, f".{str(image.format).lower()}")
    return SourceImage(image, f"the image embedded in {name}", extension, data=data)
