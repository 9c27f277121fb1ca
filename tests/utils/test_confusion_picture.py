"""The confusion-matrix picture: each cell in the Blues colour of its row fraction, absent rows hatched and
labelled, numbers sized by the class count, and nothing drawn outside the picture."""
import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from utils.reporting import confusion_picture as picture_module
from utils.reporting.confusion_picture import (GREY, MARGIN, WHITE, blues, cell_font_pixels, confusion_picture,
                                               font_file, layout_for, row_normalised)

COUNTS = np.array([[5, 1, 0], [0, 0, 0], [2, 0, 7]])  # class 1 has no pixel in the ground truth
NAMES = ["background", "crack, wide", "rust"]


def _cell(picture: np.ndarray, names, row: int, column: int) -> np.ndarray:
    left, top, right, bottom = layout_for(names).cell_box(row, column)
    return picture[top:bottom + 1, left:right + 1]


def test_row_normalised_rows_sum_to_one_and_empty_rows_stay_zero():
    counts = torch.tensor([[3, 1, 0], [0, 0, 0], [0, 2, 2]])
    fractions = row_normalised(counts)
    assert fractions.dtype == np.float64 and not np.isnan(fractions).any()
    np.testing.assert_allclose(fractions, [[0.75, 0.25, 0], [0, 0, 0], [0, 0.5, 0.5]])
    np.testing.assert_array_equal(row_normalised(counts.numpy()), fractions)


def test_blues_runs_from_colorbrewer_s_lightest_to_darkest_and_shows_no_score_as_zero():
    assert blues(np.array([0.0, 0.5, 1.0])).tolist() == [[247, 251, 255], [107, 174, 214], [8, 48, 107]]
    assert blues(np.array([np.nan, -1.0, 2.0])).tolist() == [[247, 251, 255], [247, 251, 255], [8, 48, 107]]
    assert blues(np.array(1 / 16)).tolist() == [234, 243, 251]  # halfway between the first two points, rounded


