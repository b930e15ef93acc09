"""Stage 3, score: a reward-model score for every sampled response.

The input is the RM's own chat template applied to [prompt messages..., assistant response], tokenised once by us
(so no second BOS is added) and passed as token ids.
  backend vllm:         standard sequence-classification RMs through vLLM's pooling runner; raw score (no sigmoid).
  backend transformers: any RM, including ArmoRM (custom code, trust_remote_code), whose output has a `score`
                        field; otherwise the first logit.
Multi-turn prompts are scored as the whole conversation plus the response.

Inputs longer than the reward model reads (`reward.max_length`, default its own context; ArmoRM: 8,192) never stop
the stage. `reward.overlong: skip` (default) gives them no score: {"score": null, "skipped": reason, "tokens": n},
and build leaves them out (counted). `truncate` scores the first max_length tokens and marks the row
{"truncated": true, "tokens": n}. Both backends apply the same policy.
Output rows {"prompt_id", "model", "sample", "score"} (+ the fields above) in part files under OUT/score/.
"""

from __future__ import annotations

import time
from pathlib import Path

from data_pipeline.config import PipelineConfig, RewardSpec
from data_pipeline.sample import pending_responses, write_response_part


OVERLONG = "longer than the reward model reads"


def rm_token_ids(tokenizer, messages: list[dict], response: str, max_length: int | None = None) -> list[int]:
    """The RM's chat template on prompt + response, tokenised once (no second BOS); cut at max_length if given."""
    conv = messages + [{"role": "assistant", "content": response}]
    text = tokenizer.apply_chat_template(conv, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[:max_length] if max_length else ids


def fit_to_limit(ids: list[int], limit: int, policy: str) -> tuple[list[int] | None, dict]:
    """(the ids to score or None, what to record on the row) under the overlong policy."""
    if len(ids) <= limit:
        return ids, {}
    if policy == "truncate":
        return ids[:limit], {"truncated": True, "tokens": len(ids)}
    return None, {"skipped": OVERLONG, "tokens": len(ids)}


def reward_limit(spec: RewardSpec) -> int:
    """Tokens the reward model scores: reward.max_length, else the model's own context length."""
    if spec.max_length:
        return spec.max_length
    from data_pipeline.engine import model_context_length

    own = model_context_length(spec.path, spec.trust_remote_code)
    if not own:
        raise ValueError(f"reward: {spec.path} states no context length; set reward.max_length")
    return own


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
    def __init__(self, spec: RewardSpec, cfg: PipelineConfig, max_model_len: int):
        from data_pipeline.engine import make_llm

        self.llm = make_llm(spec.path, runner="pooling", dtype=spec.dtype, trust_remote_code=spec.trust_remote_code,
                            enforce_eager=cfg.vllm.enforce_eager, seed=cfg.seed, max_model_len=max_model_len,
                            gpu_memory_utilization=cfg.vllm.gpu_memory_utilization,
                            kv_cache_memory_bytes=cfg.vllm.kv_cache_memory_bytes)

    def __call__(self, batch_ids: list[list[int]]) -> list[float]:
        from vllm import PoolingParams

        outs = self.llm.classify([{"prompt_token_ids": ids} for ids in batch_ids],
                                 pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
        return [float(o.outputs.probs[0]) for o in outs]


def open_scorer(cfg: PipelineConfig) -> tuple:
    """(tokenizer, scorer, token limit) for cfg.reward, after checking that its input has no doubled BOS."""
    from transformers import AutoTokenizer

    spec = cfg.reward
    limit = reward_limit(spec)
    tokenizer = AutoTokenizer.from_pretrained(spec.path, trust_remote_code=spec.trust_remote_code)
    if tokenizer.bos_token_id is not None:
        probe = rm_token_ids(tokenizer, [{"role": "user", "content": "hi"}], "hello")
        if probe[:2] == [tokenizer.bos_token_id] * 2:
            raise RuntimeError("reward model input starts with a doubled BOS token; check its chat template")
    return tokenizer, (VLLMScorer(spec, cfg, limit) if spec.backend == "vllm" else TransformersScorer(spec)), limit


def score_batch(scorer: tuple, cfg: PipelineConfig, prompts: dict, batch: list[dict]) -> list[dict]:
    """One unit's rows (`scorer` from open_scorer): the single-process loop below and the Ray replicas
    (data_pipeline/distributed.py) both run this."""
    tokenizer, model, limit = scorer
    fitted = [fit_to_limit(rm_token_ids(tokenizer, prompts[r["prompt_id"]]["messages"], r["text"]), limit,
                           cfg.reward.overlong) for r in batch]
    to_score = [ids for ids, _ in fitted if ids is not None]
    values = iter(model(to_score) if to_score else [])
    return [{"prompt_id": r["prompt_id"], "model": r["model"], "sample": r["sample"],
             "score": None if ids is None else next(values), **note} for r, (ids, note) in zip(batch, fitted)]


def score(cfg: PipelineConfig, out_dir: Path, shard: tuple[int, int] = (0, 1), log=print) -> dict:
    prompts, todo, total = pending_responses(out_dir, "score", shard)
    log(f"score: {total} responses in shard {shard[0]}/{shard[1]}, {len(todo)} to score")
    if not todo:
        return {"scored": 0}
    spec = cfg.reward
    scorer = open_scorer(cfg)
    limit = scorer[2]
    t0, n = time.time(), 0
    overlong = {"truncated": 0, "skipped": 0}
    step = max(1, spec.batch_size) * 16
    for start in range(0, len(todo), step):
        batch = todo[start:start + step]
        rows = score_batch(scorer, cfg, prompts, batch)
        for k in overlong:
            overlong[k] += sum(k in row for row in rows)
        write_response_part(out_dir / "score", rows, shard)
        n += len(batch)
        dt = time.time() - t0
        log(f"  scored {n}/{len(todo)}, {n / dt:.2f} sequences/s, ETA {(len(todo) - n) * dt / n:.0f}s; over "
            f"{limit} tokens: {overlong['truncated']} truncated, {overlong['skipped']} skipped")
    return {"scored": n, "seconds": time.time() - t0, "max_length": limit, **overlong}
