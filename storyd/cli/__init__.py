"""storyd's command line: a thin Typer shell over the storyd library.

`main` puts the error table's catch in place before it imports anything else, so a
Ctrl-C during start-up ends with the same one line as a Ctrl-C during the work.
"""

from __future__ import annotations

import os
import sys

from storyd.cli.errors import handled, install_signals, raise_pending


def main() -> None:
    try:
        install_signals()
        quiet_libraries()
        from storyd.cli.app import app

        raise_pending()
        app()
    except (KeyboardInterrupt, Exception) as exc:
        code = handled(exc)
        if code is None:
            raise
        sys.exit(code)


def quiet_libraries() -> None:
    """The CLI owns the process: keep diffusers' and transformers' advisory logs off the user's terminal.

    Both libraries set their log level from these variables when they first log, so this
    must happen before either is imported; a user's own setting wins.
    """
    for name in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
        os.environ.setdefault(name, "error")

