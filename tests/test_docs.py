"""The documentation stays true: the API example runs, the command reference is current, links resolve."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```$", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def code_blocks(path: Path, info: str) -> list[tuple[int, str]]:
    """(line number, code) of each fenced block whose info string is exactly `info`."""
    text = path.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start()) + 2, m["body"]) for m in FENCE.finditer(text) if m["info"].strip() == info
    ]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings (fenced code left out)."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_api_example_runs(tmp_path, monkeypatch, capsys):
    """docs/api.md's python blocks run as written, from a copy of the repository's stories."""
    blocks = code_blocks(ROOT / "docs" / "api.md", "python")
    assert blocks, "docs/api.md has no ```python block to run"
    shutil.copytree(ROOT / "stories", tmp_path / "stories", ignore=shutil.ignore_patterns("eval"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for line, code in blocks:
        exec(compile(code, f"docs/api.md:{line}", "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out
    assert "1 reference" in printed  # the plan: panel 1 is Mia's reference panel
    assert "no-such-story.yaml" in printed and "exit code 2" in printed
    assert len(list(tmp_path.glob("*/beach-day/panels/*.png"))) == 6
    assert list(tmp_path.glob("*/beach-day/manga/comic.pdf"))
    assert list(tmp_path.glob("*/beach-day/videos/story.mp4"))


def test_command_reference_is_current():
    from storyd.cli.reference import render

    current = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    assert current == render(), "docs/commands.md is stale: run `make docs` and commit it"


def test_command_reference_covers_every_command():
    from storyd.cli.reference import help_texts

    paths = [path for path, _ in help_texts()]
    assert {"storyd", "storyd comic", "storyd layout", "storyd weights pull"} <= set(paths)
    assert len(paths) == len(set(paths))
    for path, text in help_texts():
        assert text.startswith(f"Usage: {path} ")
        assert "\x1b[" not in text and "─" not in text  # no colours, no Rich boxes


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    """Every relative link and image in README.md and docs/ names an existing file, and an existing heading."""
    broken = []
    for m in LINK.finditer(FENCE.sub("", doc.read_text(encoding="utf-8"))):
        target = m["target"]
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no such heading in {path.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250
    assert lines[2:6] == [
        "```sh",
        "make demo   # set up, draw a comic from stories/beach-day.yaml on the embedded model, then animate it",
        "make test   # set up, then run the test suite",
        "```",
    ]
    assert "docs/demo-page.png" in "\n".join(lines[:30])


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_test_count(doc):
    """A count of tests goes stale with the next test; the docs name none."""
    assert not re.search(r"\b\d[\d,]* tests\b", doc.read_text(encoding="utf-8"))
