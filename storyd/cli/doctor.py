"""`storyd doctor`: the device, its memory, what storyd would choose, and which weights are present."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from storyd.cli.common import Output
from storyd.cli.options import DeviceOpt, JsonOpt, ModelOpt, WeightsDirOpt


def doctor(
    device: DeviceOpt = "auto",
    model: ModelOpt = "sdxl",
    weights_dir: WeightsDirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print the device, its free memory, the dtype and offload storyd would pick for a model, and the weights."""
    from storyd.doctor import diagnose
    from storyd.plan.presets import get_preset

    get_preset(model)
    info = diagnose(device, model, weights_dir)

    def human(console) -> None:
        free = f"{info['free_bytes'] / 1e9:.1f} GB free" if info["free_bytes"] is not None else "free memory unknown"
        mem = info["memory"]
        console.print(f"storyd on {info['device']} ({escape(info['device_name'])}), {free}; torch {info['torch']}")
        console.print(f"Host memory: {info['host_free_bytes'] / 1e9:.1f} GB free; a run may use "
                      f"{info['host_budget_bytes'] / 1e9:.1f} GB unless --host-memory says otherwise")
        console.print(
            f"For {model}: dtype {mem['dtype']}, offload {mem['offload']} ({escape(mem['reason'])}), "
            f"VAE tiling {'on' if mem['vae_tiling'] else 'off'}, slicing {'on' if mem['vae_slicing'] else 'off'}"
        )
        console.print(f"Embedded default model: {info['embedded_default']}")
        console.print(f"storyd animate would use {escape(info['animate']['reason'])}")
        table = Table("model", "status", "where / what to do")
        for w in info["weights"]:
            table.add_row(w["name"], w["status"], escape(w["path"] or w["hint"] or ""))
        console.print(table)

    Output(json_mode=json_).result(info, human)
