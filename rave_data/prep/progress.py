"""How ``prep`` reports progress: the callbacks the driver makes, and a rich
progress bar (files done, audio hours done, ETA) drawing them.

The ETA follows the sources' estimated work (input bytes weighted by format,
see :func:`rave_data.prep.pool.work_estimate`) rather than file count (one
long file among many short ones would make a count-based ETA useless);
durations are only known once a file is decoded, so hours are shown as they
accumulate.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rave_data.prep.job import SourceResult


class Progress:
    """Progress callbacks of :func:`rave_data.prep.prep`; this base class does nothing."""

    def start(self, files: int, work: int) -> None:
        """``files`` sources to process, ``work`` their total estimated work
        (:func:`rave_data.prep.pool.work_estimate`)."""

    def advance(self, result: SourceResult, work: int) -> None:
        """One source done (in any order), ``work`` of the total."""

    def stop(self) -> None:
        """The run is over (also after an error)."""


class RichProgress(Progress):
    """Draws on stderr; used by the CLI when stderr is a terminal."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._task: Any = None
        self._files = 0
        self._done = 0
        self._hours = 0.0

    def start(self, files: int, work: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress as Bar, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._files = files
        self._progress = Bar(
            TextColumn("[bold]prep"),
            BarColumn(),
            TextColumn("{task.fields[files]}"),
            TextColumn("{task.fields[hours]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("prep", total=max(work, 1), files=self._fmt_files(), hours="0.00 h")

    def _fmt_files(self) -> str:
        return f"{self._done}/{self._files} files"

    def advance(self, result: SourceResult, work: int) -> None:
        if self._progress is None:
            return
        self._done += 1
        self._hours += result.seconds_in / 3600
        self._progress.update(self._task, advance=work, files=self._fmt_files(), hours=f"{self._hours:.2f} h audio")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
