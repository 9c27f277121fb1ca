"""Segmentation metrics."""
from .stream_metrics import AverageMeter, StreamSegMetrics

__all__ = ["StreamSegMetrics", "AverageMeter"]
