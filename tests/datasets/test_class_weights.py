"""--class_weights: median frequency by hand, absent classes, the YAML file's errors, and resolve's log line."""
import numpy as np
import pytest
import torch

from datasets import VOCSegmentation
from datasets.class_stats import ClassStats
from tests.helpers import write_voc
from datasets import class_weights
from datasets.class_weights import median_frequency_weights, read_class_weights, resolve_class_weights

NAMES = ("background", "crack", "rust")
# pixels [7, 1, 3] in images of [11, 3, 4] labelled pixels: freq 7/11, 1/3, 3/4, median 7/11
STATS = ClassStats(pixel_counts=[7, 1, 3], image_counts=[3, 1, 1], image_pixels=[11, 3, 4], num_images=3,
                   background_only_images=1)


def test_median_frequency_by_hand():
    weights = median_frequency_weights(STATS, NAMES)
    assert weights.dtype == torch.float32
    assert weights.tolist() == pytest.approx([1.0, (7 / 11) / (1 / 3), (7 / 11) / (3 / 4)])


def test_a_class_that_never_appears_gets_weight_one_and_a_warning():
    notes = []
    stats = ClassStats([7, 0, 3], [3, 0, 1], [11, 0, 4], 3, 2)
    weights = median_frequency_weights(stats, NAMES, log=notes.append)
    median = np.median([7 / 11, 3 / 4])
    assert weights.tolist() == pytest.approx([median / (7 / 11), 1.0, median / (3 / 4)])
    assert len(notes) == 1 and notes[0].startswith("warning: class(es) crack never appear in the training masks")


def test_masks_without_a_labelled_pixel_are_an_error():
    with pytest.raises(ValueError, match="the 2 training masks have no labelled pixel"):
        median_frequency_weights(ClassStats([0, 0, 0], [0, 0, 0], [0, 0, 0], 2, 2), NAMES)


def _yaml(tmp_path, text):
    path = tmp_path / "weights.yaml"
    path.write_text(text)
    return str(path)


def test_weights_file(tmp_path):
    assert read_class_weights(_yaml(tmp_path, "[0.5, 4, 2.0]\n"), NAMES).tolist() == [0.5, 4.0, 2.0]
    assert read_class_weights(_yaml(tmp_path, "- 1\n- 0\n- 3\n"), NAMES).tolist() == [1.0, 0.0, 3.0]


@pytest.mark.parametrize("text, message", [
    ("[1.0, 2.0]", r" lists 2 weights for 3 classes \(background, crack, rust\); give one per class"),
    ("[1.0, -2.0, 1.0]", "weights must be finite and 0 or more, not -2.0"),
    ("[1.0, .nan, 1.0]", "weights must be finite and 0 or more, not nan"),
    ("[0, 0, 0]", "every weight is 0"),
    ("{background: 1}", "must hold a YAML list of numbers"),
    ("[1.0, yes, 2.0]", "must hold a YAML list of numbers"),
    ("[1.0, 2.0", "is not valid YAML"),
])
def test_weights_file_errors_name_the_file(tmp_path, text, message):
    with pytest.raises(ValueError, match=f"--class_weights .*weights.yaml.*{message}") as err:
        read_class_weights(_yaml(tmp_path, text), NAMES)
    assert "\n" not in str(err.value)


def test_missing_weights_file(tmp_path):
    with pytest.raises(ValueError, match="--class_weights .*nothing.yaml does not exist; give none, auto, or a YAML"):
        read_class_weights(str(tmp_path / "nothing.yaml"), NAMES)


def test_resolve_logs_the_weights_with_class_names(tmp_path, monkeypatch):
    class Dataset:
        class_names = NAMES

    monkeypatch.setattr(class_weights, "load_class_stats", lambda dataset, log: STATS)
    lines = []
    assert resolve_class_weights("none", Dataset(), lines.append) is None and lines == []
    weights = resolve_class_weights("auto", Dataset(), lines.append)
    assert weights.tolist() == pytest.approx([1.0, 21 / 11, 28 / 33])
    assert lines == ["class weights (auto, median frequency): background 1, crack 1.91, rust 0.848"]
    path = _yaml(tmp_path, "[0.5, 4, 2]")
    assert resolve_class_weights(path, Dataset(), lines.append).tolist() == [0.5, 4.0, 2.0]
    assert lines[-1] == f"class weights ({path}): background 0.5, crack 4, rust 2"


def test_auto_on_a_voc_folder_end_to_end(tmp_path):
    """Masks of classes 0-2 only: the other 18 VOC classes are named in one warning and weigh 1."""
    write_voc(str(tmp_path))
    lines = []
    weights = resolve_class_weights("auto", VOCSegmentation(str(tmp_path)), lines.append)
    assert weights.shape == (21,) and torch.all(weights[3:] == 1) and torch.all(weights[:3] > 0)
    assert lines[0].startswith("warning: class(es) bird, boat, bottle,") and "tvmonitor never appear" in lines[0]
    assert lines[1].startswith("class weights (auto, median frequency): background ")
