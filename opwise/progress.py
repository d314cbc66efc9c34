"""Progress of long work: branch-and-bound rounds, the layers of a bound pass, α-CROWN's iterations and suite
runs report to a callback, which a command line draws as one live line on stderr. A library call reports
nothing unless it is given a callback (`progress=`) or asked with `verbose=True`."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

#: what long work reports as it goes: {"search": what runs (GenBaB, input splitting, a bounding method), then
#: those that apply of "open", "visited", "layer"/"layers", "iteration"/"iterations", "lower", "seconds", "left"}
Progress = Callable[[dict], None]


class LiveLine:
    """Draw the latest report as one line rewritten in place (at most every `interval` seconds, except the first
    report of a new search or pass; a shorter line is padded with blanks over the longer one before it), ended
    with a newline by `close()`.

    >>> import io
    >>> stream = io.StringIO()
    >>> line = LiveLine(stream, interval=0.0)
    >>> line({"search": "GenBaB", "open": 12, "visited": 40, "lower": -0.25, "seconds": 1.5, "left": 8.5})
    >>> line.close(); stream.getvalue()
    '\\rGenBaB: 12 open, 40 visited, lower bound -0.25, 1.5 s, 8.5 s left\\n'
    """

    def __init__(self, stream: TextIO | None = None, interval: float = 0.5):
        self.stream, self.interval, self.last, self.drawn = stream or sys.stderr, interval, 0.0, False
        self.width = 0  # of the line on screen
        self.search = None  # of the report on screen: a new phase (bound pass, then search) is drawn at once

    def __call__(self, report: dict) -> None:
        now = time.monotonic()
        if now - self.last < self.interval and report.get("search") == self.search:
            return
        self.last, self.drawn, self.search = now, True, report.get("search")
        text = describe(report)
        self.stream.write("\r" + text.ljust(self.width))
        self.width = len(text)
        self.stream.flush()

    def close(self) -> None:
        """End the line (a newline, when anything was drawn), so that later output starts on its own line."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn, self.width = False, 0
        self.last, self.search = 0.0, None  # the next line starts with its first report


def describe(report: dict) -> str:
    """One line for a report (fields that are absent are left out).

    >>> describe({"search": "input splitting", "open": 3, "visited": 10, "seconds": 0.2})
    'input splitting: 3 open, 10 visited, 0.2 s'
    >>> describe({"search": "alpha-crown", "iteration": 4, "iterations": 20, "lower": -0.125, "seconds": 2.0})
    'alpha-crown: iteration 4/20, lower bound -0.125, 2.0 s'
    """
    parts = [f"{report['open']} open" if "open" in report else None,
             f"{report['visited']} visited" if "visited" in report else None,
             f"layer {report['layer']}/{report['layers']}" if "layer" in report else None,
             f"iteration {report['iteration']}/{report['iterations']}" if "iteration" in report else None,
             f"lower bound {report['lower']:.4g}" if report.get("lower") is not None else None,
             f"{report['seconds']:.1f} s" if "seconds" in report else None,
             f"{report['left']:.1f} s left" if report.get("left") is not None else None]
    return f"{report.get('search', 'search')}: " + ", ".join(p for p in parts if p)


def eta(done: int, total: int, elapsed: float) -> float | None:
    """Seconds left at the pace so far (None before anything is done).

    >>> eta(2, 10, 4.0), eta(0, 10, 4.0)
    (16.0, None)
    """
    return None if done == 0 else elapsed / done * (total - done)
