"""The CLI shell: one error table, interrupts and SIGTERM, light start-up, and no import cycle in storyd."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import invoke

from storyd.cli.errors import INTERRUPTED, Terminated
from storyd.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
# PIL is not here: validate lays the pages out with the real fonts to catch a layout with no room before drawing
HEAVY = ("torch", "diffusers", "transformers", "safetensors", "numpy", "cv2", "huggingface_hub")


def _fail_with(monkeypatch, exc: BaseException) -> None:
    def load_story(path):
        raise exc

    monkeypatch.setattr("storyd.story.loader.load_story", load_story)


@pytest.mark.parametrize(("exc", "code", "line"), [
    (InputError("unknown key 'sed'", "did you mean 'seed'?", path="s.yaml", line=3), 2,
     "Error: s.yaml:3: unknown key 'sed'; did you mean 'seed'?"),
    (KeyboardInterrupt(), 130, INTERRUPTED),
    (Terminated(), 143, INTERRUPTED),
])
def test_the_error_table_ends_a_command_with_one_line(monkeypatch, write_story, exc, code, line):
    _fail_with(monkeypatch, exc)
    result = invoke(["validate", str(write_story("title: t\n"))])
    assert (result.exit_code, result.stderr.strip()) == (code, line)


def test_unknown_errors_stay_loud_and_storyd_debug_reraises_known_ones(monkeypatch, write_story):
    story = str(write_story("title: t\n"))
    _fail_with(monkeypatch, RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        invoke(["validate", story])
    _fail_with(monkeypatch, InputError("bad"))
    monkeypatch.setenv("STORYD_DEBUG", "1")
    with pytest.raises(InputError, match="bad"):
        invoke(["validate", story])


def test_usage_errors_keep_typers_exit_2():
    result = invoke(["validate", "--no-such-option"])
    assert result.exit_code == 2 and "No such option" in result.output


def _modules_after(code: str) -> set[str]:
    run = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    return set(run.stdout.split())


def test_help_and_validate_import_nothing_heavy():
    help_run = "from storyd.cli.app import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass"
    validate = ("from storyd.cli.app import app\ntry:\n    app(['validate', 'stories/beach-day.yaml', '--json'])\n"
                "except SystemExit as exit:\n    assert exit.code == 0, exit.code")
    for code in (help_run, validate):
        assert sorted(_modules_after(code) & set(HEAVY)) == []


def test_the_plan_and_story_stages_import_nothing_heavy():
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for stage in ("plan", "story")
                     for p in (ROOT / "storyd" / stage).glob("*.py") if p.stem != "__init__")
    assert "storyd.plan.render_plan" in modules
    assert sorted(_modules_after("\n".join(f"import {m}" for m in modules)) & set(HEAVY)) == []


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from /proc")
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_start_up_ends_with_the_interrupt_line(tmp_path, sig, code):
    """The signal is sent as soon as main() has its handlers, while the commands are still being imported."""
    child = subprocess.Popen([sys.executable, "-m", "storyd", "comic", "stories/beach-day.yaml", "-o", str(tmp_path)],
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _catches_sigterm(child.pid) and time.monotonic() < deadline:
        time.sleep(0.002)
    child.send_signal(sig)
    _, err = child.communicate(timeout=120)
    assert child.returncode == code
    assert err.strip() == INTERRUPTED and "Traceback" not in err


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler: main() installs one first thing."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every storyd module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        else:
            continue
        found.update(n for n in names if n in modules)
    return found


def test_no_import_cycle_between_storyd_modules():
    files = {}
    for path in (ROOT / "storyd").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: _imports(path, set(files)) - {name} for name, path in files.items()}
    assert graph["storyd.cli.app"] >= {"storyd.cli.comic", "storyd.cli.weights"}  # the walk sees imports
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            pytest.fail("import cycle: " + " -> ".join(trail[trail.index(name):] + [name]))
        if name in done:
            return
        for other in sorted(graph[name]):
            visit(other, trail + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_the_rich_view_keeps_one_bar_per_task_and_prints_notes():
    import io

    from rich.console import Console

    from storyd.cli.progress_view import AmountColumn, RichProgress

    out = io.StringIO()
    with RichProgress(Console(file=out, force_terminal=True, width=100, highlight=False)) as view:
        view.update("download a.bin", 1000, 2000, unit="bytes")
        view.update("panels", 0, 6, unit="panels")
        view.advance("panels", 2)
        view.update("download a.bin", 2000)
        view.end("panels")
        view.note("resuming from step 3")
        [task] = view.view.tasks
        assert (task.completed, task.total) == (2000, 2000)
        assert AmountColumn().render(task).plain == "2.0 kB/2.0 kB"
    assert "resuming from step 3" in out.getvalue() and list(view.tasks) == ["download a.bin"]


@pytest.mark.parametrize(("sig", "kind"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)])
def test_an_interrupt_a_library_swallows_is_raised_again_at_the_next_progress(sig, kind):
    from rich.console import Console

    from storyd.cli.errors import install_signals, raise_pending
    from storyd.cli.progress_view import NotesOnly, RichProgress

    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), sys.unraisablehook
    try:
        install_signals()
        raise_pending()  # nothing came: nothing raised
        try:
            signal.raise_signal(sig)
        except KeyboardInterrupt:
            pass  # what a bare `except:` in a library's import does
        for view in (NotesOnly(Console(), quiet=True), RichProgress(Console())):
            with pytest.raises(kind):
                view.update("drawing", 1, 6)
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
        sys.unraisablehook = saved[2]


def test_an_interrupt_python_can_only_report_is_not_printed_but_raised_again():
    """A signal can land in a ``__del__`` or a weakref callback (importlib's module locks have one); Python
    then only reports the exception. storyd keeps that report off stderr and raises the interrupt later."""
    code = """
import signal
from storyd.cli.errors import install_signals, raise_pending
install_signals()
class Dropped:
    def __del__(self):
        signal.raise_signal(signal.SIGTERM)
class Broken:
    def __del__(self):
        raise ValueError("still reported")
Dropped()
Broken()
try:
    raise_pending()
except KeyboardInterrupt as exc:
    print(type(exc).__name__)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.stdout.strip() == "Terminated", run.stderr
    assert "Terminated" not in run.stderr and "ValueError: still reported" in run.stderr
