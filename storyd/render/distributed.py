"""Sharing the work of a story between processes: `--shard I/N`, and ranks under a launcher.

Ownership is a pure function of the plan, so every process agrees without talking:
a character's reference panels (and the drawing of its bank) belong to shard
`character position % N`; the other panels go by whole batches, as one process would
batch them: batch `k` to shard `k % N`. A panel is then drawn beside the same panels
as in one process, which keeps shards pixel-identical to it on CPUs whose kernels round
a batch of three differently from a batch of four.
Each process writes only the panel files it owns and its own manifest
(`manifest.shard-I-of-N.json`); an unsharded run, or `--merge`, folds them together.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from storyd.errors import InputError
from storyd.plan.render_plan import RenderPlan
from storyd.render.device import pick_device


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int

    @property
    def label(self) -> str:
        return f"{self.index + 1}/{self.count}"

    @property
    def manifest_name(self) -> str:
        return f"manifest.shard-{self.index + 1}-of-{self.count}.json"


def parse_shard(text: str) -> Shard:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise InputError(f"--shard '{text}' is not I/N with 1 <= I <= N", "e.g. --shard 2/4 for the second of four")
    return Shard(int(match.group(1)) - 1, int(match.group(2)))


def owned_characters(plan: RenderPlan, shard: Shard) -> list[str]:
    return [name for i, name in enumerate(sorted(plan.references)) if i % shard.count == shard.index]


def owned_panels(plan: RenderPlan, shard: Shard) -> set[int]:
    """The panels whose files this shard writes."""
    mine = {i for name in owned_characters(plan, shard) for i in plan.references[name]}
    batches = [b.panels for b in plan.batches({j.index for j in plan.jobs}) if b.mode != "write"]
    return mine | {i for k, panels in enumerate(batches) if k % shard.count == shard.index for i in panels}


def rank_device(requested: str, local_rank: int) -> str:
    """A launched rank's device: `pick_device`'s choice, with plain `cuda` (`auto` on a GPU
    machine included) made this rank's own GPU, `cuda:LOCAL_RANK`; an explicit `cuda:N` is kept."""
    chosen = pick_device(requested)
    return f"cuda:{local_rank}" if chosen == "cuda" else chosen


@dataclass
class Launch:
    """Where this process stands under `accelerate launch` or `torchrun` (one process: rank 0 of 1),
    and the device it draws on."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"
    _state: object = None

    @classmethod
    def from_environment(cls, device: str = "auto") -> Launch:
        """`device` is the run's requested device (`--device`), resolved by the one device policy."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(device=pick_device(device))
        from accelerate import PartialState

        chosen = rank_device(device, int(os.environ.get("LOCAL_RANK", "0")))
        # joins the process group the launcher set up: NCCL on GPUs, gloo on the CPU
        state = PartialState(cpu=not chosen.startswith("cuda"))
        return cls(state.process_index, state.num_processes, chosen, state)

    @property
    def shard(self) -> Shard | None:
        return Shard(self.rank, self.world) if self.world > 1 else None

    def barrier(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()
