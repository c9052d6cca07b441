"""The sync's progress on an interactive terminal: a rich bar per kind of item."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn


class TerminalProgress:
    """Counts per kind, drawn live on stderr while the sync runs (a context manager around the run)."""

    def __init__(self, console: Console | None = None) -> None:
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TextColumn("{task.completed:>8.0f}"),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
        )
        self._tasks: dict[str, TaskID] = {}

    def advance(self, kind: str, count: int) -> None:
        """``count`` more items of ``kind`` written."""
        if kind not in self._tasks:
            self._tasks[kind] = self._bar.add_task(kind.replace("_", " "), total=None)
        self._bar.advance(self._tasks[kind], count)

    def __enter__(self) -> TerminalProgress:
        self._bar.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._bar.stop()
