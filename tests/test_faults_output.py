"""Faults in the output folder: kills at each write, a full disk, a second run, damaged panels, foreign files."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import invoke, one_line_error

from storyd.fsutil import file_sha256

STORY = """
title: Faults
model: tiny
seed: 3
characters:
  Mia: a kid with red hair
panels:
  - prompt: Mia standing on the beach
    caption: One.
  - Mia waving on the beach
  - Mia running in a forest
  - "[NC] a kid sitting in a room"
layout:
  dpi: 40
"""


def comic(story: Path, out: Path, *extra: str):
    return invoke(["comic", str(story), "-o", str(out), "--json", *extra])



def panel_hashes(out: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted((out / "panels").glob("*.png"))}


def temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob("*.tmp")]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """One uninterrupted run: the story and its output folder."""
    root = tmp_path_factory.mktemp("clean")
    story = root / "faults.yaml"
    story.write_text(STORY.lstrip(), encoding="utf-8")
    result = comic(story, root / "out")
    assert result.exit_code == 0, result.output
    return story, root / "out"


@pytest.fixture
def story(tmp_path, clean):
    path = tmp_path / "faults.yaml"
    shutil.copy(clean[0], path)
    return path


@pytest.fixture
def copied(tmp_path, clean, story):
    """A copy of the clean run's folder, for the same story (moved)."""
    out = tmp_path / "out"
    shutil.copytree(clean[1], out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["story"]["path"] = str(story.resolve())
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def fail_nth_replace(monkeypatch, out: Path, n: int, exc: BaseException) -> list[str]:
    """Make the n-th atomic rename into `out` raise `exc` (the write's last step); returns the names renamed."""
    real = os.replace
    seen: list[str] = []

    def replace(src, dst):
        if str(dst).startswith(str(out)):
            seen.append(Path(dst).name)
            if len(seen) == n:
                raise exc
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return seen


# The writes of a run, in order: the manifest that marks the folder (1); per batch, for each panel the manifest
# naming it (2) then the panel (3), then the manifest recording them (6); ... the page (14), the PDF (15), and
# the manifest recording them (16).
@pytest.mark.parametrize(("step", "file"), [(1, "manifest.json"), (3, "001.png"), (6, "manifest.json"),
                                            (14, "page-001.png"), (15, "comic.pdf"), (16, "manifest.json")])
def test_an_interrupt_at_any_write_resumes_to_the_same_comic(clean, story, tmp_path, monkeypatch, step, file):
    out = tmp_path / "out"
    seen = fail_nth_replace(monkeypatch, out, step, KeyboardInterrupt())
    assert comic(story, out).exit_code == 130
    assert len(seen) == step and seen[-1] == file
    monkeypatch.undo()
    resumed = comic(story, out)
    assert resumed.exit_code == 0, resumed.output
    assert panel_hashes(out) == panel_hashes(clean[1])
    assert not temporaries(out) and not (out / "panels" / "history").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert "writing" not in manifest and [p["sha256"] for p in manifest["panels"]] == list(panel_hashes(out).values())


def test_a_kill_during_the_first_panel_write_leaves_a_folder_that_resumes(clean, story, tmp_path):
    out = tmp_path / "out"
    script = (
        "import os, signal, sys\n"
        "real = os.replace\n"
        "def replace(src, dst):\n"
        "    if str(dst).endswith('001.png'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(src, dst)\n"
        "os.replace = replace\n"
        "from storyd.cli.app import app\n"
        f"app(['comic', {str(story)!r}, '-o', {str(out)!r}, '-q'])\n"
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert [p.name for p in temporaries(out)] and (out / "manifest.json").is_file()
    resumed = comic(story, out)
    assert resumed.exit_code == 0, resumed.output
    assert panel_hashes(out) == panel_hashes(clean[1]) and not temporaries(out)


def test_a_killed_runs_bank_spill_folder_goes_at_the_next_run_and_a_live_ones_stays(copied, story):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = copied / f".storyd-bank-{int(gone.stdout)}-x1"  # the id of a process that has ended
    with subprocess.Popen([sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(600)"],
                          stdout=subprocess.PIPE, text=True) as running:
        live = copied / f".storyd-bank-{int(running.stdout.readline())}-x2"  # a shard still drawing into this folder
        try:
            for folder in (dead, live):
                folder.mkdir()
                (folder / "0-3.safetensors").write_bytes(b"step")
            result = comic(story, copied)
            assert result.exit_code == 0, result.output
            assert not dead.exists() and (live / "0-3.safetensors").is_file()
        finally:
            running.kill()


def test_a_full_disk_is_one_line_and_what_was_kept_resumes(clean, story, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith("003.png"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    one_line_error(comic(story, out), "no space left on the disk to write", "003.png")
    manifest = json.loads((out / "manifest.json").read_text())  # still whole JSON
    assert [p["index"] for p in manifest["panels"]] == [0, 1] and not temporaries(out)
    monkeypatch.undo()
    resumed = comic(story, out)
    assert json.loads(resumed.stdout)["rendered"] == [2, 3]
    assert panel_hashes(out) == panel_hashes(clean[1])


def test_a_second_run_on_the_same_folder_stops_at_once(copied, story, monkeypatch):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"fd = os.open({str(copied / '.manifest.json.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "os.ftruncate(fd, 0)\n"  # as storyd does: the copied folder's lock file names the run that drew it
         "os.write(fd, str(os.getpid()).encode())\n"
         "print(os.getpid(), flush=True)\n"
         "time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        pid = int(holder.stdout.readline())  # printed once it holds the lock
        monkeypatch.setattr("storyd.comic.load_pipeline", None)  # never reached
        one_line_error(comic(story, copied, "--force"), f"another storyd run (process {pid}) is writing")
    finally:
        holder.kill()
        holder.wait()
    assert comic(story, copied).exit_code == 0  # the lock went with its process


def test_a_damaged_panel_is_kept_in_history_and_drawn_again(clean, copied, story):
    (copied / "panels" / "002.png").write_bytes((copied / "panels" / "002.png").read_bytes()[:50])
    result = comic(story, copied)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rendered"] == [1]
    assert panel_hashes(copied) == panel_hashes(clean[1])
    kept = list((copied / "panels" / "history").glob("002-changed-*.png"))
    assert len(kept) == 1 and len(kept[0].read_bytes()) == 50


def test_a_caption_edit_redraws_nothing_and_updates_the_manifest(copied, story):
    story.write_text(STORY.replace("caption: One.", "caption: Uno.").lstrip(), encoding="utf-8")
    result = comic(story, copied)
    assert json.loads(result.stdout)["rendered"] == []
    assert json.loads((copied / "manifest.json").read_text())["panels"][0]["caption"] == "Uno."


def test_thread_count_is_part_of_the_input_hash(story):
    from storyd.comic import _cpu_threads
    from storyd.output import input_hashes
    from storyd.plan.render_plan import plan_story
    from storyd.story.loader import load_story

    plan = plan_story(load_story(story))
    assert input_hashes(plan, "r", threads=1) != input_hashes(plan, "r", threads=2)
    assert _cpu_threads("cuda") is None and _cpu_threads("cpu") >= 1


def test_out_naming_a_file_is_one_line(story, tmp_path):
    (tmp_path / "file.txt").write_text("mine")
    one_line_error(comic(story, tmp_path / "file.txt"), "is a file, not a folder")
    assert (tmp_path / "file.txt").read_text() == "mine"


@pytest.mark.parametrize("content", ["[1, 2]", '{"panels": {"a": 1}}', '{"panels": [{"index": "x"}]}'])
def test_a_manifest_that_is_not_a_mapping_is_one_line(story, tmp_path, content):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text(content)
    one_line_error(comic(story, tmp_path / "out"), "manifest.json: this is not a storyd manifest")


def test_an_unwritable_folder_fails_before_the_model_loads(story, monkeypatch):
    monkeypatch.setattr("storyd.comic.load_pipeline", None)  # never reached
    one_line_error(comic(story, Path("/sys/storyd-faults-test")), "/sys/storyd-faults-test")


def test_a_symlinked_pages_folder_is_refused_and_the_outside_is_untouched(copied, story, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "page-007.png").write_bytes(b"not storyd's")
    shutil.rmtree(copied / "pages")
    (copied / "pages").symlink_to(outside, target_is_directory=True)
    one_line_error(comic(story, copied, "--force"), "pages is a symbolic link")
    assert [p.name for p in outside.iterdir()] == ["page-007.png"]
    assert (outside / "page-007.png").read_bytes() == b"not storyd's"


def test_force_never_overwrites_a_users_panel(story, tmp_path, monkeypatch):
    out = tmp_path / "mine"
    (out / "panels").mkdir(parents=True)
    (out / "panels" / "001.png").write_bytes(b"my drawing")
    monkeypatch.setattr("storyd.comic.load_pipeline", None)  # stops before drawing
    one_line_error(comic(story, out, "--force"), "001.png was not written by storyd")
    assert (out / "panels" / "001.png").read_bytes() == b"my drawing"


def test_force_never_deletes_a_users_page(copied, story, monkeypatch):
    (copied / "pages" / "page-007.png").write_bytes(b"my page")
    monkeypatch.setattr("storyd.comic.load_pipeline", None)  # stops before drawing
    one_line_error(comic(story, copied, "--force"), "page-007.png was not written by storyd")
    assert (copied / "pages" / "page-007.png").read_bytes() == b"my page"


def test_force_redraws_storyd_panels_without_asking(clean, copied, story):
    result = comic(story, copied, "--force")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rendered"] == [0, 1, 2, 3]
    assert panel_hashes(copied) == panel_hashes(clean[1])


def test_pages_laid_out_again_are_the_next_runs_own(copied, story):
    one_page = json.loads((copied / "manifest.json").read_text())["pages"]
    one_a_page = story.with_name("one-a-page.yaml")
    one_a_page.write_text(STORY.replace("dpi: 40", "dpi: 40\n  rows: 1\n  columns: 1").lstrip(), encoding="utf-8")
    result = invoke(["layout", str(one_a_page), "--panels", str(copied / "panels"), "-o", str(copied), "--force", "-q"])
    assert result.exit_code == 0, result.output
    pages = json.loads((copied / "manifest.json").read_text())["pages"]
    assert len(pages) > len(one_page) and all((copied / p).exists() for p in pages)
    result = comic(story, copied)  # knows the extra pages as its own, and lays out its template again
    assert result.exit_code == 0, result.output
    assert json.loads((copied / "manifest.json").read_text())["pages"] == one_page
    assert sorted(p.relative_to(copied).as_posix() for p in (copied / "pages").iterdir()) == sorted(
        p for p in one_page if p.startswith("pages/"))


def test_layout_never_deletes_a_users_page_in_a_comic_folder(copied, story):
    (copied / "pages" / "page-007.png").write_bytes(b"my page")
    result = invoke(["layout", str(story), "--panels", str(copied / "panels"), "-o", str(copied), "--force"])
    one_line_error(result, "page-007.png was not written by storyd")
    assert (copied / "pages" / "page-007.png").read_bytes() == b"my page"
