"""Stage 3: drawing — pipelines, device and memory, schedulers, references, control, LoRAs, several processes."""
