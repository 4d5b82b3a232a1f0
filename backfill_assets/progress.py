"""Progress of long work (a backfill's partitions and runs) as text, and where to print it.

``progress_text`` is a plain function of counts and seconds; ``ProgressLine`` prints it as one
line rewritten in place on a terminal, or as plain lines at most every ``interval`` seconds
(plus one at the end) when the output is a file or a pipe, so logs stay short.
"""

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: short enough for a progress line."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def eta_seconds(fraction: float, elapsed: float) -> float | None:
    """Seconds left if the rest goes at the rate so far; None before anything is done."""
    if fraction <= 0 or elapsed <= 0:
        return None
    return elapsed * max(1 - fraction, 0) / fraction


def progress_text(
    done: int,
    total: int,
    elapsed: float,
    *,
    unit: str = "partitions",
    failed: int = 0,
    runs_done: int | None = None,
    runs_total: int | None = None,
    more_runs: bool = False,
) -> str:
    """``1,234/2,972 partitions (41%), 12/32 runs, 1m32s elapsed, ETA 2m10s``.

    ``done`` includes ``failed`` (a failed partition is finished, not pending); the percentage
    is rounded down so 100% means all done. ``more_runs`` marks a run count that will still
    grow (not every partition has a run yet): ``12/32+ runs``, or ``0/? runs`` before the
    first. The ETA follows the larger of the two shares done, partitions and (once every run
    is launched) runs: each lags on its own (Dagster counts a backfill's partitions once per
    daemon iteration; its runs appear a few at a time).
    """
    share = done / total if total > 0 else 0.0
    percent = 100 * done // total if total > 0 else 0  # integers: 29/100 is 29%, not 28%
    parts = [f"{done:,}/{total:,} {unit} ({percent}%)"]
    if failed:
        parts[0] += f", {failed:,} failed"
    if runs_total is not None:
        runs_done = runs_done or 0
        if more_runs:
            parts.append(f"{runs_done:,}/{f'{runs_total:,}+' if runs_total else '?'} runs")
        else:
            parts.append(f"{runs_done:,}/{runs_total:,} runs")
            if runs_total > 0:
                share = max(share, runs_done / runs_total)
    parts.append(f"{duration(elapsed)} elapsed")
    if total > 0 and done >= total:
        parts.append("done")
    else:
        eta = eta_seconds(share, elapsed)
        parts.append(f"ETA {duration(eta)}" if eta is not None else "ETA unknown")
    return ", ".join(parts)


class ProgressLine:
    """One progress line. On a terminal every update rewrites it in place; otherwise an update
    is printed as its own line only if ``interval`` seconds passed since the last one printed.
    ``finish`` always prints its text and ends the line."""

    def __init__(
        self,
        stream: TextIO | None = None,
        interval: float = 10.0,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval
        self.clock = clock
        self._last_printed: float | None = None
        self._open = False  # a terminal line was written and not ended yet

    def update(self, text: str) -> None:
        if self.tty:
            # A line wider than the terminal wraps, and "\r" would rewrite only its last row.
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + text[:width] + "\x1b[K")
            self._open = True
        else:
            now = self.clock()
            if self._last_printed is not None and now - self._last_printed < self.interval:
                return
            self._last_printed = now
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, text: str) -> None:
        if self.tty and self._open:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()
        self._open = False
