"""The confusion matrix as fractions of each truth row, and as a picture drawn with Pillow alone: class names on
both axes, the fraction in each cell, a colour bar, and hatched "absent" rows for classes without a pixel.

Drawing it takes a tenth of a second for 21 classes on a 2-core AVX2 EPYC, where matplotlib took 1-2 s, so every
validation writes one."""
import dataclasses
import functools
import importlib.util
import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, features

__all__ = ["as_counts", "check_names", "row_normalised", "blues", "cell_font_pixels", "font_file", "PictureLayout",
           "layout_for", "confusion_picture"]

ANNOTATE_UP_TO = 30  # more classes than this: cells too small for their numbers
CELL_PIXELS_BUDGET, MIN_CELL_PIXELS, MAX_CELL_PIXELS = 600, 45, 160  # a cell's side: the budget over the classes
UNANNOTATED_MIN_CELL_PIXELS = 18  # the names, turned 45 degrees, 13 px apart: no overlap
CELL_FONT_BUDGET, MIN_CELL_FONT, MAX_CELL_FONT = 220, 11, 28  # the cells' numbers: 28 px for 2 classes, 11 for 19
LABEL_FONT, TITLE_FONT = 13, 15
ABSENT_TEXT = "absent (no pixel of this class)"
TITLE = "Confusion matrix (rows = truth, each row normalised to sum 1)"
MARGIN, GAP, BAR_WIDTH, HATCH_STEP = 12, 6, 22, 8
# fonts with accented Latin, Greek and Cyrillic letters, as Pillow finds them by name (Linux, then Windows and macOS);
# Pillow's own font, the last resort, has ASCII letters only
FONT_FILES = ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "arial.ttf", "Arial.ttf")
WHITE, BLACK, GREY, DARK_GREY = (255, 255, 255), (0, 0, 0), (153, 153, 153), (77, 77, 77)
# ColorBrewer's 9-class "Blues", as matplotlib's Blues colour map interpolates it linearly from 0 to 1
BLUES_POINTS = np.array([[247, 251, 255], [222, 235, 247], [198, 219, 239], [158, 202, 225], [107, 174, 214],
                         [66, 146, 198], [33, 113, 181], [8, 81, 156], [8, 48, 107]], dtype=np.float64)


