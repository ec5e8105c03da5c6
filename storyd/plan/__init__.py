"""Stage 2: the plan — presets, consistency settings resolved once, seeds, LoRA sets, estimates. No torch."""
