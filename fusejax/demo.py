"""Built-in demo: tiny random HF models of each family -> fusejax -> HF, printing the parity figures."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def model_parity(work: Path) -> None:
    import jax.numpy as jnp
    import torch
    from transformers import AutoModelForCausalLM

    from fusejax.models import load_hf, save_hf
    from fusejax.tiny import tiny_hf_model

    print(f"{'family':8} {'max |logits - transformers|':>28} {'export == original':>20}")
    ids = np.random.default_rng(0).integers(0, 256, (2, 64))
    for family in ("llama", "qwen2", "gemma2"):
        src, dst = work / f"{family}-hf", work / f"{family}-export"
        hf = tiny_hf_model(family)
        hf.save_pretrained(src)
        with torch.no_grad():
            ref = hf(torch.tensor(ids)).logits.numpy()
        model, _ = load_hf(src)
        diff = np.abs(np.asarray(model(jnp.asarray(ids))) - ref).max()
        save_hf(model, dst)
        back = AutoModelForCausalLM.from_pretrained(dst, dtype=torch.float32, attn_implementation="eager").eval()
        same = all(torch.equal(a, b) for a, b in zip(hf.state_dict().values(), back.state_dict().values()))
        print(f"{family:8} {diff:28.2e} {str(same):>20}")


def main(out: str | None = None) -> None:
    work = Path(out) if out else Path(tempfile.mkdtemp(prefix="fusejax-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"fusejax demo in {work}")
    print("== model core: float32 parity with transformers, and HF round trip")
    model_parity(work)
