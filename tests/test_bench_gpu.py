"""`python -m bench gpu` at its smallest size on the CPU: every row it promises, with numbers, and its file."""

from __future__ import annotations

import pytest

from bench import bench_gpu


def _number(text: str) -> float:
    return float(text) if text else 0.0


@pytest.mark.slow
def test_gpu_bench_runs_on_the_cpu_and_writes_its_table(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(bench_gpu.OFFICIAL_ENV, raising=False)
    monkeypatch.delenv("STORYD_BENCH_OUT", raising=False)
    out = tmp_path / "gpu.md"
    rows = bench_gpu.run(bench_gpu.SMALLEST, out)

    assert "planned about" in capsys.readouterr().out  # the estimate comes before any work
    for model in ("sdxl 64px", "sd15 64px"):
        csa = [r for r in rows if r["part"] == "csa" and r["model"] == model]
        cases = [r["case"] for r in csa]
        assert cases[:3] == ["stock attention, 4 panel(s)", "CSA write, 4 references", "stock attention, 1 panel(s)"]
        assert cases[3:11] == [f"CSA read, panel {k} of 8" for k in range(1, 9)]
        measured = csa[:11]
        assert all(_number(r["s/step"]) > 0 and _number(r["peak MB"]) > 0 for r in measured)
        assert all(_number(r["x stock"]) > 0 and _number(r["bank MB"]) > 0 for r in measured if "CSA" in r["case"])
        assert [r["images/step"] for r in measured] == ["4", "4", "1"] + ["1"] * 8
        host = csa[11:13]  # the write and a read again, with the bank in host memory
        assert [r["case"] for r in host] == ["CSA write, 4 references, bank on host", "CSA read, panel 1, bank on host"]
        assert all(_number(r["x stock"]) > 0 and r["bank MB"] == measured[1]["bank MB"] for r in host)
    official = next(r for r in rows if r["case"] == "official processor")
    assert official["note"].startswith("not found") and bench_gpu.OFFICIAL_ENV in official["note"]

    story = next(r for r in rows if r["part"] == "lighthouse" and r["case"] == "whole story (storyd)")
    assert _number(story["s total"]) > 0 and _number(story["peak MB"]) > 0
    assert story["note"].startswith("6 panels in 3 batches")  # two characters' references, then one read batch
    published = {r["case"]: r["peak MB"] for r in rows if r["part"] == "lighthouse" and "published" in r["case"]}
    assert published == {"official StoryDiffusion (published)": "45600", "vanilla SDXL (published)": "16000"}

    animate = {r["model"]: r for r in rows if r["part"] == "animate"}
    assert set(animate) == {"wan-flf2v", "wan-vace", "animatediff", "animatediff (storyd)", "interpolate"}
    assert all(_number(r["s/frame"]) > 0 for r in animate.values())
    renders = [r for r in rows if r["model"] == "animatediff (storyd)"]  # whole transitions, KA on and off
    cases = [f"32x32, {n} frames, keyframe attention {w}" for n in (8, 12) for w in (2, 0)]
    assert [r["case"] for r in renders] == cases  # no offload rows: offloading needs CUDA
    assert all(_number(r["peak MB"]) > 0 and "offload none; --plan: " in r["note"] for r in renders)
    assert ["against keyframe attention off" in r["note"] for r in renders] == [True, False, True, False]

    text = out.read_text()
    assert "| CSA write, 4 references" in text and "## Targets" in text
    assert "sdxl 64px: CSA write step" in text and "lighthouse story peak" in text
    assert "animatediff (storyd), 32x32, 12 frames, keyframe attention 2: peak" in text
    assert "these numbers test the code only" in text


OFFICIAL_STAND_IN = '''
import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from gradio_that_is_not_installed import Blocks

raise SystemExit("the script's UI would start here")


class SpatialAttnProcessor2_0:
    """A stand-in written for this test: stock attention that counts its calls in module globals."""

    def __init__(self, id_length=4):
        self.id_length = id_length
        self.stock = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        global attn_count, writes
        attn_count += 1
        writes += int(write)
        return self.stock(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
'''


def test_official_processor_is_taken_from_a_local_clone_without_running_its_script(tmp_path):
    import torch

    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "gradio_utils.py").write_text("import math\n\ndef helper():\n    return math.pi\n")
    (tmp_path / bench_gpu.OFFICIAL_SCRIPT).write_text(OFFICIAL_STAND_IN)
    namespace, note = bench_gpu.official_processor(str(tmp_path))
    assert namespace is not None, note
    assert namespace["helper"]() > 3  # the helpers' functions are there, with their imports

    namespace["writes"] = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = bench_gpu.csa_rows("sd15", bench_gpu.SMALLEST, "cpu", torch.float32, namespace)
    finally:
        torch.set_num_threads(threads)
    official = [r for r in rows if r["case"].startswith("official")]
    assert [r["case"] for r in official] == ["official write, 4 references", "official read, panel 1"]
    assert all(_number(r["s/step"]) > 0 and _number(r["x stock"]) > 0 for r in official)
    assert namespace["attn_count"] > 0 and namespace["writes"] > 0  # it ran, with the script's globals set


def test_official_processor_says_why_it_is_missing(tmp_path):
    assert bench_gpu.official_processor(None)[0] is None
    namespace, note = bench_gpu.official_processor(str(tmp_path))
    assert namespace is None and note.startswith("not found") and bench_gpu.OFFICIAL_SCRIPT in note


def test_a_failing_part_becomes_a_row_and_the_parts_after_it_still_run(tmp_path, monkeypatch, capsys):
    def part_rows(part, *args):
        if part == "wan-vace":
            raise RuntimeError("CUDA out of memory")
        return [bench_gpu._row("animate", part, "measured", s_frame=0.5)]

    monkeypatch.setattr(bench_gpu, "_part_rows", part_rows)
    monkeypatch.setenv("STORYD_BENCH_PARTS", "wan-vace, interpolate")
    out = tmp_path / "gpu.md"
    rows = bench_gpu.run(bench_gpu.SMALLEST, out)

    assert [(r["model"], r["case"]) for r in rows] == [("wan-vace", "failed"), ("interpolate", "measured")]
    assert rows[0]["note"] == "RuntimeError: CUDA out of memory"
    assert "RuntimeError: CUDA out of memory" in capsys.readouterr().err  # the traceback, for whoever runs it
    assert "| interpolate" in out.read_text()


def test_an_unknown_part_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("STORYD_BENCH_PARTS", "csa sdxl,csa sd14")
    with pytest.raises(SystemExit, match="unknown part.*csa sd14.*choose from: csa sdxl"):
        bench_gpu.run(bench_gpu.SMALLEST, tmp_path / "gpu.md")
    assert not (tmp_path / "gpu.md").exists()
