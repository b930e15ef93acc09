"""Stage 3, score: a reward-model score for every sampled response.

The input is the RM's own chat template applied to [prompt messages..., assistant response], tokenised once by us
(so no second BOS is added) and passed as token ids.
  backend vllm:         standard sequence-classification RMs through vLLM's pooling runner; raw score (no sigmoid).
  backend transformers: any RM, including ArmoRM (custom code, trust_remote_code), whose output has a `score`
                        field; otherwise the first logit.
Output rows {"prompt_id", "model", "sample", "score"} in part files under OUT/score/.
"""

from __future__ import annotations

import time
from pathlib import Path

from data_pipeline.config import PipelineConfig, RewardSpec
from data_pipeline.sample import pending_responses, write_response_part


def rm_token_ids(tokenizer, messages: list[dict], response: str, max_length: int) -> list[int]:
    conv = messages + [{"role": "assistant", "content": response}]
    text = tokenizer.apply_chat_template(conv, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[:max_length]


class TransformersScorer:
    def __init__(self, spec: RewardSpec):
        import torch
        from transformers import AutoModelForSequenceClassification

        self.torch = torch
        dtype = getattr(torch, spec.dtype) if spec.dtype != "auto" else "auto"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            spec.path, trust_remote_code=spec.trust_remote_code, dtype=dtype).eval()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)

    def __call__(self, batch_ids: list[list[int]]) -> list[float]:
        scores = []
        with self.torch.no_grad():
            for ids in batch_ids:  # one at a time: no padding side effects on the score position
                out = self.model(self.torch.tensor([ids], device=self.device))
                value = out.score if getattr(out, "score", None) is not None else out.logits[:, 0]
                scores.append(float(value.float().reshape(-1)[0]))
        return scores


class VLLMScorer:
    def __init__(self, spec: RewardSpec, cfg: PipelineConfig):
        from vllm import LLM

        kwargs = dict(model=spec.path, runner="pooling", dtype=spec.dtype, trust_remote_code=spec.trust_remote_code,
                      enforce_eager=cfg.vllm.enforce_eager, seed=cfg.seed)
        if cfg.vllm.kv_cache_memory_bytes:
            kwargs["kv_cache_memory_bytes"] = cfg.vllm.kv_cache_memory_bytes
        self.llm = LLM(**kwargs)

    def __call__(self, batch_ids: list[list[int]]) -> list[float]:
        from vllm import PoolingParams

        outs = self.llm.classify([{"prompt_token_ids": ids} for ids in batch_ids],
                                 pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
        return [float(o.outputs.probs[0]) for o in outs]


def score(cfg: PipelineConfig, out_dir: Path, shard: tuple[int, int] = (0, 1), log=print) -> dict:
    from transformers import AutoTokenizer

    prompts, todo, total = pending_responses(out_dir, "score", shard)
    log(f"score: {total} responses in shard {shard[0]}/{shard[1]}, {len(todo)} to score")
    if not todo:
        return {"scored": 0}
    spec = cfg.reward
    tokenizer = AutoTokenizer.from_pretrained(spec.path, trust_remote_code=spec.trust_remote_code)
    if tokenizer.bos_token_id is not None:
        probe = rm_token_ids(tokenizer, [{"role": "user", "content": "hi"}], "hello", spec.max_length)
        if probe[:2] == [tokenizer.bos_token_id] * 2:
            raise RuntimeError("reward model input starts with a doubled BOS token; check its chat template")
    scorer = VLLMScorer(spec, cfg) if spec.backend == "vllm" else TransformersScorer(spec)
    t0, n = time.time(), 0
    step = max(1, spec.batch_size) * 16
    for start in range(0, len(todo), step):
        batch = todo[start:start + step]
        ids = [rm_token_ids(tokenizer, prompts[r["prompt_id"]]["messages"], r["text"], spec.max_length)
               for r in batch]
        values = scorer(ids)
        rows = [{"prompt_id": r["prompt_id"], "model": r["model"], "sample": r["sample"], "score": v}
                for r, v in zip(batch, values)]
        write_response_part(out_dir / "score", rows, shard)
        n += len(batch)
        log(f"  scored {n}/{len(todo)}, {n / (time.time() - t0):.2f} sequences/s")
    return {"scored": n, "seconds": time.time() - t0}
