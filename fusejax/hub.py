"""Publish an exported HF directory to the Hugging Face Hub with a generated model card (base model, stage, data,
hyperparameters, the eval table when one exists, the recipe's citation). The token comes from HF_TOKEN or the
cached `hf auth login`; HF_ENDPOINT selects another hub."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

FUSECHAT3_CITATION = """\
@article{yang2025fusechat3,
  title={FuseChat-3.0: Preference Optimization Meets Heterogeneous Model Fusion},
  author={Ziyi Yang and Fanqi Wan and Longguang Zhong and Canbin Huang and Guosheng Liang and Xiaojun Quan},
  journal={arXiv preprint arXiv:2503.04222},
  year={2025}
}
@article{yang2024wrpo,
  title={Weighted-Reward Preference Optimization for Implicit Model Fusion},
  author={Ziyi Yang and Fanqi Wan and Longguang Zhong and Tianyuan Shi and Xiaojun Quan},
  journal={arXiv preprint arXiv:2412.03187},
  year={2024}
}"""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubError(RuntimeError):
    """Publishing failed: no token, bad repository id, or the hub refused (message says which)."""


def _hub_id(s: str | None) -> str | None:
    """s when it names a hub repository (org/name) rather than a local or bucket path."""
    if not s or "://" in s or s.startswith((".", "/", "~")) or Path(s).exists():
        return None
    return s if _HUB_ID.match(s) else None


def checkpoint_train_config(directory: str | os.PathLike, step: int | None = None) -> dict | None:
    """The training config a training checkpoint carries (None for converted checkpoints, which have none)."""
    import orbax.checkpoint as ocp

    from fusejax import checkpoint

    mgr = checkpoint.manager(directory)
    step = mgr.latest_step() if step is None else step
    try:
        if step is None or "train_config" not in (mgr.item_metadata(step) or {}):
            return None
        return mgr.restore(step, args=ocp.args.Composite(train_config=ocp.args.JsonRestore()))["train_config"]
    finally:
        mgr.close()


def find_eval_results(model_dir: str | os.PathLike) -> Path | None:
    """`fusejax eval`'s results.json for this model: MODEL/eval/results.json or a sibling eval/results.json."""
    d = Path(model_dir)
    for p in (d / "eval" / "results.json", d.parent / "eval" / "results.json"):
        if p.is_file():
            return p
    return None


def _yaml_list(key: str, items: list[str]) -> list[str]:
    return [f"{key}:"] + [f"- {json.dumps(i)}" for i in items] if items else []


def _eval_table(results: dict) -> list[str]:
    rows = ["| benchmark | score | n | metric | status |", "|---|---|---|---|---|"]
    for name, r in (results.get("benchmarks") or {}).items():
        score = r.get("score")
        shown = f"{score:.2f}" if isinstance(score, (int, float)) else "-"
        rows.append(f"| {name} | {shown} | {r.get('n', '-')} | {r.get('metric', '-')} | {r.get('status', '-')} |")
    if isinstance(results.get("average"), (int, float)):
        rows.append(f"| **average** | **{results['average']:.2f}** | | | |")
    return rows


