"""Shared fixtures: an isolated storyd home, one torch thread, the CLI, tiny pipelines, small story files.

Nothing here writes into the repository: the session's shared caches live in pytest's temp dir, and
the session fails if a test left a file in the checkout (see pytest_sessionfinish).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import settings
from support import REPO

# Caches that tools keep in the checkout by design; everything else a test writes there is a defect.
_TOOL_CACHES = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"}
_REPO_FILES = pytest.StashKey[dict]()
_HYPOTHESIS_HOME = pytest.StashKey[str]()

# Hypothesis keeps its files in .hypothesis/ under the working directory: no example database (a failing
# example is printed in the report), and its caches go to the session's temp dir (session_environment).
settings.register_profile("storyd", database=None)
settings.load_profile("storyd")


def _repo_files() -> dict[str, tuple[int, int]]:
    """Size and modification time of every file in the checkout but the tools' caches."""
    files = {}
    for folder, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _TOOL_CACHES]
        for name in names:
            path = Path(folder, name)
            stat = path.lstat()
            files[str(path.relative_to(REPO))] = (stat.st_size, stat.st_mtime_ns)
    return files


def pytest_configure(config):
    """Hypothesis's caches go to a temp dir from the start: it writes some (the constants it finds
    in the tested code) while test modules are collected, before any fixture runs. The libraries'
    advisory logs are quieted as the CLI quiets them, so a command's stderr in a test is what a
    user sees, whichever test ran first."""
    import tempfile

    from hypothesis.configuration import set_hypothesis_home_dir

    from storyd.cli import quiet_libraries

    quiet_libraries()

    config.stash[_HYPOTHESIS_HOME] = tempfile.mkdtemp(prefix="storyd-hypothesis-")
    set_hypothesis_home_dir(config.stash[_HYPOTHESIS_HOME])


def pytest_unconfigure(config):
    import shutil

    shutil.rmtree(config.stash.get(_HYPOTHESIS_HOME, ""), ignore_errors=True)


def pytest_sessionstart(session):
    session.config.stash[_REPO_FILES] = _repo_files()


def pytest_sessionfinish(session, exitstatus):
    before = session.config.stash.get(_REPO_FILES, None)
    if before is None:
        return
    after = _repo_files()
    written = sorted(p for p in after if before.get(p) != after[p])
    if written:
        shown = "\n  ".join(written[:20])
        session.config.get_terminal_writer().line(f"\nERROR: the tests wrote into the repository:\n  {shown}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory) -> Path:
    """A storyd home for the session's caches that never change (the CLIP tokenizer files)."""
    home = tmp_path_factory.mktemp("shared-home")
    (home / "tokenizers").mkdir()
    return home


@pytest.fixture(scope="session", autouse=True)
def session_environment(shared_home, tmp_path_factory):
    """For the whole session: one torch thread, here and in the processes tests start, so panels are
    the same bytes in both (tiny models also run fastest on one thread); the shared home for
    module-scoped fixtures, which run before any test's own home is set; no hub access."""
    import torch

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.setenv("STORYD_HOME", str(shared_home))
        patch.setenv("HF_HUB_OFFLINE", "1")
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def storyd_home(monkeypatch, tmp_path_factory, shared_home):
    """Every test gets its own STORYD_HOME; the built tokenizer files are shared (they never change)."""
    home = tmp_path_factory.mktemp("storyd-home")
    (home / "tokenizers").symlink_to(shared_home / "tokenizers", target_is_directory=True)
    monkeypatch.setenv("STORYD_HOME", str(home))
    return home


@pytest.fixture
def isolated_weights(tmp_path, monkeypatch):
    """No weights store, lock override or hub cache from the machine: each test's own, empty."""
    monkeypatch.setenv("STORYD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("STORYD_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("STORYD_WEIGHTS_LOCK", raising=False)


@pytest.fixture
def write_story(tmp_path):
    """Write a story file from dedented text; returns its path."""

    def write(text: str, name: str = "story.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def tokenizer(shared_home):
    from storyd.render.tokenizer import load_clip_tokenizer

    return load_clip_tokenizer(shared_home)


@pytest.fixture(scope="session")
def cli():
    """`cli(*args, env=None)` runs `storyd ARGS...` in-process and returns the result. An exception
    that the CLI does not turn into an exit code fails the test instead of hiding in the result."""
    from typer.testing import CliRunner

    from storyd.cli.app import app

    runner = CliRunner()

    def invoke(*args, env: dict | None = None):
        return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def tiny_pipeline():
    """`tiny_pipeline(name)`: the tiny preset's CPU pipeline, built once per session and shared, so a
    test that changes one (its scheduler, adapters, processors) must put it back."""
    from storyd.plan.presets import PRESETS
    from storyd.render.pipelines import load_pipeline

    built = {}

    def get(name: str = "tiny"):
        if name not in built:
            built[name] = load_pipeline(PRESETS[name], device="cpu")
        return built[name]

    return get


class Recorder:
    """A storyd.progress.Progress that keeps what it is told: (task, done, total, unit, detail) and notes."""

    def __init__(self) -> None:
        self.updates: list[tuple] = []
        self.notes: list[str] = []
        self.ended: list[str] = []

    def update(self, task, done, total=None, *, unit="", detail=""):
        self.updates.append((task, done, total, unit, detail))

    def advance(self, task, by=1):
        self.updates.append((task, f"+{by}", None, "", ""))

    def end(self, task):
        self.ended.append(task)

    def note(self, message):
        self.notes.append(message)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
