"""How the library reports progress: a small protocol the CLI implements with rich.

The library never imports rich; it calls these methods, and `NullProgress` (for
`--quiet`, `--json` and library users) does nothing.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, panels: int) -> None: ...
    def batch(self, description: str, images: int, steps: int) -> None: ...
    def step(self) -> None: ...
    def panels_done(self, count: int) -> None: ...
    def finish(self) -> None: ...


class NullProgress:
    def start(self, panels: int) -> None:
        pass

    def batch(self, description: str, images: int, steps: int) -> None:
        pass

    def step(self) -> None:
        pass

    def panels_done(self, count: int) -> None:
        pass

    def finish(self) -> None:
        pass
