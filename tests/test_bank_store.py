"""Where character banks rest (device, host memory, disk), and the memory a plan needs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from storyd.comic import ComicOptions, render_comic
from storyd.csa.bank import CharacterBank
from storyd.errors import InputError
from storyd.plan.estimate import Estimate
from storyd.plan.footprint import Budget, parse_size, plan_footprint
from storyd.plan.render_plan import plan_story
from storyd.render.generator import PanelGenerator
from storyd.render.memory import MemoryPlan, apply_memory
from storyd.story.loader import load_story

REPO = Path(__file__).resolve().parent.parent
GB = 1_000_000_000
STORY = """
model: tiny
seed: 3
steps: 4
characters:
  Mia: a kid with red hair
  Sam: a tall man in a hat
panels:
  - Mia waving on the beach
  - Sam reading a book
  - Mia and Sam walking in a forest
  - Mia sitting in a room
consistency:
  id_panels: 1
  read_step: same
"""


def fill(bank: CharacterBank) -> None:
    """Distinct tensors for every (character, layer, step), in the order CSA writes them, two dtypes."""
    g = torch.Generator().manual_seed(0)
    for character in ("Mia", "Sam / 2"):
        for step in range(1, 5):
            for layer in ("up.0", "up.1"):
                dtype = torch.bfloat16 if layer == "up.1" else torch.float32
                bank.write(character, layer, step, torch.randn(2, 6, 4, generator=g).to(dtype))


def test_a_disk_bank_gives_back_what_a_memory_bank_holds(tmp_path):
    memory, disk = CharacterBank(), CharacterBank("disk", spill_dir=tmp_path)
    fill(memory)
    fill(disk)
    assert [{s for _, s in disk.entries[c]} for c in ("Mia", "Sam / 2")] == [{4}, {4}]  # one step each in memory
    disk.flush()
    assert not any(disk.entries.values())
    both = ["Mia", "Sam / 2"]
    for step in [0, 1, 2, 3, 4, 5, 2, 1]:  # in order (read ahead), then out of order (read ahead unused)
        want, got = memory.step_tensors(both, step, "cpu"), disk.step_tensors(both, step, "cpu")
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want), step
        assert all(want[k].dtype == got[k].dtype for k in want)
    only = disk.step_tensors(["Sam / 2"], 3, "cpu")
    assert set(only) == {("Sam / 2", "up.0"), ("Sam / 2", "up.1")}
    assert disk.nbytes() == memory.nbytes() and disk.characters() == memory.characters() == both
    assert disk.last_step("Mia") == 4
    disk.close()
    assert not list(tmp_path.iterdir())  # the spill folder is gone


def test_a_disk_bank_saves_and_loads_as_a_memory_bank_does(tmp_path):
    memory, disk = CharacterBank(), CharacterBank("disk", spill_dir=tmp_path / "spill")
    fill(memory)
    fill(disk)
    for bank, name in ((memory, "memory"), (disk, "disk")):
        bank.meta["Mia"] = {"steps": 4}
        bank.save("Mia", tmp_path / f"{name}.safetensors")
    with safe_open(str(tmp_path / "memory.safetensors"), "pt") as want, safe_open(
        str(tmp_path / "disk.safetensors"), "pt"
    ) as got:
        assert set(want.keys()) == set(got.keys()) and want.metadata() == got.metadata()
        assert all(torch.equal(want.get_tensor(k), got.get_tensor(k)) for k in want.keys())
    with CharacterBank("disk", spill_dir=tmp_path / "spill") as again:
        assert again.load(tmp_path / "disk.safetensors") == "Mia" and again.meta["Mia"] == {"steps": 4}
        for step in range(1, 5):
            want, got = memory.step_tensors(["Mia"], step, "cpu"), again.step_tensors(["Mia"], step, "cpu")
            assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_a_disk_bank_that_keeps_the_last_step_keeps_one_file(tmp_path):
    with CharacterBank("disk", spill_dir=tmp_path) as bank:
        g = torch.Generator().manual_seed(0)
        for step in range(1, 5):
            for layer in ("up.0", "up.1"):
                bank.write("Mia", layer, step, torch.randn(2, 3, 4, generator=g))
                bank.forget_before("Mia", layer, step)
        bank.flush()
        assert [p.name for p in tmp_path.glob("*/*.safetensors")] == ["0-4.safetensors"]
        assert bank.last_step("Mia") == 4 and bank.nbytes() == 2 * 2 * 3 * 4 * 4


@pytest.fixture(scope="module")
def pipe(tiny_pipeline):
    return tiny_pipeline("tiny")


def test_panels_drawn_from_a_disk_bank_are_those_of_a_memory_bank(pipe, write_story, tmp_path, monkeypatch):
    story = load_story(write_story(STORY))
    host = plan_story(story, consistency={"bank_device": "host"})
    disk = plan_story(story, consistency={"bank_device": "disk"})
    assert (host.footprint.bank_storage, disk.footprint.bank_storage) == ("cpu", "disk")
    want = PanelGenerator(pipe, host, device="cpu").draw()

    def drawn_from_disk() -> dict:
        with CharacterBank("disk", spill_dir=tmp_path) as bank:
            images = PanelGenerator(pipe, disk, device="cpu", bank=bank).draw()
            assert len(list(tmp_path.glob("*/*.safetensors"))) == 2 * (4 - 1)  # two characters, steps after warm-up
        return images

    got = drawn_from_disk()
    assert all(np.array_equal(np.asarray(want[i]), np.asarray(got[i])) for i in want)
    # a store that handed back the step before would change the read panels: the check above can fail
    read = CharacterBank._read
    monkeypatch.setattr(CharacterBank, "_read", lambda self, chars, step: read(self, chars, max(step - 1, 1)))
    shifted = drawn_from_disk()
    assert not all(np.array_equal(np.asarray(want[i]), np.asarray(shifted[i])) for i in (2, 3))


def test_the_comic_puts_the_banks_where_the_plan_says(write_story, tmp_path):
    story = load_story(write_story(STORY))
    render_comic(story, ComicOptions(out_dir=tmp_path / "auto"))
    render_comic(story, ComicOptions(out_dir=tmp_path / "disk", consistency={"bank_device": "disk"}))
    auto, disk = (json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("auto", "disk"))
    assert auto["settings"]["banks"] == "host" and disk["settings"]["banks"] == "disk"  # the toy's banks are tiny
    assert [p["sha256"] for p in auto["panels"]] == [p["sha256"] for p in disk["panels"]]
    assert not list((tmp_path / "disk").glob(".storyd-bank-*"))  # the spill folder went with the run
    again = render_comic(story, ComicOptions(out_dir=tmp_path / "disk", consistency={"bank_device": "host"}))
    assert again.rendered == [] and len(again.skipped) == 4  # the placement is not an input: nothing to redraw
    generator = PanelGenerator(None, plan_story(story, consistency={"bank_device": "disk"}), device="cpu")
    assert generator.bank.on_disk  # a generator given no bank makes the plan's


def estimate(bank: int, step: int, weights: int = 7 * GB, acts: int = 4 * GB) -> Estimate:
    return Estimate(1.0, weights, [bank], bank, "cuda", bank_step_bytes=step, activation_bytes=acts)


def test_auto_puts_the_banks_on_the_device_then_host_then_disk():
    est = estimate(15 * GB, GB // 2)
    roomy = plan_footprint(est, "cuda", "auto", Budget(64 * GB, device_bytes=80 * GB))
    assert (roomy.bank, roomy.bank_storage, roomy.fits) == ("device", "cuda", True)
    small_gpu = plan_footprint(est, "cuda:1", "auto", Budget(64 * GB, device_bytes=24 * GB))
    assert (small_gpu.bank, small_gpu.bank_storage) == ("host", "cpu")
    small_host = plan_footprint(est, "cuda", "auto", Budget(16 * GB, device_bytes=24 * GB))
    assert (small_host.bank, small_host.fits) == ("disk", True) and small_host.host_peak <= 16 * GB
    unknown = plan_footprint(est, "cuda", "auto", Budget(64 * GB))  # validate: the device's free memory unknown
    assert unknown.bank == "host"
    on_cpu = plan_footprint(estimate(GB, GB // 10, weights=GB, acts=GB), "cpu", "auto", Budget(16 * GB))
    assert (on_cpu.bank, on_cpu.bank_storage, on_cpu.device_peak) == ("host", "cpu", None)


def test_an_explicit_placement_is_honoured_and_what_does_not_fit_says_what_to_change():
    est = estimate(15 * GB, GB // 2)
    host = plan_footprint(est, "cuda", "host", Budget(16 * GB))
    assert host.bank == "host" and not host.fits and "--bank-device disk" in host.advice
    device = plan_footprint(est, "cuda:1", "device", Budget(64 * GB, device_bytes=24 * GB))
    assert device.bank_storage == "cuda:1" and "--offload model" in device.advice
    named = plan_footprint(est, "cuda:0", "cuda:1", Budget(64 * GB))
    assert (named.bank, named.bank_storage) == ("device", "cuda:1")
    too_big = plan_footprint(estimate(GB, GB // 10, weights=14 * GB, acts=8 * GB), "cpu", "auto", Budget(16 * GB))
    assert too_big.bank == "disk" and "the weights alone are 14.0 GB" in too_big.advice


def test_the_lighthouse_plan_fits_16gb_of_host_memory_on_a_gpu(cli):
    story = REPO / "stories" / "lighthouse-sdxl.yaml"
    plan = json.loads(cli("validate", story, "--json", "--device", "cuda", "--host-memory", "16GB").stdout)
    memory = plan["memory"]
    assert memory["fits"] and memory["bank"] == "disk" and memory["host_peak"] <= 16 * GB
    assert memory["host_peak"] < plan["estimate"]["bank_bytes"]  # less than the banks alone: they are on disk
    assert memory["device_peak"] > plan["estimate"]["weights_bytes"]
    in_memory = cli("validate", story, "--device", "cuda", "--host-memory", "16GB", "--bank-device", "host")
    assert in_memory.exit_code == 0 and "--bank-device disk" in in_memory.output
    assert "Memory (rough): host peak" in in_memory.output and "does not fit" in in_memory.output
    on_cpu = json.loads(cli("validate", story, "--json", "--device", "cpu", "--host-memory", "16GB").stdout)
    assert not on_cpu["memory"]["fits"] and "--dtype bf16" in on_cpu["memory"]["advice"]
    in_bf16 = cli("validate", story, "--json", "--device", "cpu", "--host-memory", "16GB", "--dtype", "bf16")
    assert json.loads(in_bf16.stdout)["memory"]["fits"]


def test_doctor_shows_the_default_host_budget(cli):
    info = json.loads(cli("doctor", "--json").stdout)
    assert 0 < info["host_budget_bytes"] < info["host_free_bytes"]


def test_sizes_and_placements_are_checked(cli, write_story):
    assert parse_size("16GB") == 16 * GB and parse_size("1.5GiB") == int(1.5 * 2**30) and parse_size("800mb") == 8e8
    with pytest.raises(InputError, match="is not a memory size"):
        parse_size("lots")
    result = cli("validate", write_story(STORY), "--host-memory", "lots")
    assert result.exit_code == 2 and "'lots' is not a memory size" in result.output
    result = cli("validate", write_story(STORY), "--device", "cpu", "--dtype", "fp16")
    assert result.exit_code == 2 and "fp16 is not supported on the CPU" in result.output
    result = cli("validate", write_story(STORY), "--bank-device", "floppy")
    assert result.exit_code == 2 and "--bank-device 'floppy' is not a bank placement" in result.output


class FakePipe:
    def __init__(self) -> None:
        self.calls = []

    def enable_model_cpu_offload(self, **kwargs):
        self.calls.append(("model", kwargs))

    def enable_sequential_cpu_offload(self, **kwargs):
        self.calls.append(("sequential", kwargs))


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offload_goes_to_the_ranks_own_gpu(offload, monkeypatch):
    plan = MemoryPlan("fp32", offload, vae_tiling=False, vae_slicing=False, compile=False, free_bytes=None, reason="")
    pipe = FakePipe()
    apply_memory(pipe, plan, "cuda:3")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)  # what a launcher set for this rank
    apply_memory(pipe, plan, "cuda")
    assert pipe.calls == [(offload, {"gpu_id": 3, "device": "cuda"}), (offload, {"gpu_id": 2, "device": "cuda"})]
