"""Shared fixtures: an isolated storyd home, and small story files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

SHARED_HOME = Path(__file__).parent.parent / "build" / "test-home"


@pytest.fixture(autouse=True)
def storyd_home(monkeypatch, tmp_path_factory):
    """Every test gets its own STORYD_HOME; the built tokenizer files are shared (they never change)."""
    home = tmp_path_factory.mktemp("storyd-home")
    SHARED_HOME.mkdir(parents=True, exist_ok=True)
    (home / "tokenizers").symlink_to((SHARED_HOME / "tokenizers").resolve(), target_is_directory=True)
    (SHARED_HOME / "tokenizers").mkdir(exist_ok=True)
    monkeypatch.setenv("STORYD_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
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
def tokenizer(tmp_path_factory):
    from storyd.render.tokenizer import load_clip_tokenizer

    SHARED_HOME.mkdir(parents=True, exist_ok=True)
    return load_clip_tokenizer(SHARED_HOME)


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