def test_each_cell_has_the_colour_of_its_fraction_and_its_number():
    picture = np.asarray(confusion_picture(COUNTS, NAMES))
    fractions = row_normalised(COUNTS)
    for row, column in [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1), (2, 2)]:
        cell = _cell(picture, NAMES, row, column)
        colour = blues(fractions[row, column]).tolist()
        assert cell[2, 2].tolist() == colour and cell[-3, -3].tolist() == colour  # corners: no text there
        drawn = (cell != colour).any(axis=2)  # the number, if any, in the middle of the cell
        if fractions[row, column] == 0:
            assert not drawn.any()  # 0.00 is left blank, so the errors stand out
        else:
            assert drawn[cell.shape[0] // 3:-cell.shape[0] // 3].any() and not drawn[:5].any()
    dark = _cell(picture, NAMES, 0, 0)  # 0.83: white digits on dark blue
    assert (dark == 255).all(axis=2).any()
    expected = Image.new("RGB", dark.shape[1::-1], tuple(blues(5 / 6).tolist()))  # "0.83", two decimals, centred
    picture_module._text(ImageDraw.Draw(expected), (dark.shape[1] / 2, dark.shape[0] / 2), "0.83",
                         picture_module._font(cell_font_pixels(3)), WHITE)
    assert np.array_equal(np.asarray(expected), dark)


def test_an_absent_row_is_hatched_and_labelled_not_drawn_as_zeros():
    picture = np.asarray(confusion_picture(COUNTS, NAMES))
    row = np.concatenate([_cell(picture, NAMES, 1, column) for column in range(3)], axis=1)
    zero = blues(0.0).tolist()
    assert not (row == zero).all(axis=2).any()
    assert (row == GREY).all(axis=2).sum() > row.shape[1]  # hatch lines across the row
    middle = row[row.shape[0] // 3:-row.shape[0] // 3]
    assert (middle.max(axis=2) < 120).sum() > 50  # the dark grey words "absent (no pixel of this class)"


def _dark(pixels: np.ndarray) -> np.ndarray:
    return pixels.max(axis=-1) < 100


def _digit_height(num_classes: int) -> int:
    """The height in pixels of the number drawn in cell (0, 1), 0.50 in black."""
    names = [f"c{i}" for i in range(num_classes)]
    counts = np.eye(num_classes, dtype=np.int64) + np.eye(num_classes, k=1, dtype=np.int64)
    cell = _cell(np.asarray(confusion_picture(counts, names)), names, 0, 1)  # 0.50: black digits on mid blue
    rows = np.flatnonzero(_dark(cell).any(axis=1))
    return int(rows[-1] - rows[0] + 1)


def test_numbers_shrink_with_the_class_count_and_stay_readable():
    assert cell_font_pixels(2) >= 2.5 * cell_font_pixels(21) and cell_font_pixels(21) >= 11
    assert cell_font_pixels(30) >= 11
    assert _digit_height(2) >= 2 * _digit_height(21) and _digit_height(21) >= 8  # as drawn, not only as asked
    many = np.asarray(confusion_picture(np.eye(40, dtype=np.int64) * 5 + 1, [f"c{i}" for i in range(40)]))
    cell = _cell(many, [f"c{i}" for i in range(40)], 0, 0)
    assert (cell == cell[0, 0]).all()  # 40 classes: cells too small for numbers, colour only


@pytest.mark.parametrize("names", [NAMES, ["a very long class name, with a comma", "b", "c"], ["", "x", "y"]])
def test_everything_drawn_fits_inside_the_picture(names):
    picture = np.asarray(confusion_picture(COUNTS, names))
    frame = np.concatenate([picture[:3].reshape(-1, 3), picture[-3:].reshape(-1, 3), picture[:, :3].reshape(-1, 3),
                            picture[:, -3:].reshape(-1, 3)])
    assert (frame == WHITE).all()  # a margin all round: no name or caption cut at an edge


def test_names_label_every_row_and_column_and_the_colour_bar_runs_from_1_to_0():
    names = [f"class {i}" for i in range(21)]
    layout = layout_for(names)
    picture = np.asarray(confusion_picture(np.eye(21, dtype=np.int64) + 1, names))
    for index in range(21):
        top, bottom = layout.cell_box(index, 0)[1], layout.cell_box(index, 0)[3]
        assert _dark(picture[top:bottom, MARGIN + 20:layout.left - 2]).any()  # the row's name, left of it
        centre = layout.cell_box(0, index)[0] + layout.cell // 2
        under = picture[layout.top + layout.side + 2:layout.top + layout.side + 20, centre - 12:centre + 4]
        assert _dark(under).any()  # the column's name ends just under its centre
    caption = _dark(picture[layout.names_bottom:])
    columns = np.flatnonzero(caption.any(axis=0))
    assert caption.any() and abs((columns[0] + columns[-1]) / 2 - (layout.left + layout.side / 2)) < 5
    assert columns[-1] - columns[0] < 100  # "prediction", alone and centred under the names, not on them
    left, top, right, bottom = layout.bar_box
    assert picture[top + 1, left + 5].tolist() == blues(1.0).tolist()
    assert picture[bottom - 1, left + 5].tolist() == blues(0.0).tolist()


def test_names_are_one_line_and_accented_letters_are_drawn():
    assert layout_for(["café\nnoir", "a\tb"]).names == ["café noir", "a b"]
    font = ImageFont.truetype(font_file(), 13)  # the suite's requirements bring DejaVu Sans (with matplotlib)
    missing = font.getmask("\ue000")  # a private-use character: no font has it, each draws its "missing" box
    assert all(bytes(font.getmask(letter)) != bytes(missing) for letter in "éßΩж")


def test_without_a_truetype_font_pillow_s_own_font_draws_the_picture(monkeypatch):
    monkeypatch.setattr(picture_module, "FONT_FILES", ("no-such-font.ttf",))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    picture_module.font_file.cache_clear()
    picture_module._font.cache_clear()
    try:
        assert font_file() is None
        picture = np.asarray(confusion_picture(COUNTS, NAMES))
        assert _dark(picture).any() and picture.shape[:2] == layout_for(NAMES).size[::-1]
    finally:
        picture_module.font_file.cache_clear()
        picture_module._font.cache_clear()


def test_a_21_class_picture_is_large_enough_to_read():
    layout = layout_for([f"class {i}" for i in range(21)])
    assert layout.cell >= 45 and 1000 <= layout.size[0] <= 3000 and 1000 <= layout.size[1] <= 3000


def test_names_must_match_the_matrix():
    with pytest.raises(ValueError, match="2 class names for a 3-class confusion matrix"):
        confusion_picture(COUNTS, NAMES[:2])
