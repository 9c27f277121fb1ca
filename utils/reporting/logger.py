"""One logging path for training and evaluation: the console, Visdom and TensorBoard receive the same events.

The training script calls :class:`RunLogger` once per event; each sink shows what it can (the console prints
text and the interval summary line, dashboards draw plots, tables, images and heatmaps, the files sink writes
metrics.json and the confusion matrix). Only process 0 of a
distributed run gets sinks, so the call sites need no rank checks and no ``if vis`` branches.

Event groups of :meth:`RunLogger.scalars`: ``"step"`` (every iteration: the loss), ``"interval"`` (every
--print_interval: mean loss, learning rate, images/s), ``"val"`` (validation scores) and ``"time"`` (the time
report at the end of a run: seconds per phase, speed, peak memory).
"""
import dataclasses
import functools
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from utils.io.atomic import write_advice
from utils.io.optional_packages import import_optional
from utils.io.stop_signals import stop_signals_held
from utils.reporting.confusion_picture import confusion_picture, row_normalised
from utils.reporting.eval_report import write_evaluation
from utils.visualizer import Visualizer

__all__ = ["EvaluationReport", "Sink", "ConsoleSink", "VisdomSink", "TensorBoardSink", "EvaluationFilesSink",
           "RunLogger", "LoggerError", "build_logger", "require_tensorboard"]


class LoggerError(RuntimeError):
    """A requested log destination cannot be used; the message says what to do."""


@dataclasses.dataclass
class EvaluationReport:
    """One evaluation: what every sink may show of it."""

    text: str  # the printed report: scores and the per-class table
    results: Dict[str, Any]  # StreamSegMetrics.get_results()
    confusion_matrix: np.ndarray  # counts, rows: truth, columns: prediction
    class_names: Sequence[str]
    info: Dict[str, Any]  # checkpoint, iteration, evaluation settings (for metrics.json)
    samples: List[np.ndarray] = dataclasses.field(default_factory=list)  # (3, H, 3W) image | truth | prediction

    @functools.cached_property
    def picture(self) -> Image.Image:
        """The confusion matrix drawn as confusion_matrix.png shows it; drawn once for every sink that shows it."""
        return confusion_picture(self.confusion_matrix, self.class_names)

    def scores(self) -> Dict[str, float]:
        """The validation curves: the original's two, and the object's scores on a binary task."""
        keys = ("Overall Acc", "Mean IoU", "Object IoU", "Object Dice")
        return {k: self.results[k] for k in keys if k in self.results}

    def class_iou(self) -> Dict[str, float]:
        return {f"{i} {self.class_names[i]}": v for i, v in self.results["Class IoU"].items()}


