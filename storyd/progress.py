"""How the library reports progress: one small protocol for every long operation.

Drawing panels, animating, pulling and hashing weights, scoring and training all report
through it. Work is split into named tasks (one bar each in the CLI's rich view,
storyd/cli/progress_view.py); a task's first `update` starts it. The library never
imports rich, and `NullProgress` (for `--quiet`, `--json` and library users) does nothing.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def update(self, task: str, done: int, total: int | None = None, *, unit: str = "", detail: str = "") -> None:
        """`done` of `total` units of `task` are done (total None: unknown, or as before).

        `unit` is set by the first update ("bytes" reads as a size); `detail` says what is happening now.
        """

    def advance(self, task: str, by: int = 1) -> None:
        """`by` more units of `task` are done."""

    def end(self, task: str) -> None:
        """`task` is over: its bar goes."""

    def note(self, message: str) -> None:
        """One line for the reader: a resumed run, a cache used, the story at hand."""


class NullProgress:
    def update(self, task: str, done: int, total: int | None = None, *, unit: str = "", detail: str = "") -> None:
        pass

    def advance(self, task: str, by: int = 1) -> None:
        pass

    def end(self, task: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass
