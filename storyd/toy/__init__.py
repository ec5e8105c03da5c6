"""The toy world and the small model trained on it.

- ``world``: scenes, character looks and their Pillow rendering (64x64).
- ``captions``: the fixed-vocabulary caption grammar and ``describe(look, attrs)``.
- ``model_config`` / ``train`` / ``export``: the SD-shaped model (AutoencoderKL, CLIPTextModel,
  UNet2DConditionModel), its CPU training loop and diffusers-layout export.
- ``reader`` / ``reader_train``: the multi-head CNN that reads attributes back from an image.
- ``metrics``: prompt adherence and identity agreement over read-back attributes.
- ``evaluate``: prompt adherence of a trained model, measured end to end.
- ``motion_world``: clips of a kid moving between two panels' states, with every frame's truth.
- ``image_encoder``: a small CLIP vision tower trained against the toy text encoder (image embeddings).
- ``motion_train``: the Semantic Motion Predictor trained on the clips and measured against slerp.

Modules import torch lazily where they can; import the submodule you need.
"""