class Sink:
    """A log destination. Every event is a no-op unless the sink overrides it; an evaluation arrives as
    text, validation scalars, the class IoU table and bars, the confusion-matrix heatmap and sample images."""

    def evaluation(self, step: int, report: EvaluationReport) -> None:
        self.text("Validation", step, report.text)
        self.scalars(step, report.scores(), "val")
        class_iou = report.class_iou()
        self.table("[Val] Class IoU", {k: "absent" if np.isnan(v) else f"{v:.4f}" for k, v in class_iou.items()},
                   step)
        self.bars("[Val] Class IoU", step, class_iou)
        self.heatmap("[Val] Confusion Matrix", step, report)
        for k, sample in enumerate(report.samples):
            self.image(f"Sample {k}", step, sample)

    def scalars(self, step: int, values: Mapping[str, float], group: str) -> None:
        pass

    def text(self, name: str, step: int, message: str) -> None:
        pass

    def table(self, name: str, rows: Mapping[str, Any], step: Optional[int] = None) -> None:
        pass

    def bars(self, name: str, step: int, values: Mapping[str, float]) -> None:
        pass

    def heatmap(self, name: str, step: int, report: EvaluationReport) -> None:
        """The evaluation's confusion matrix (pixel counts, rows: truth)."""

    def image(self, name: str, step: int, image: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


class ConsoleSink(Sink):
    """A progress bar over the iterations, a line per print interval with the epoch and the time left, and
    the validation reports."""

    def __init__(self, total_itrs: int, batches_per_epoch: int, start_itrs: int = 0):
        self.total_itrs, self.batches_per_epoch, self.start_itrs = total_itrs, batches_per_epoch, start_itrs
        self.start_time = time.time()
        self.progress: Optional[tqdm] = None  # opened by the first training step (none for --test_only)

    def _eta(self, step: int) -> str:
        per_itr = (time.time() - self.start_time) / max(step - self.start_itrs, 1)
        return time.strftime("%H:%M:%S", time.gmtime(per_itr * max(self.total_itrs - step, 0)))

    def scalars(self, step: int, values: Mapping[str, float], group: str) -> None:
        if group == "step":
            if self.progress is None:  # disable=None: only on a terminal, not in logs and pipes
                self.progress = tqdm(total=self.total_itrs, initial=step - 1, desc="train", disable=None)
            self.progress.update(step - self.progress.n)
        if group != "interval":
            return
        epoch = (step - 1) // self.batches_per_epoch + 1
        tqdm.write(f"Epoch {epoch}, Itrs {step}/{self.total_itrs}, Loss={values['Loss']:.6f}, "
                   f"lr={values['LR']:.6f}, {values['Images/s']:.2f} images/s, ETA {self._eta(step)}")

    def text(self, name: str, step: int, message: str) -> None:
        tqdm.write(message)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()


class VisdomSink(Sink):
    """The original's dashboard windows ("Loss", "LR", "Images/s", "[Val] Mean IoU", "[Val] Class IoU",
    "Sample k", "Options"), plus the class IoU as bars and the confusion matrix as a heatmap."""

    def __init__(self, visualizer: Visualizer):
        self.vis = visualizer

    def scalars(self, step: int, values: Mapping[str, float], group: str) -> None:
        if group == "time":  # one value per run: the report's text says it
            return
        for name, value in values.items():
            if group == "val":
                self.vis.vis_scalar(f"[Val] {name}", step, value)
            elif group == "step" or name != "Loss":  # the loss is drawn every step, not again as a mean
                self.vis.vis_scalar(name, step, value)

    def table(self, name: str, rows: Mapping[str, Any], step: Optional[int] = None) -> None:
        self.vis.vis_table(name, rows)

    def bars(self, name: str, step: int, values: Mapping[str, float]) -> None:
        present = {label: value for label, value in values.items() if not np.isnan(value)}  # absent is not 0
        self.vis.vis_bar(f"{name} (bars)", list(present), list(present.values()))

    def heatmap(self, name: str, step: int, report: EvaluationReport) -> None:
        self.vis.vis_heatmap(name, row_normalised(report.confusion_matrix), list(report.class_names))

    def image(self, name: str, step: int, image: np.ndarray) -> None:
        self.vis.vis_image(name, image)


def require_tensorboard() -> type:
    """torch's SummaryWriter, or a LoggerError naming the pip command when tensorboard is not installed."""
    return import_optional("torch.utils.tensorboard", "--tensorboard", LoggerError, package="tensorboard").SummaryWriter


class TensorBoardSink(Sink):
    """Event files in ``log_dir``: what the Visdom dashboard shows, as TensorBoard scalars, text and images, under
    one tag scheme: ``train/...``, ``val/...``, ``time/...`` and ``run/Options``."""

    SECTIONS = {"step": "train", "interval": "train", "val": "val", "time": "time"}
    TAGS = {"Validation": "val/Report", "Options": "run/Options", "Time report": "time/Report"}

    def __init__(self, log_dir: str, resumed_at: int = 0):
        # A resumed run drops what an interrupted one logged after its checkpoint, so no step appears twice.
        self.writer = require_tensorboard()(log_dir=log_dir, purge_step=resumed_at + 1 if resumed_at else None)

    @classmethod
    def tag(cls, name: str) -> str:
        """The dashboard's window name as a TensorBoard tag ("[Val] Class IoU" -> "val/Class IoU")."""
        if name in cls.TAGS:
            return cls.TAGS[name]
        if name.startswith("[Val] "):
            return "val/" + name[len("[Val] "):]
        return "val/" + name if name.startswith("Sample ") else name

    def scalars(self, step: int, values: Mapping[str, float], group: str) -> None:
        for name, value in values.items():
            if group != "interval" or name != "Loss":  # the loss every step, not again as a mean
                self.writer.add_scalar(f"{self.SECTIONS[group]}/{name}", value, step)

    def text(self, name: str, step: int, message: str) -> None:
        preformatted = "\n".join("    " + line for line in message.splitlines())
        self.writer.add_text(self.tag(name), preformatted, step)

    def table(self, name: str, rows: Mapping[str, Any], step: Optional[int] = None) -> None:
        lines = ["| Term | Value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows.items()]
        self.writer.add_text(self.tag(name), "\n".join(lines), step)

    def bars(self, name: str, step: int, values: Mapping[str, float]) -> None:
        for label, value in values.items():
            if not np.isnan(value):  # an absent class has no score to plot
                self.writer.add_scalar(f"{self.tag(name)}/{label}", value, step)

    def heatmap(self, name: str, step: int, report: EvaluationReport) -> None:
        """The picture of confusion_matrix.png: names, numbers, colour bar."""
        self.writer.add_image(self.tag(name), np.asarray(report.picture), step, dataformats="HWC")

    def image(self, name: str, step: int, image: np.ndarray) -> None:
        self.writer.add_image(self.tag(name), image, step, dataformats="CHW")

    def close(self) -> None:
        self.writer.close()


class EvaluationFilesSink(Sink):
    """metrics.json, confusion_matrix.csv and confusion_matrix.png of each evaluation, in ``folder``."""

    def __init__(self, folder: str):
        self.folder = folder

    def evaluation(self, step: int, report: EvaluationReport) -> None:
        try:
            write_evaluation(self.folder, report.results, report.confusion_matrix, report.class_names, report.info,
                             report.picture)
        except OSError as exc:  # each file is written atomically: the previous evaluation's stay whole
            raise LoggerError(f"cannot write the evaluation files in {self.folder} ({exc.strerror or exc}); the "
                              f"checkpoints are saved; {write_advice(exc, self.folder)} (--results_dir)") from exc


class RunLogger:
    """Sends each event to every sink. A logger without sinks (processes other than 0) does nothing."""

    def __init__(self, sinks: Optional[List[Sink]] = None):
        self.sinks = list(sinks or [])

    def evaluation(self, step: int, report: EvaluationReport) -> None:
        for sink in self.sinks:
            sink.evaluation(step, report)

    def scalars(self, step: int, values: Mapping[str, float], group: str) -> None:
        for sink in self.sinks:
            sink.scalars(step, values, group)

    def table(self, name: str, rows: Mapping[str, Any], step: Optional[int] = None) -> None:
        for sink in self.sinks:
            sink.table(name, rows, step)

    def text(self, name: str, step: int, message: str) -> None:
        for sink in self.sinks:
            sink.text(name, step, message)

    def close(self) -> None:
        """Close every sink (TensorBoard flushes its last events); a stop signal waits until all are closed."""
        with stop_signals_held():
            for sink in self.sinks:
                sink.close()


def build_logger(is_main: bool, console: Optional[ConsoleSink], results_dir: Optional[str] = None,
                 visdom: Optional[Dict[str, Any]] = None, tensorboard_dir: Optional[str] = None,
                 resumed_at: int = 0) -> RunLogger:
    """Process 0's logger: the console, the evaluation files in ``results_dir`` and the dashboards asked for;
    an empty one elsewhere.

    ``visdom`` holds Visualizer's arguments (host, port, env); an unreachable server warns once and training
    goes on, but a missing TensorBoard package is an error, since the user asked for its files.
    """
    if not is_main:
        return RunLogger()
    sinks: List[Sink] = [console] if console is not None else []
    if results_dir:
        sinks.append(EvaluationFilesSink(results_dir))
    if tensorboard_dir:
        sinks.append(TensorBoardSink(tensorboard_dir, resumed_at))
    if visdom is not None:
        sinks.append(VisdomSink(Visualizer(**visdom)))
    return RunLogger(sinks)
