"""Visdom dashboard that never stops training: no server, or a server that goes away, means a warning once."""
import contextlib
import io
import logging
import sys
from typing import Any, Dict, List, Optional

import numpy as np

__all__ = ["Visualizer", "REQUEST_TIMEOUT_S"]

# A server that stops answering (frozen, or its host gone with the connection open) held training in a socket read
# for good, where no stop signal reached it: each request gives up after this many seconds.
REQUEST_TIMEOUT_S = 10.0


def _client(visdom: Any, **options: Any) -> Any:
    """A ``visdom.Visdom`` whose HTTP requests time out after :data:`REQUEST_TIMEOUT_S` (Visdom sets none)."""
    class TimedVisdom(visdom.Visdom):
        @property
        def session(self):
            session = super().session
            if not getattr(session, "timed", False):
                request = session.request

                def timed(*args, **kwargs):
                    kwargs.setdefault("timeout", REQUEST_TIMEOUT_S)
                    return request(*args, **kwargs)
                session.request, session.timed = timed, True
            return session

    return TimedVisdom(**options)


class Visualizer:
    """``vis_scalar``, ``vis_image``, ``vis_table``, ``vis_bar`` and ``vis_heatmap`` on a Visdom server at ``host:port``, env ``env``.

    Every call is a no-op after the first failure, which is reported once on stderr.
    """

    def __init__(self, port: int = 13570, env: str = "main", id: Optional[str] = None,
                 host: str = "http://localhost"):
        self.id = id
        self.env = env
        self.vis = None
        try:
            import visdom

            logging.getLogger("visdom").setLevel(logging.ERROR)  # its lines about sockets: ours say what matters
            with contextlib.redirect_stdout(io.StringIO()):  # and its prints ("Error connecting to Visdom server!")
                self.vis = _client(visdom, server=host, port=int(port), env=env, raise_exceptions=True,
                                   use_incoming_socket=False)
        except Exception as exc:  # ConnectionError, ImportError, ...
            self._disable(f"cannot reach the Visdom server at {host}:{port} ({type(exc).__name__}); "
                          "training goes on without the dashboard (start one with `make visdom`)")

    @property
    def enabled(self) -> bool:
        return self.vis is not None

    def _disable(self, message: str) -> None:
        self.vis = None
        print(f"warning: {message}", file=sys.stderr)

    def _call(self, fn: str, **kwargs: Any) -> None:
        if self.vis is None:
            return
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                getattr(self.vis, fn)(**kwargs)
        except Exception as exc:
            self._disable(f"the Visdom server stopped answering ({type(exc).__name__}); dashboard disabled")

    def _name(self, name: str) -> str:
        return name if self.id is None else f"[{self.id}] {name}"

    def vis_scalar(self, name: str, x, y, opts: Optional[Dict] = None) -> None:
        """Append point(s) ``(x, y)`` to the line plot ``name``."""
        x = np.atleast_1d(np.asarray(x, dtype=np.float64))
        y = np.atleast_1d(np.asarray(y, dtype=np.float64))
        title = self._name(name)
        self._call("line", X=x, Y=y, win=title, update="append",
                   opts=dict(title=title, **(opts or {})))

    def vis_image(self, name: str, img: np.ndarray, env: Optional[str] = None, opts: Optional[Dict] = None) -> None:
        """Show a (3, H, W) uint8 image in window ``name``."""
        title = self._name(name)
        self._call("image", img=img, win=title, env=env or self.env, opts=dict(title=title, **(opts or {})))

    def vis_table(self, name: str, tbl: Dict[Any, Any], opts: Optional[Dict] = None) -> None:
        """Show a key/value table as HTML in window ``name``."""
        rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in tbl.items())
        title = self._name(name)
        self._call("text", text=f"<table><tr><th>Term</th><th>Value</th></tr>{rows}</table>", win=title,
                   opts=dict(title=title, **(opts or {})))

    def vis_bar(self, name: str, labels: List[str], values: List[float], opts: Optional[Dict] = None) -> None:
        """Show one bar per label in window ``name`` (redrawn on each call)."""
        title = self._name(name)
        self._call("bar", X=np.asarray(values, dtype=np.float64), win=title,
                   opts=dict(title=title, rownames=labels, **(opts or {})))

    def vis_heatmap(self, name: str, matrix: np.ndarray, labels: List[str], opts: Optional[Dict] = None) -> None:
        """Show a square matrix (rows: truth, columns: prediction) with ``labels`` on both axes."""
        title = self._name(name)
        self._call("heatmap", X=np.asarray(matrix, dtype=np.float64), win=title,
                   opts=dict(title=title, rownames=labels, columnnames=labels, xmin=0.0, xmax=1.0, **(opts or {})))
