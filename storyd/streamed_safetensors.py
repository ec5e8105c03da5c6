"""A safetensors file written one tensor at a time, so that nothing larger than one tensor is held:
a disk-resident character bank's steps, a full-size checkpoint built for the tests.

The format: an 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape
and byte range (padded with spaces so the data starts 8-byte aligned, as safetensors writes it),
then each tensor's raw little-endian bytes in the header's order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path


def tensor_bytes(dtype, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * dtype.itemsize


def write_streamed(path: Path, metadata: dict[str, str], index: dict, tensors: Iterable, digest=None) -> None:
    """Write `path` (atomically) with the header built from `index` (name -> (dtype, shape)) and the
    tensors coming one by one from `tensors`, in the index's order; `digest` (a hashlib object), if
    given, is fed every byte written."""
    import torch

    from storyd.fsutil import atomic_open

    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, (dtype, shape) in index.items():
        size = tensor_bytes(dtype, shape)
        header[name] = {"dtype": names[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with atomic_open(path, "wb") as handle:
        for chunk in _chunks(text, index, tensors):
            handle.write(chunk)
            if digest is not None:
                digest.update(chunk)


def _chunks(text: bytes, index: dict, tensors: Iterable):
    import torch

    yield len(text).to_bytes(8, "little")
    yield text
    for (name, (dtype, shape)), tensor in zip(index.items(), tensors, strict=True):
        if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
            raise RuntimeError(f"tensor {name} is {tensor.dtype} {tuple(tensor.shape)}; "
                               f"its header says {dtype} {tuple(shape)}")
        yield tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
