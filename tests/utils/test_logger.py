"""One logging path: every sink gets the same events; process 0 alone writes; TensorBoard files read back."""
import json
import os
import re

import numpy as np
import pytest
import torch

from metrics import StreamSegMetrics
from utils.reporting.logger import ConsoleSink, EvaluationReport, RunLogger, TensorBoardSink, VisdomSink, build_logger


class RecordingVisualizer:
    """Stands in for utils.visualizer.Visualizer: records (method, window name) of every call."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, method):
        return lambda name, *args, **kwargs: self.calls.append((method, name))


def _report(num_classes=3, absent=2) -> EvaluationReport:
    metrics = StreamSegMetrics(num_classes, [f"c{i}" for i in range(num_classes)])
    truth = torch.tensor([0, 0, 1, 1, 1, 0])
    metrics.update(truth, torch.tensor([0, 1, 1, 1, 0, 0]))
    results = metrics.get_results()
    assert absent in results["Absent Classes"]
    sample = np.zeros((3, 4, 12), np.uint8)
    return EvaluationReport(metrics.to_str(results), results, metrics.confusion_matrix.numpy(),
                            metrics.class_names, {"checkpoint": "x.pth", "iteration": 7}, [sample])


def test_other_processes_get_a_logger_without_sinks(tmp_path):
    logger = build_logger(False, ConsoleSink(10, 5), str(tmp_path / "res"), tensorboard_dir=str(tmp_path / "tb"))
    assert logger.sinks == []
    logger.evaluation(1, _report())
    logger.scalars(1, {"Loss": 1.0}, "step")
    assert not os.listdir(tmp_path)  # nothing written by a process other than 0


def test_console_prints_the_interval_line_and_reports(capsys):
    console = ConsoleSink(total_itrs=20, batches_per_epoch=4)
    logger = RunLogger([console])
    logger.scalars(3, {"Loss": 0.5}, "step")  # per-step values are for the dashboards
    assert capsys.readouterr().out == ""
    logger.scalars(6, {"Loss": 0.25, "LR": 0.01, "Images/s": 3.5}, "interval")
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"Epoch 2, Itrs 6/20, Loss=0\.250000, lr=0\.010000, 3\.50 images/s, ETA \d\d:\d\d:\d\d", line)
    logger.evaluation(6, _report())
    out = capsys.readouterr().out
    assert "Mean IoU:" in out and "absent" in out and "nan" not in out.lower()


def test_visdom_keeps_the_original_window_names_and_adds_bars_and_heatmap():
    vis = RecordingVisualizer()
    logger = RunLogger([VisdomSink(vis)])
    logger.table("Options", {"lr": 0.01})
    logger.scalars(1, {"Loss": 0.5}, "step")
    logger.scalars(2, {"Loss": 0.4, "LR": 0.01, "Images/s": 2.0}, "interval")
    logger.evaluation(2, _report())
    assert vis.calls == [("vis_table", "Options"), ("vis_scalar", "Loss"), ("vis_scalar", "LR"),
                         ("vis_scalar", "Images/s"), ("vis_scalar", "[Val] Overall Acc"),
                         ("vis_scalar", "[Val] Mean IoU"), ("vis_table", "[Val] Class IoU"),
                         ("vis_bar", "[Val] Class IoU (bars)"), ("vis_heatmap", "[Val] Confusion Matrix"),
                         ("vis_image", "Sample 0")]


def test_files_sink_writes_metrics_and_confusion_matrix(tmp_path):
    logger = build_logger(True, None, str(tmp_path / "res"))
    logger.evaluation(7, _report())
    files = set(os.listdir(tmp_path / "res"))
    assert {"metrics.json", "confusion_matrix.csv"} <= files
    with open(tmp_path / "res" / "metrics.json") as f:
        written = json.load(f)
    assert written["info"]["iteration"] == 7 and written["info"]["checkpoint"] == "x.pth"


def test_tensorboard_event_file_reads_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = RunLogger([TensorBoardSink(str(tmp_path))])
    logger.table("Options", {"lr": 0.01})
    for step in (1, 2):
        logger.scalars(step, {"Loss": 1.0 / step}, "step")
    logger.scalars(2, {"Loss": 0.75, "LR": 0.01, "Images/s": 2.0}, "interval")
    logger.evaluation(2, _report())
    logger.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert [e.value for e in events.Scalars("train/Loss")] == [1.0, 0.5]  # per step, not again as a mean
    # one scheme, as TensorBoard users expect: train/..., val/..., run/Options
    assert {"train/LR", "train/Images/s", "val/Mean IoU", "val/Overall Acc", "val/Class IoU/0 c0"} \
        <= set(tags["scalars"])
    assert "val/Class IoU/2 c2" not in tags["scalars"]  # absent: no point, not a 0
    assert {"val/Confusion Matrix", "val/Sample 0"} == set(tags["images"])
    assert {"run/Options", "val/Report", "val/Class IoU"} == {tag.split("/text_summary")[0] for tag in tags["tensors"]}
    assert not [tag for kind in ("scalars", "images", "tensors") for tag in tags[kind] if "[" in tag]
    assert events.Images("val/Sample 0")[0].width == 12
    assert [event.step for event in events.Tensors("val/Class IoU/text_summary")] == [2]  # at its iteration
    confusion = events.Images("val/Confusion Matrix")[0]
    assert confusion.width >= 500  # the picture of confusion_matrix.png: names, numbers and colour bar


def test_missing_tensorboard_is_one_clear_error(monkeypatch, tmp_path):
    import sys

    from utils.reporting.logger import LoggerError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(LoggerError, match=r"^tensorboard is not installed; it is needed for --tensorboard: pip install tensorboard==2\.21\.0$"):
        TensorBoardSink(str(tmp_path))


def test_a_resumed_run_replaces_what_the_interrupted_one_logged_after_its_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = RunLogger([TensorBoardSink(str(tmp_path))])
    for step in (1, 2, 3):  # killed after step 3; its checkpoint is from step 2
        first.scalars(step, {"Loss": float(step)}, "step")
    first.close()
    resumed = RunLogger([TensorBoardSink(str(tmp_path), resumed_at=2)])
    for step in (3, 4):
        resumed.scalars(step, {"Loss": 10.0 * step}, "step")
    resumed.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/Loss")] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]


def test_the_confusion_picture_is_drawn_once_for_the_files_and_tensorboard(tmp_path, monkeypatch):
    """confusion_matrix.png and TensorBoard's image show the same picture, drawn once per evaluation."""
    import io
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from utils.reporting import logger as logger_module
    from utils.reporting.logger import EvaluationFilesSink

    drawn = []
    draw = logger_module.confusion_picture
    monkeypatch.setattr(logger_module, "confusion_picture", lambda *args: drawn.append(args) or draw(*args))
    logger = RunLogger([EvaluationFilesSink(str(tmp_path / "res")), TensorBoardSink(str(tmp_path / "tb"))])
    logger.evaluation(2, _report())
    logger.close()
    assert len(drawn) == 1
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    shown = Image.open(io.BytesIO(events.Images("val/Confusion Matrix")[0].encoded_image_string))
    written = Image.open(tmp_path / "res" / "confusion_matrix.png")
    assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(written.convert("RGB")))
