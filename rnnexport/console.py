"""Terminal plumbing for the command line: TensorFlow's C++ noise, and the progress display."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool) -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to /dev/null, keeping Python's stderr.

    TensorFlow's C++ runtime logs (oneDNN, CUDA probing) before TF_CPP_MIN_LOG_LEVEL is read, so
    only redirecting the descriptor keeps them off the user's terminal.
    """
    if not enabled or not _writes_to_fd2(sys.stderr):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    python_stderr = sys.stderr
    sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb", buffering=0), write_through=True)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        sys.stderr.close()
        sys.stderr = python_stderr


def native_logs_off() -> bool:
    """Whether the Python API keeps TensorFlow's native logs off the terminal: yes, unless the
    caller asked for them with TF_CPP_MIN_LOG_LEVEL=0."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "0"


def _writes_to_fd2(stream: TextIO) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def _process_age() -> float:
    """Seconds since this process started (0 where the system does not say): the interpreter's
    start and the imports before rnnexport's first line ran."""
    try:
        with open("/proc/self/stat") as stat:
            started_ticks = int(stat.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as uptime:
            up = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, up - started_ticks / os.sysconf("SC_CLK_TCK"))


@dataclass
class Phase:
    message: str
    started: float
    ended: float | None = None

    def seconds(self, now: float) -> float:
        return (self.ended if self.ended is not None else now) - self.started


class ConsoleProgress:
    """Says what a run is doing while it does it, and keeps how long each phase took.

    On a terminal (stderr a tty) a live `rich` display: one row per phase with its elapsed
    seconds, a bar counting the sweep's cases. Elsewhere (CI logs, pipes) one plain line per
    phase on stderr, `[  12.3s] exporting m.keras to onnx`, and during a sweep a line at most
    every `HEARTBEAT` seconds, so that a log is never silent for long. Disabled (`-q`, `--json`):
    nothing is shown, the phases are still timed. Use it as a context manager: leaving it stops
    the live display before the results are printed.
    """

    HEARTBEAT = 10.0

    def __init__(self, enabled: bool) -> None:
        self.mode = "off" if not enabled else "live" if sys.stderr.isatty() else "lines"
        self.started = time.monotonic()
        self.startup = _process_age()
        self.phases: list[Phase] = []
        self._live: Any = None
        self._tasks: dict[int, Any] = {}
        self._counts: dict[Any, tuple[int, int]] = {}
        self._last_line = self.started

    def __enter__(self) -> ConsoleProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, message: str, done: int, total: int) -> None:
        now = time.monotonic()
        if total == 0:
            self._end_phase(now)
            self.phases.append(Phase(message, now))
            self._show_phase(message, now)
        elif self.phases:
            self._show_cases(message, done, total, now)

    def close(self) -> None:
        self._end_phase(time.monotonic())
        if self._live is not None:
            self._live.stop()
            self._live = None

    def timings(self) -> list[tuple[str, float]]:
        """(phase, seconds) in order, the process's start and imports first."""
        now = time.monotonic()
        startup = [("starting Python and rnnexport", self.startup)] if self.startup else []
        return [*startup, *((p.message, p.seconds(now)) for p in self.phases)]

    def _end_phase(self, now: float) -> None:
        if self.phases and self.phases[-1].ended is None:
            self.phases[-1].ended = now
            task = self._tasks.get(len(self.phases) - 1)
            if task is not None:
                done, total = self._counts.get(task, (1, 1))
                self._live.update(task, description=self.phases[-1].message, completed=done, total=total)
                self._live.stop_task(task)

    def _line(self, text: str, now: float) -> None:
        sys.stderr.write(f"[{now - self.started:7.1f}s] {text}\n")
        sys.stderr.flush()
        self._last_line = now

    def _show_phase(self, message: str, now: float) -> None:
        if self.mode == "lines":
            self._line(message, now)
        elif self.mode == "live":
            if self._live is None:
                self._live = _live_display()
                self._live.start()
            self._tasks[len(self.phases) - 1] = self._live.add_task(message, total=None)

    def _show_cases(self, message: str, done: int, total: int, now: float) -> None:
        if self.mode == "lines":
            if done == total:
                self._line(f"  {total} cases checked in {self.phases[-1].seconds(now):.1f}s", now)
            elif now - self._last_line >= self.HEARTBEAT:
                self._line(f"  case {done + 1}/{total}: {message}", now)
        elif self.mode == "live":
            task = self._tasks[len(self.phases) - 1]
            label = self.phases[-1].message if done == total else f"{self.phases[-1].message}: {message}"
            self._counts[task] = (done, total)
            self._live.update(task, description=label, completed=done, total=total, cases=True)


def _live_display() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn
    from rich.text import Text

    class Seconds(ProgressColumn):
        def render(self, task: Any) -> Text:
            elapsed = task.finished_time if task.finished else task.elapsed
            return Text(f"{elapsed or 0.0:6.1f}s", style="progress.elapsed")

    class Bar(BarColumn):
        """The sweep's bar, on the phases that count cases only."""

        def render(self, task: Any) -> Any:
            return super().render(task) if task.fields.get("cases") else Text("")

    class Count(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.completed:.0f}/{task.total:.0f}" if task.fields.get("cases") else "")

    return Progress(SpinnerColumn(finished_text="[green]\u2713"), TextColumn("{task.description}"), Bar(), Count(),
                    Seconds(), console=Console(stderr=True))


def render_timings(timings: list[tuple[str, float]], exports: list[tuple[str, float]]) -> str:
    """A table of where a run's time went, phase by phase, with the total, and then how much of
    the checks each export's own runs took (the rest ran the source and compared)."""
    spent = table("phase", "seconds", "share", title="time spent", title_justify="left")
    total = sum(seconds for _, seconds in timings)
    for phase, seconds in timings:
        spent.add_row(phase, f"{seconds:.2f}", f"{seconds / total:.0%}" if total else "-")
    spent.add_row("total", f"{total:.2f}", "")
    for export, seconds in exports:
        spent.add_row(f"checks: running {export}", f"{seconds:.2f}", f"{seconds / total:.0%}" if total else "-")
    return render(spent)


def table(*columns: str, **options: Any) -> Any:
    """A rich table as the reports print them: a rule of dashes under the header (plain ASCII, so
    that a log or a terminal of any encoding shows it), two spaces between columns."""
    from rich.box import Box
    from rich.table import Table

    rule = Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)
    return Table(*columns, box=rule, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0), **options)


def render(renderable: Any) -> str:
    """`renderable` as plain text at its natural width (never wrapped to a terminal's)."""
    from rich.console import Console

    console = Console(width=10_000, color_system=None, force_terminal=False, highlight=False)
    with console.capture() as captured:
        console.print(renderable)
    return "\n".join(line.rstrip() for line in captured.get().splitlines())
