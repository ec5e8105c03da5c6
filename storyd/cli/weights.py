"""`storyd weights`: list, pull, verify and register the locked model weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from storyd import weights
from storyd.cli.common import Output
from storyd.cli.options import JsonOpt, QuietOpt, WeightsDirOpt

weights_app = typer.Typer(help="The model weights storyd uses: pinned in weights.lock, checked by sha256.",
                          no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="Model name in weights.lock (see `storyd weights list`).")]
UnpinnedOpt = Annotated[bool, typer.Option(
    "--allow-unpinned", help="Accept a model whose commit or sha256 the lock does not know (not checked).")]


def _row(entry: weights.LockEntry, result: weights.VerifyResult) -> dict:
    return {"name": entry.name, "kind": entry.kind, "family": entry.family,
            "repo": entry.repo or entry.local or entry.url, "revision": entry.revision, "size": entry.size,
            # the hub commit, short; "?" where the lock does not know it yet, "-" for a local folder or a URL
            "commit": entry.revision[:12] if entry.revision else ("?" if entry.repo else "-"),
            "license": entry.license, "pinned": entry.pinned,
            "status": result.status, "path": result.path, "message": result.message, "hint": result.hint,
            "note": entry.note}


def _table(rows: list[dict], columns: list[str]):
    def render(console) -> None:
        table = Table(box=None, header_style="bold")
        for column in columns:
            table.add_column(column, no_wrap=column in ("name", "status"))
        for row in rows:
            size = weights.human_size(row["size"]) if row["size"] else "?"
            cells = {**row, "size": size, "pinned": "yes" if row["pinned"] else "unpinned"}
            table.add_row(*(escape(str(cells[c])) if cells[c] is not None else "" for c in columns))
        console.print(table)
    return render


@weights_app.command("list")
def list_(json_: JsonOpt = False, weights_dir: WeightsDirOpt = None) -> None:
    """List the models in weights.lock and whether each is on this machine (no hashing)."""
    lock = weights.load_lock()
    rows = [_row(e, weights.verify_entry(e, weights_dir, check=False)) for e in lock.entries.values()]
    columns = ["name", "kind", "family", "commit", "size", "license", "pinned", "status"]
    Output(json_mode=json_).result(rows, _table(rows, columns))


@weights_app.command()
def pull(name: NameArg, weights_dir: WeightsDirOpt = None, allow_unpinned: UnpinnedOpt = False,
         json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Download a model at its locked commit (or its pinned archive) and check every file's sha256."""
    out = Output(json_mode=json_, quiet=quiet)
    entry = weights.load_lock().get(name)
    if not entry.pinned and allow_unpinned:
        out.warn(f"'{name}' is unpinned: its files are downloaded without a sha256 check")
    with out.progress() as progress:
        path = weights.pull(entry, weights_dir, progress, allow_unpinned=allow_unpinned)
    out.result({"name": name, "path": path}, lambda console: console.print(escape(f"{name}: {path}")))


@weights_app.command("verify")
def verify_(names: Annotated[list[str] | None, typer.Argument(help="Models to check [default: all].")] = None,
            weights_dir: WeightsDirOpt = None, full: Annotated[bool, typer.Option(
                "--full", help="Re-hash every file; do not trust the sha256 cache.")] = False,
            json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Check models on this machine against their sizes and sha256; exit 1 if any file is corrupt."""
    out = Output(json_mode=json_, quiet=quiet)
    lock = weights.load_lock()
    entries = [lock.get(n) for n in names] if names else list(lock.entries.values())
    with out.progress() as progress:
        results = weights.verify(entries, weights_dir, progress, full=full)
    rows = [_row(e, r) for e, r in zip(entries, results, strict=True)]
    out.result(rows, _table(rows, ["name", "status", "path", "message", "hint"]))
    if any(r.status == "corrupt" for r in results):
        raise typer.Exit(1)


@weights_app.command()
def add(name: NameArg, path: Annotated[Path, typer.Argument(help="The file (or folder) you already have.")],
        allow_unpinned: UnpinnedOpt = False, weights_dir: WeightsDirOpt = None, json_: JsonOpt = False,
        quiet: QuietOpt = False) -> None:
    """Use weights you already have: checks the sha256, registers the path, copies nothing.

    A model the lock names by url (an archive) is checked, then unpacked and converted
    into the weights dir, as `pull` does.
    """
    out = Output(json_mode=json_, quiet=quiet)
    entry = weights.load_lock().get(name)
    with out.progress() as progress:
        registered = weights.add(entry, path, allow_unpinned=allow_unpinned, progress=progress,
                                 weights_dir=weights_dir)
    out.result({"name": name, "path": registered}, lambda console: console.print(escape(f"{name}: {registered}")))


@weights_app.command("lock-fill")
def lock_fill(name: NameArg, revision: Annotated[str | None, typer.Option(
                  help="Branch, tag or commit to pin [default: the locked commit, else main].")] = None,
              json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Maintainer: pin a model's commit, sizes and sha256 in weights.lock (needs network, or hashes a local model)."""
    out = Output(json_mode=json_, quiet=quiet)
    with out.progress() as progress:
        entry = weights.fill_lock(name, revision=revision, progress=progress)
    summary = f"{name}: pinned {len(entry.files)} files at {entry.revision or entry.local or entry.url}"
    out.result(entry.to_json() | {"name": name}, lambda console: console.print(escape(summary)))
