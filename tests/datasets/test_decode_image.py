"""The one image decoder (datasets.utils.decode_image) as each path uses it: training reads the stored pixels,
prediction and INT8 calibration show a photo upright, the annotation import keeps the file's own mode; every mode
becomes the same 8-bit RGB; a file that cannot be used is one line naming it."""
import numpy as np
import pytest
from PIL import Image

from datasets.annotations.images import open_bytes, open_file
from datasets.calibration import read_calibration_image
from datasets.image_files import ImageFiles
from datasets.utils import DatasetError, load_image
from utils.io.image_limit import LIMIT_VARIABLE

EXIF_ORIENTATION = 0x0112
ROTATED_90 = 6  # stored sideways: viewers turn it a quarter clockwise
BIG = 10 ** 6


def _predicted(path) -> np.ndarray:
    index, item = ImageFiles([(str(path), path.name)])[0]
    assert index == 0 and not isinstance(item, str), item
    return item.permute(1, 2, 0).numpy()


def _sideways_jpeg(path):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATED_90
    Image.new("RGB", (40, 20), (200, 30, 30)).save(path, exif=exif.tobytes())
    return path


def test_exif_orientation_is_applied_where_each_path_needs_it(tmp_path):
    photo = _sideways_jpeg(tmp_path / "phone.jpg")
    assert load_image(str(photo)).size == (40, 20)  # training: the stored pixels, which masks are drawn on
    assert _predicted(photo).shape == (40, 20, 3)  # prediction: upright, as the photo shows
    assert tuple(read_calibration_image(str(photo), BIG).shape) == (3, 40, 20)  # calibration: as predict.py
    imported = open_file(str(photo))
    assert imported.image.size == (40, 20)  # the import decides later which pixels the annotations are on
    imported.match(None)
    assert imported.pixels().size == (20, 40)


@pytest.mark.parametrize("mode, pixels, expected", [
    ("I;16", np.full((4, 6), 65535, np.uint16), (255, 255, 255)),  # 16-bit: scaled to 0..255, not clipped
    ("RGBA", np.tile(np.array([255, 0, 0, 0], np.uint8), (4, 6, 1)), (0, 0, 0)),  # transparent: on black
    ("L", np.full((4, 6), 77, np.uint8), (77, 77, 77)),
])
def test_every_mode_is_the_same_8_bit_rgb_for_training_prediction_and_calibration(tmp_path, mode, pixels, expected):
    path = tmp_path / "x.png"
    image = Image.fromarray(pixels)
    assert image.mode == mode
    image.save(path)
    trained = np.asarray(load_image(str(path)))
    assert trained.dtype == np.uint8 and trained.shape == (4, 6, 3) and tuple(trained[0, 0]) == expected
    assert np.array_equal(_predicted(path), trained)
    assert np.array_equal(read_calibration_image(str(path), BIG).permute(1, 2, 0).numpy(), trained)
    assert open_file(str(path)).image.mode == Image.open(path).mode  # the import keeps the file's mode


def test_a_palette_image_with_a_transparent_index_is_composited_on_black(tmp_path):
    path = tmp_path / "p.png"
    image = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    image.putpalette([250, 0, 0, 0, 250, 0])
    image.save(path, transparency=1)
    assert np.array_equal(np.asarray(load_image(str(path))), [[[250, 0, 0], [0, 0, 0]]])
    assert np.array_equal(_predicted(path), [[[250, 0, 0], [0, 0, 0]]])


def test_a_file_that_cannot_be_decoded_is_one_line_naming_it_on_every_path(tmp_path):
    broken = tmp_path / "broken.png"
    Image.new("RGB", (40, 20)).save(broken)
    broken.write_bytes(broken.read_bytes()[:60])
    for read, line in ((load_image, f"cannot decode image {broken}: "),
                       (lambda path: read_calibration_image(path, BIG), f"cannot decode calibration image {broken}: "),
                       (open_file, f"cannot decode image {broken}: ")):
        with pytest.raises(DatasetError) as error:
            read(str(broken))
        assert str(error.value).startswith(line) and "\n" not in str(error.value)
    assert ImageFiles([(str(broken), "broken.png")])[0][1].startswith(f"cannot decode image {broken}: ")
    with pytest.raises(DatasetError, match="^cannot decode the image embedded in a.json: "):
        open_bytes(b"not an image", "a.json")
    with pytest.raises(DatasetError, match=f"^image {tmp_path / 'gone.png'} does not exist$"):
        load_image(str(tmp_path / "gone.png"))


def test_an_image_over_the_pixel_limit_is_refused_by_every_path(tmp_path, monkeypatch):
    photo = _sideways_jpeg(tmp_path / "phone.jpg")
    monkeypatch.setenv(LIMIT_VARIABLE, "799")
    over = "is 40x20 = 800 pixels, more than --max_image_pixels 799"
    for read, name in ((load_image, f"image {photo}"), (open_file, f"image {photo}"),
                       (lambda path: read_calibration_image(path, BIG), f"calibration image {photo}")):
        with pytest.raises(DatasetError, match=f"^{name} {over}"):
            read(str(photo))
    assert ImageFiles([(str(photo), "phone.jpg")])[0][1].startswith(f"image {photo} {over}")
    with pytest.raises(DatasetError, match=f"^the image embedded in a.json {over}"):
        open_bytes(photo.read_bytes(), "a.json")