def _hyperparameters(tc: dict) -> list[str]:
    d, o, t, m = tc.get("data", {}), tc.get("optim", {}), tc.get("train", {}), tc.get("model", {})
    unit = "packed rows" if d.get("packing") and tc.get("stage") == "sft" else "examples"
    rows = [("learning rate", o.get("learning_rate")),
            ("schedule", f"linear warmup (ratio {o.get('warmup_ratio')}), then cosine to 0"),
            ("epochs", t.get("epochs")), ("max steps", t.get("max_steps")),
            ("global batch", f"{t.get('global_batch_size')} {unit}"),
            ("gradient accumulation", t.get("grad_accum_steps")), ("max length", d.get("max_length")),
            ("weight decay", o.get("weight_decay")), ("max grad norm", o.get("max_grad_norm")),
            ("AdamW b1, b2, eps", f"{o.get('b1')}, {o.get('b2')}, {o.get('eps')}"),
            ("parameters / compute dtype", f"{m.get('param_dtype')} / {m.get('compute_dtype')}")]
    if tc.get("stage") == "dpo":
        dpo = tc.get("dpo", {})
        rows += [("DPO loss", "length-normalised (LN-DPO)" if dpo.get("loss") == "ln" else "sigmoid (DPO)"),
                 ("beta", dpo.get("beta")), ("label smoothing", dpo.get("label_smoothing")),
                 ("reference", "the starting model (log-probs " + ("precomputed" if dpo.get("reference") ==
                                                                   "precomputed" else "on the mesh") + ")")]
    return ["| hyperparameter | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows if v is not None]


def model_card(repo_id: str, train_config: dict | None = None, eval_results: dict | None = None,
               base_model: str | None = None, license: str | None = None) -> str:
    """README.md text: YAML front matter (base_model, datasets, tags, license) and the body."""
    tc = train_config or {}
    stage = tc.get("stage")
    base = base_model or (tc.get("model") or {}).get("path")
    data = list((tc.get("data") or {}).get("train") or [])
    hub_datasets = [x for x in data if _hub_id(x)]
    front = ["---", "library_name: transformers", "pipeline_tag: text-generation"]
    if license:
        front.append(f"license: {license}")
    if _hub_id(base):
        front.append(f"base_model: {base}")
    front += _yaml_list("datasets", hub_datasets)
    front += _yaml_list("tags", ["fusejax", "fusechat", "implicit-model-fusion", "jax"] + ([stage] if stage else []))
    front.append("---")

    name = repo_id.split("/")[-1]
    what = {"sft": "SFT stage (supervised fine-tuning on the best source-model responses)",
            "dpo": "DPO stage (preference optimisation on one source model's best/worst response pairs)"}.get(
        stage, "training")
    body = [f"# {name}", "",
            f"{name} is {base or 'a model'} trained with the {what} of FuseChat-3.0's implicit model fusion "
            "(arXiv 2503.04222), using fusejax (JAX, TPU), and exported to Hugging Face safetensors.", ""]
    if tc:
        body += ["## Training", "", f"- stage: {stage}", f"- starting model: {base}",
                 "- data: " + ", ".join(f"`{x}`" for x in data)]
        if (tc.get("data") or {}).get("eval"):
            body.append("- held-out data: " + ", ".join(f"`{x}`" for x in tc["data"]["eval"]))
        body += [""] + _hyperparameters(tc) + [""]
    if eval_results and eval_results.get("benchmarks"):
        body += ["## Evaluation", ""] + _eval_table(eval_results) + [""]
    body += ["## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
             f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
             f'model = AutoModelForCausalLM.from_pretrained("{repo_id}", torch_dtype="auto")', "```", "",
             "## Citation", "", "```bibtex", FUSECHAT3_CITATION, "```", ""]
    return "\n".join(front + [""] + body)


def push(folder: str | os.PathLike, repo_id: str, card: str, private: bool = False, token: str | None = None,
         commit_message: str | None = None) -> str:
    """Create (or reuse) the model repository, write the card as README.md into `folder` and upload the folder.
    Returns the commit URL."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    if not _HUB_ID.match(repo_id):
        raise HubError(f"--push-to-hub: expected ORG/NAME, got {repo_id!r}")
    token = token or get_token()
    if not token:
        raise HubError("push to the hub: no token; set HF_TOKEN or run `hf auth login`")
    folder = Path(folder)
    (folder / "README.md").write_text(card)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message=commit_message or f"Upload {repo_id} (fusejax export)")
    except HfHubHTTPError as e:
        raise HubError(f"push to {repo_id}: {e}") from None
    return str(getattr(info, "commit_url", info))


def publish(folder: str | os.PathLike, repo_id: str, train_config: dict | None = None, private: bool = False,
            eval_results: str | os.PathLike | None = None, base_model: str | None = None,
            license: str | None = None) -> str:
    """model_card + push; the eval table comes from `eval_results` or find_eval_results(folder)."""
    path = Path(eval_results) if eval_results else find_eval_results(folder)
    results: dict[str, Any] | None = json.loads(path.read_text()) if path else None
    card = model_card(repo_id, train_config, results, base_model=base_model, license=license)
    return push(folder, repo_id, card, private=private)