def as_counts(confusion_matrix: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """``confusion_matrix`` as a square NumPy array; a ValueError for any other shape."""
    if isinstance(confusion_matrix, torch.Tensor):
        confusion_matrix = confusion_matrix.detach().cpu().numpy()
    counts = np.asarray(confusion_matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix is square, got shape {counts.shape}")
    return counts


def check_names(counts: np.ndarray, names: Sequence[str]) -> None:
    """A ValueError unless there is one name per class of ``counts``."""
    if len(names) != counts.shape[0]:
        raise ValueError(f"{len(names)} class names for a {counts.shape[0]}-class confusion matrix")


def row_normalised(confusion_matrix: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """Each truth row divided by its pixel count (float64, rows sum to 1); a row with no pixels stays all 0."""
    counts = as_counts(confusion_matrix).astype(np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def blues(fractions: np.ndarray) -> np.ndarray:
    """The colour of each value in [0, 1] (clipped; NaN as 0): (..., 3) uint8, from near white to dark blue."""
    position = np.clip(np.nan_to_num(np.asarray(fractions, dtype=np.float64)), 0.0, 1.0) * (len(BLUES_POINTS) - 1)
    low = np.minimum(np.floor(position).astype(int), len(BLUES_POINTS) - 2)
    weight = (position - low)[..., None]
    return ((1 - weight) * BLUES_POINTS[low] + weight * BLUES_POINTS[low + 1]).round().astype(np.uint8)


def cell_font_pixels(num_classes: int) -> int:
    """The height of the numbers in the cells: large for a few classes, down to a readable 11 px for 19 to 30."""
    return max(MIN_CELL_FONT, min(MAX_CELL_FONT, CELL_FONT_BUDGET // num_classes))


def _cell_pixels(num_classes: int) -> int:
    smallest = MIN_CELL_PIXELS if num_classes <= ANNOTATE_UP_TO else UNANNOTATED_MIN_CELL_PIXELS
    return max(smallest, min(MAX_CELL_PIXELS, CELL_PIXELS_BUDGET // num_classes))


@functools.lru_cache(maxsize=1)
def font_file() -> Optional[str]:
    """The TrueType font the picture is written in: the first of ``FONT_FILES`` that Pillow finds, else
    matplotlib's copy of DejaVu Sans where matplotlib is installed (found, not imported); None without either, or
    where Pillow lacks FreeType."""
    if not features.check("freetype2"):
        return None
    for name in FONT_FILES:
        try:
            ImageFont.truetype(name, LABEL_FONT)
            return name
        except OSError:
            continue
    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
        if os.path.isfile(path):
            return path
    return None


@functools.lru_cache(maxsize=None)
def _font(pixels: int) -> Union[ImageFont.FreeTypeFont, ImageFont.ImageFont]:
    """The font of :func:`font_file` at ``pixels``; else Pillow's own (ASCII letters only), scalable with FreeType
    and of one size without."""
    path = font_file()
    if path is not None:
        return ImageFont.truetype(path, pixels)
    return ImageFont.load_default(size=pixels) if features.check("freetype2") else ImageFont.load_default()


def _text_size(text: str, font) -> Tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return right - left, bottom - top


def _text(draw: ImageDraw.ImageDraw, centre: Tuple[float, float], text: str, font, fill) -> None:
    """``text`` centred on ``centre`` (placed by its box, which works with every Pillow font)."""
    left, top, right, bottom = font.getbbox(text)
    draw.text((round(centre[0] - (left + right) / 2), round(centre[1] - (top + bottom) / 2)), text, font=font,
              fill=fill)


def _rotated_text(text: str, font, angle: float) -> Image.Image:
    """``text`` in black on a transparent tile turned ``angle`` degrees anticlockwise."""
    width, height = _text_size(text, font)
    left, top = font.getbbox(text)[:2]
    tile = Image.new("LA", (width + 2, height + 2), (0, 0))
    ImageDraw.Draw(tile).text((1 - left, 1 - top), text, font=font, fill=(0, 255))
    return tile.rotate(angle, resample=Image.BICUBIC, expand=True)


def _paste(canvas: Image.Image, tile: Image.Image, xy: Tuple[float, float]) -> None:
    """Paste the black text of an "LA" ``tile`` at ``xy`` (its top-left corner)."""
    black = Image.new("RGB", tile.size, BLACK)
    canvas.paste(black, (round(xy[0]), round(xy[1])), tile.getchannel("A"))


def _hatch(draw: ImageDraw.ImageDraw, box: Tuple[int, int, int, int]) -> None:
    """Diagonal lines ("///") across ``box``, clipped to it."""
    left, top, right, bottom = box
    for start in range(left - (bottom - top), right, HATCH_STEP):
        # the segment from (start, bottom) to (start + height, top), clipped to the box's columns
        x0, y0, x1, y1 = start, bottom, start + (bottom - top), top
        if x0 < left:
            x0, y0 = left, bottom - (left - start)
        if x1 > right:
            x1, y1 = right, top + (x1 - right)
        draw.line((x0, y0, x1, y1), fill=GREY, width=1)


@dataclasses.dataclass
class PictureLayout:
    """Where the parts of the picture of ``names``' matrix go: its top-left corner, the side of a cell, the
    column names turned 45 degrees, and the picture's size."""

    names: List[str]
    left: int
    top: int
    cell: int
    tiles: List[Image.Image]
    size: Tuple[int, int]

    @property
    def side(self) -> int:
        return self.cell * len(self.names)

    def cell_box(self, row: int, column: int) -> Tuple[int, int, int, int]:
        """The pixels of cell (``row``, ``column``): left, top, right, bottom, all inside the cell."""
        x, y = self.left + column * self.cell, self.top + row * self.cell
        return x, y, x + self.cell - 1, y + self.cell - 1

    @property
    def bar_box(self) -> Tuple[int, int, int, int]:
        """The colour bar's pixels, its outline included: 1 at the top, 0 at the bottom."""
        x = self.left + self.side + 3 * GAP
        return x, self.top, x + BAR_WIDTH, self.top + self.side

    @property
    def names_bottom(self) -> int:
        """The row just below the turned column names, where "prediction" begins."""
        return self.top + self.side + GAP + max(tile.size[1] for tile in self.tiles) + GAP


def layout_for(names: Sequence[str]) -> PictureLayout:
    """The layout of the picture of a matrix of these class names: room for the longest name on each axis."""
    names = [" ".join(str(name).split()) for name in names]  # one line each: newlines and tabs become spaces
    label_font, title_font = _font(LABEL_FONT), _font(TITLE_FONT)
    tiles = [_rotated_text(name, label_font, 45) for name in names]
    label_height = _text_size("Ag", label_font)[1]
    cell = _cell_pixels(len(names))
    left = MARGIN + label_height + GAP + max(_text_size(name, label_font)[0] for name in names) + GAP
    top = MARGIN + _text_size(TITLE, title_font)[1] + 2 * GAP
    side = cell * len(names)
    right = left + side + 3 * GAP + BAR_WIDTH + GAP + _text_size("1.0", label_font)[0] + 2 * GAP + label_height
    width = max(right + MARGIN, 2 * MARGIN + _text_size(TITLE, title_font)[0])
    layout = PictureLayout(names, left, top, cell, tiles, (width, 0))
    layout.size = (width, layout.names_bottom + label_height + MARGIN)  # "prediction" under the names
    return layout


def _centre(box: Tuple[float, float, float, float]) -> Tuple[float, float]:
    return (box[0] + box[2] + 1) / 2, (box[1] + box[3] + 1) / 2


def _draw_cells(draw: ImageDraw.ImageDraw, fractions: np.ndarray, absent: np.ndarray, layout: PictureLayout) -> None:
    """The coloured cells with their fractions, and each absent row hatched and labelled."""
    n = len(fractions)
    colours = blues(fractions)
    number_font = _font(cell_font_pixels(n))
    for row in range(n):
        for column in range(n):
            box = layout.cell_box(row, column)
            draw.rectangle(box, fill=tuple(int(v) for v in colours[row, column]))
            value = fractions[row, column]
            if n <= ANNOTATE_UP_TO and value >= 0.005:  # what would print as 0.00 stays blank: errors stand out
                _text(draw, _centre(box), f"{value:.2f}", number_font, WHITE if value > 0.5 else BLACK)
    pixels = max(cell_font_pixels(n), LABEL_FONT)
    while pixels > MIN_CELL_FONT and _text_size(ABSENT_TEXT, _font(pixels))[0] > layout.side - 2 * GAP:
        pixels -= 1  # two big cells: the label still fits in the row
    for row in np.flatnonzero(absent):
        box = (layout.left, layout.cell_box(row, 0)[1], *layout.cell_box(row, n - 1)[2:])
        draw.rectangle(box, fill=WHITE)
        _hatch(draw, box)
        width, height = _text_size(ABSENT_TEXT, _font(pixels))
        centre = _centre(box)
        draw.rectangle((centre[0] - width / 2 - 3, max(box[1], centre[1] - height / 2 - 3), centre[0] + width / 2 + 3,
                        min(box[3], centre[1] + height / 2 + 3)), fill=WHITE)  # within the row
        _text(draw, centre, ABSENT_TEXT, _font(pixels), DARK_GREY)


def _draw_colour_bar(canvas: Image.Image, draw: ImageDraw.ImageDraw, layout: PictureLayout) -> None:
    """A vertical bar right of the matrix, from 1 (top) to 0 (bottom), with ticks every 0.2 and its caption."""
    font = _font(LABEL_FONT)
    x, top, side = layout.bar_box[0], layout.top, layout.side
    ramp = blues(np.linspace(1.0, 0.0, side))[:, None, :].repeat(BAR_WIDTH, axis=1)
    canvas.paste(Image.fromarray(ramp), (x, top))
    draw.rectangle(layout.bar_box, outline=BLACK)
    for tick in np.linspace(0.0, 1.0, 6):
        y = top + round((1 - tick) * (side - 1))
        draw.line((x + BAR_WIDTH, y, x + BAR_WIDTH + 4, y), fill=BLACK)
        label = f"{tick:.1f}"
        _text(draw, (x + BAR_WIDTH + GAP + _text_size(label, font)[0] / 2, y), label, font, BLACK)
    caption = _rotated_text("fraction of the truth row", font, 90)
    _paste(canvas, caption, (x + BAR_WIDTH + GAP + _text_size("1.0", font)[0] + 2 * GAP,
                             top + (side - caption.size[1]) / 2))


def _draw_names(canvas: Image.Image, draw: ImageDraw.ImageDraw, layout: PictureLayout) -> None:
    """Row names right-aligned left of the matrix, column names at 45 degrees below it, and the axis titles."""
    font = _font(LABEL_FONT)
    left, top, side, cell = layout.left, layout.top, layout.side, layout.cell
    for index, (name, tile) in enumerate(zip(layout.names, layout.tiles)):
        _text(draw, (left - GAP - _text_size(name, font)[0] / 2, top + (index + 0.5) * cell), name, font, BLACK)
        # the turned name ends at its tile's top-right corner: there, just under its column's centre
        _paste(canvas, tile, (left + (index + 0.5) * cell - tile.size[0] + 3, top + side + GAP))
    _text(draw, (left + side / 2, layout.names_bottom + _text_size("Ag", font)[1] / 2), "prediction", font, BLACK)
    truth = _rotated_text("truth", font, 90)
    _paste(canvas, truth, (MARGIN, top + (side - truth.size[1]) / 2))


def confusion_picture(confusion_matrix: Union[np.ndarray, torch.Tensor], names: Sequence[str]) -> Image.Image:
    """The row-normalised confusion matrix as an RGB image laid out by :func:`layout_for`: class names, a colour
    bar, the fraction in each cell (up to ``ANNOTATE_UP_TO`` classes), and the rows of classes without any pixel
    hatched and marked "absent" (not drawn as zeros)."""
    counts = as_counts(confusion_matrix)
    check_names(counts, names)
    layout = layout_for(names)
    canvas = Image.new("RGB", layout.size, WHITE)
    draw = ImageDraw.Draw(canvas)
    title_font = _font(TITLE_FONT)
    _text(draw, (canvas.size[0] / 2, MARGIN + _text_size(TITLE, title_font)[1] / 2), TITLE, title_font, BLACK)
    totals = counts.astype(np.float64).sum(axis=1)  # in float: huge integer counts cannot wrap to 0
    _draw_cells(draw, row_normalised(counts), totals == 0, layout)
    draw.rectangle((layout.left - 1, layout.top - 1, layout.left + layout.side, layout.top + layout.side),
                   outline=BLACK)
    _draw_names(canvas, draw, layout)
    _draw_colour_bar(canvas, draw, layout)
    return canvas
