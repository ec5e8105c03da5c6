"""storyd's command line: a thin Typer shell over the storyd library."""

from storyd.cli.app import app, main

__all__ = ["app", "main"]
