"""The real CLIP tokenizer, built offline from the BPE merges that open_clip_torch ships.

SD1.5, SD2.1 and SDXL all tokenize prompts with CLIP's byte-level BPE (49,408
tokens). No package ships the Hugging Face ``vocab.json``/``merges.txt`` pair, but
``open_clip_torch`` ships the merges, and the vocabulary follows from them: the
256 byte symbols, the same with the end-of-word marker, one token per merge, and
the two special tokens. The files are written once into a cache folder.
"""

from __future__ import annotations

import gzip
import json
from importlib import metadata
from pathlib import Path

from storyd.errors import StorydError

VOCAB_SIZE = 49408
_BPE_FILE = "open_clip/bpe_simple_vocab_16e6.txt.gz"
_MERGES_KEPT = VOCAB_SIZE - 256 * 2 - 2  # 48,894 merges make up the rest of the vocabulary


def _byte_symbols() -> list[str]:
    """Printable stand-ins for the 256 byte values, in the order byte-level BPE uses."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in printable] + [symbols[b] for b in range(256) if b not in printable]


def _read_merges() -> list[str]:
    # Located through the distribution's metadata: importing open_clip would pull in torchvision.
    try:
        source = Path(str(metadata.distribution("open_clip_torch").locate_file(_BPE_FILE)))
        raw = source.read_bytes()
    except (metadata.PackageNotFoundError, FileNotFoundError) as exc:
        raise StorydError(
            "the CLIP BPE file from open_clip_torch is not installed",
            "run `make setup` (it installs open_clip_torch==3.3.0 without its dependencies)",
        ) from exc
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    return lines[1 : 1 + _MERGES_KEPT]


def write_tokenizer_files(folder: Path, *, pad_token: str = "<|endoftext|>") -> Path:
    """Write vocab.json, merges.txt and the tokenizer configs into ``folder``; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
        return folder
    merges = _read_merges()
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    if len(tokens) != VOCAB_SIZE:
        raise StorydError(f"built a CLIP vocabulary of {len(tokens)} tokens, expected {VOCAB_SIZE}")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tmp = folder / "vocab.json.tmp"
    tmp.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
        "do_lower_case": True,
        "tokenizer_class": "CLIPTokenizer",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}, indent=2),
        encoding="utf-8",
    )
    tmp.replace(folder / "vocab.json")
    return folder


def load_clip_tokenizer(cache_dir: Path, *, pad_token: str = "<|endoftext|>"):
    """Return a transformers CLIPTokenizer built from the shipped BPE (no network)."""
    from transformers import CLIPTokenizer

    name = "clip-pad-eot" if pad_token == "<|endoftext|>" else "clip-pad-bang"
    folder = write_tokenizer_files(cache_dir / "tokenizers" / name, pad_token=pad_token)
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


class PromptTokenizer:
    """CLIP's tokenization alone, for planning: where a prompt's 77-token window ends.

    The same BPE files and the same steps as `load_clip_tokenizer`'s tokenizer (NFC,
    whitespace folded, lower case; CLIP's word split; byte-level BPE with ``</w>`` word
    ends), built on the ``tokenizers`` library without transformers, whose import costs
    seconds: `storyd validate` plans without it. The plan counts a prompt's tokens with it
    (`storyd.story.prompts.build_prompts`); tests/test_tokenizer.py checks it against transformers'.
    """

    model_max_length = 77

    def __init__(self, cache_dir: Path) -> None:
        from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
        from tokenizers.models import BPE

        folder = write_tokenizer_files(cache_dir / "tokenizers" / "clip-pad-eot")
        bpe = BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token="<|endoftext|>",
                            continuing_subword_prefix="", end_of_word_suffix="</w>", fuse_unk=False)
        words = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
        self._bpe = Tokenizer(bpe)
        self._bpe.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
        self._bpe.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(words), behavior="removed", invert=True),
             pre_tokenizers.ByteLevel(add_prefix_space=False)])
        self._bpe.decoder = decoders.ByteLevel()

    def tokenize(self, text: str) -> list[str]:
        return self._bpe.encode(text, add_special_tokens=False).tokens

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        return [self._bpe.token_to_id(t) for t in tokens]

    def decode(self, ids: list[int]) -> str:
        return self._bpe.decode(ids).replace("</w>", " ").strip()
