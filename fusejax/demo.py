"""Built-in end-to-end demo on tiny random models, CPU only, nothing downloaded:

  1. model core: tiny HF models of each family -> fusejax -> HF, parity figures;
  2. data construction: two tiny source models sampled with vLLM, a tiny reward model, math/code verification,
     SFT and DPO sets (configs/data/tiny.yaml);
  3. training: SFT then length-normalised DPO of a tiny target on those sets (configs/train/tiny-*.yaml),
     exported as an HF directory that transformers loads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def model_parity(work: Path) -> None:
    import jax.numpy as jnp
    import torch
    from transformers import AutoModelForCausalLM

    from fusejax.models import load_hf, save_hf
    from fusejax.tiny import tiny_hf_model

    print(f"{'family':8} {'max |logits - transformers|':>28} {'export == original':>20}", flush=True)
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
        print(f"{family:8} {diff:28.2e} {str(same):>20}", flush=True)


def _run(cmd: list[str], env: dict) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)


def main(out: str | None = None) -> None:
    work = Path(out) if out else Path(tempfile.mkdtemp(prefix="fusejax-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"fusejax demo in {work}", flush=True)
    print("== 1. model core: float32 parity with transformers, and the HF round trip", flush=True)
    model_parity(work)

    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_TARGET_DEVICE="cpu", TOKENIZERS_PARALLELISM="false",
               JAX_PLATFORMS="cpu")
    py = sys.executable
    assets, data = work / "tiny" / "assets", work / "tiny" / "data"
    print("== 2. data construction (vLLM on CPU, tiny models)", flush=True)
    _run([py, "-m", "fusejax", "tiny-assets", str(assets)], env)
    # the tiny configs name runs/tiny/...; point them at this work directory instead
    cfg = (ROOT / "configs" / "data" / "tiny.yaml").read_text().replace("runs/tiny/assets", str(assets))
    (work / "tiny.yaml").write_text(cfg)
    _run([py, "-m", "data_pipeline", "run", "--config", str(work / "tiny.yaml"), "--out", str(data)], env)
    print("== 3. training: SFT, then length-normalised DPO, then export", flush=True)
    sft, dpo = work / "tiny" / "sft", work / "tiny" / "dpo"
    _run([py, "train.py", "--config", "configs/train/tiny-sft.yaml", f"output_dir={sft}",
          f"model.path={assets / 'model'}", f"data.train={data / 'build' / 'sft.jsonl'}", f"export_hf={sft / 'hf'}"],
         env)
    _run([py, "train.py", "--config", "configs/train/tiny-dpo.yaml", f"output_dir={dpo}", f"model.path={sft / 'hf'}",
          f"data.train={data / 'build' / 'dpo.jsonl'}", f"export_hf={dpo / 'hf'}"], env)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(dpo / "hf")
    model = AutoModelForCausalLM.from_pretrained(dpo / "hf")
    ids = tok.apply_chat_template([{"role": "user", "content": "Describe a cat."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    print(f"== done: fused tiny model at {dpo / 'hf'}; transformers generates: "
          f"{tok.decode(out[0, ids['input_ids'].shape[1]:])!r}", flush=True)
