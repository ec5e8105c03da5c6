"""The one error table: how each exception ends the command, with which exit code and line.

StorydError prints its one line (file:line, what is wrong, what to do) and exits with its
code; Ctrl-C and SIGTERM say that finished work is kept. Anything else is a bug and keeps
its traceback; STORYD_DEBUG=1 re-raises everything. Only the standard library and
storyd.errors are imported here, so `main` can catch an interrupt during start-up.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from storyd.errors import StorydError

INTERRUPTED = "Interrupted; finished work is kept. Run the same command again to resume."


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an interrupt so that a killed job ends like a Ctrl-C."""


# exception type -> (exit code, the line on stderr); the first row that matches wins.
ERRORS: tuple[tuple[type[BaseException], Callable[[BaseException], int], Callable[[BaseException], str]], ...] = (
    (Terminated, lambda exc: 143, lambda exc: INTERRUPTED),
    (KeyboardInterrupt, lambda exc: 130, lambda exc: INTERRUPTED),
    (StorydError, lambda exc: exc.exit_code, lambda exc: f"[red]Error:[/red] {_escape(exc.format())}"),
)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def handled(exc: BaseException) -> int | None:
    """Print ``exc`` as the table says and return its exit code; None for what must stay loud."""
    if os.environ.get("STORYD_DEBUG"):
        return None
    for kind, code, line in ERRORS:
        if isinstance(exc, kind):
            from rich.console import Console

            Console(stderr=True, highlight=False, soft_wrap=True).print(line(exc))
            return code(exc)
    return None


class _Interrupts:
    """The handler of SIGINT and SIGTERM: raises the interrupt and remembers it, so that one a library
    swallows (a bare `except:` around an import, say) is raised again by `raise_pending` instead of
    being lost while the command runs on."""

    def __init__(self) -> None:
        self.pending: type[KeyboardInterrupt] | None = None

    def __call__(self, signum, frame) -> None:
        import signal

        self.pending = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        raise self.pending


def install_signals() -> None:
    """The interrupt handlers, and quiet for what they raise where Python can only report it (a
    signal that lands in a weakref callback or a ``__del__`` during an import): ``raise_pending``
    raises it again, so the command still ends with the interrupt line and nothing more."""
    import signal
    import sys

    handler = _Interrupts()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    report = sys.unraisablehook

    def unraisable(info) -> None:
        if not (isinstance(info.exc_value, KeyboardInterrupt) and handler.pending is not None):
            report(info)

    sys.unraisablehook = unraisable


def raise_pending() -> None:
    """Raise the interrupt a signal brought, if something swallowed it (only under `main`'s handlers)."""
    import signal

    handler = signal.getsignal(signal.SIGINT)
    if isinstance(handler, _Interrupts) and handler.pending is not None:
        raise handler.pending

