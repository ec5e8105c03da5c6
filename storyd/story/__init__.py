"""Stage 1: the story as written — the data model, the YAML and text loaders, prompts, styles."""
