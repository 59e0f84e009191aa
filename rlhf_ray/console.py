"""What a person watching a run sees: stage lines, progress bars and summaries on the terminal, while Ray's and the
libraries' output goes to a log file under the run directory.

Quiet mode (`quiet_console`) sends everything the process writes to the log file: Ray worker stdout/stderr that
Ray forwards to the driver, Ray Data progress, Ray Train/Tune reporters, Serve logs, transformers and DeepSpeed
warnings, and the jobs' own JSON metric lines. It redirects the file descriptors 1 and 2, not only `sys.stdout`
and `sys.stderr`, because Ray's core worker (C++) and the processes a run starts write to the descriptors directly.
Only what goes through the `Console` reaches the terminal.

Progress bars read the run's metric lines as they pass to the log (the JSON lines of `MetricsSink.log` and of the
training loops, forwarded by Ray as `(RayTrainWorker pid=…) {...}`), so no trainer needs to know about the console.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

LOG_DIR = "logs"
# Without a terminal, a progress bar prints a plain line each time it crosses another tenth of its total.
PLAIN_STEPS = 10

Record = dict[str, Any]


def log_dir_for(output_dir: str) -> str:
    """Where a run's log files go: `<output_dir>/logs`, or a local temporary folder when the run directory is a
    URI (s3://...), since the log is written line by line as the run goes."""
    if "://" in output_dir:
        return os.path.join(tempfile.gettempdir(), "rlhf-ray-logs")
    return os.path.join(output_dir, LOG_DIR)


def metric_record(line: str) -> Record | None:
    """The JSON object a log line carries, if any: a metric line as a job prints it, or as Ray forwards a worker's
    (`(RayTrainWorker pid=12) {...}`, possibly with colour codes before the brace)."""
    start = line.find("{")
    if start < 0:
        return None
    try:
        record = json.loads(line[start:])
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


@dataclass
class Tracker:
    """A progress bar fed by metric records: `position(record)` says how far the work is (None: not this work's
    record), out of `total` `unit`s."""

    label: str
    total: int
    unit: str
    position: Callable[[Record], int | None]
    bar: Any = None
    shown: int = field(default=-1)


class Console:
    """The terminal's side of a run. `stream` is the terminal (or whatever stderr was before quiet mode), `stdout`
    the real stdout (for the job's summary line); `log_path` is the file holding everything else, None in verbose
    mode."""

    def __init__(self, stream: TextIO, log_path: str | None = None, stdout: TextIO | None = None) -> None:
        self.stream = stream
        self.stdout = stdout or sys.stdout
        self.log_path = log_path
        self.tty = _isatty(stream)
        self._lock = threading.RLock()
        self._tracker: Tracker | None = None

    def print(self, text: str) -> None:
        with self._lock:
            if self._tracker is not None and self._tracker.bar is not None:
                self._tracker.bar.write(text, file=self.stream)
            else:
                print(text, file=self.stream, flush=True)

    # ---- progress ---------------------------------------------------------------------------------------
    def track(self, tracker: Tracker | None) -> None:
        """Show `tracker`'s progress from now on (replacing any other; None stops). Only in quiet mode: in verbose
        mode the libraries' own output shows the progress."""
        with self._lock:
            self._close_bar()
            if tracker is None or self.log_path is None or tracker.total <= 0:
                self._tracker = None
                return
            if self.tty:
                from tqdm import tqdm

                tracker.bar = tqdm(total=tracker.total, desc=f"  {tracker.label}", unit=f" {tracker.unit}",
                                   file=self.stream, leave=False, dynamic_ncols=True)
            self._tracker = tracker

    def observe(self, line: str) -> None:
        """Advance the tracked progress if `line` is one of its metric records."""
        tracker = self._tracker
        if tracker is None or "{" not in line:
            return
        record = metric_record(line)
        position = tracker.position(record) if record is not None else None
        if position is None:
            return
        with self._lock:
            if self._tracker is not tracker:
                return
            position = max(0, min(position, tracker.total))
            if tracker.bar is not None:
                tracker.bar.update(position - tracker.bar.n)
            elif position * PLAIN_STEPS // tracker.total > max(tracker.shown, 0) * PLAIN_STEPS // tracker.total \
                    or (tracker.shown < 0 < position):
                print(f"  {tracker.label}: {tracker.unit} {position}/{tracker.total}", file=self.stream, flush=True)
                tracker.shown = position

    def _close_bar(self) -> None:
        if self._tracker is not None and self._tracker.bar is not None:
            self._tracker.bar.close()
        self._tracker = None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _LogTap(io.TextIOBase):
    """`sys.stdout`/`sys.stderr` during quiet mode: writes go to the log file, and each complete line is shown to
    the console's progress tracker. `release` sends later writes to `after` (a job's summary line printed once the
    run is over reaches the real stdout)."""

    def __init__(self, log: TextIO, console: Console, after: TextIO) -> None:
        super().__init__()
        self._log, self._console, self._after = log, console, after
        self._partial = ""
        self._released = False
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._released:
            return self._after.write(text)
        with self._lock:
            self._log.write(text)
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
        for line in lines:
            self._console.observe(line)
        return len(text)

    def flush(self) -> None:
        (self._after if self._released else self._log).flush()

    def isatty(self) -> bool:
        return False

    def release(self) -> None:
        with self._lock:
            self._log.flush()
            self._released = True


def _detached(stream: TextIO, fd: int) -> TextIO:
    """`stream`, or a copy of it that survives redirecting descriptor `fd` when it writes to that descriptor."""
    try:
        if stream.fileno() != fd:
            return stream
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        return stream
    stream.flush()
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8",
                     errors="replace")


@contextlib.contextmanager
def quiet_console(output_dir: str, job: str, verbose: bool = False) -> Iterator[Console]:
    """A `Console` for a run. Quiet (the default), the process's output goes to `<output_dir>/logs/<job>-<time>.log`
    until the block ends; `verbose` leaves it on the terminal. An exception leaving the block is written to the
    log with its traceback, and the console names the log; the exception goes on."""
    if verbose:
        yield Console(sys.stderr, stdout=sys.stdout)
        return
    folder = log_dir_for(output_dir)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{job}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
    log = open(path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115 (closed below)
    out, err = sys.stdout, sys.stderr
    terminal, terminal_out = _detached(err, 2), _detached(out, 1)
    console = Console(terminal, path, terminal_out)
    console.print(f"[{job}] logs: {path} (--verbose shows them here)")
    for stream in (out, err):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    tap = _LogTap(log, console, out)
    try:
        for fd in saved:
            os.dup2(log.fileno(), fd)
        sys.stdout = sys.stderr = tap
        try:
            yield console
        except BaseException as error:
            traceback.print_exception(error, file=log)
            console.track(None)
            console.print(f"[{job}] stopped by {type(error).__name__}; full log: {path}")
            raise
        finally:
            console.track(None)
    finally:
        tap.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        sys.stdout, sys.stderr = out, err
        tap.release()
        log.close()
        for copy, stream in ((terminal, err), (terminal_out, out)):
            if copy is not stream:
                copy.close()
