"""Stage 2, sample: several responses per prompt from each source model with vLLM (offline `LLM.chat`).

Output rows {"prompt_id", "model", "sample", "text", "num_tokens", "finish_reason"} in part files under
OUT/sample/<model>/. One source model in memory at a time. Each prompt has its own sampling seed derived from
(seed, model, prompt id), so results do not depend on batching, sharding or restarts.
"""

from __future__ import annotations

import gc
import hashlib
import time
from pathlib import Path

from data_pipeline.config import ModelSpec, PipelineConfig
from data_pipeline.store import done_keys, part_name, read_jsonl, read_parts, shard_of, write_jsonl_atomic


def request_seed(seed: int, model: str, prompt_id: str) -> int:
    return int(hashlib.sha256(f"{seed}:{model}:{prompt_id}".encode()).hexdigest()[:8], 16)


def load_prompts(out_dir: Path) -> list[dict]:
    path = out_dir / "select" / "prompts.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: run the select stage first")
    return list(read_jsonl(path))


def response_key(r: dict) -> tuple:
    return (r["prompt_id"], r["model"], r["sample"])


def pending_responses(out_dir: Path, stage: str, shard: tuple[int, int]) -> tuple[dict, list[dict], int]:
    """For per-response stages (score, verify): (prompts by id, this shard's responses not yet in OUT/stage,
    this shard's response count)."""
    prompts = {p["id"]: p for p in load_prompts(out_dir)}
    responses = [r for r in read_parts(out_dir / "sample") if shard_of(r["prompt_id"], shard[1]) == shard[0]]
    done = done_keys(out_dir / stage, response_key)
    return prompts, sorted((r for r in responses if response_key(r) not in done), key=response_key), len(responses)


def write_response_part(stage_dir: Path, rows: list[dict], shard: tuple[int, int]) -> None:
    names = ["|".join(map(str, response_key(r))) for r in rows]
    write_jsonl_atomic(stage_dir / part_name(names, f"{shard[0]}of{shard[1]}-"), rows)


def _llm(spec: ModelSpec, cfg: PipelineConfig):
    from vllm import LLM

    kwargs = dict(model=spec.path, tensor_parallel_size=spec.tensor_parallel_size, dtype=spec.dtype,
                  seed=cfg.seed, enforce_eager=cfg.vllm.enforce_eager,
                  gpu_memory_utilization=cfg.vllm.gpu_memory_utilization)
    if cfg.vllm.kv_cache_memory_bytes:
        kwargs["kv_cache_memory_bytes"] = cfg.vllm.kv_cache_memory_bytes
    if spec.max_model_len:
        kwargs["max_model_len"] = spec.max_model_len
    return LLM(**kwargs)


def sample(cfg: PipelineConfig, out_dir: Path, shard: tuple[int, int] = (0, 1), log=print) -> dict:
    from vllm import SamplingParams

    prompts = load_prompts(out_dir)
    stats = {}
    for spec in cfg.models:
        stage = out_dir / "sample" / spec.name
        wanted = [p for p in prompts if p["domain"] in spec.domains and shard_of(p["id"], shard[1]) == shard[0]]
        if any(p["domain"] == "chinese" for p in wanted) and spec.name != cfg.build.chinese_model:
            wanted = [p for p in wanted if p["domain"] != "chinese"]  # Chinese prompts: the named model only
        done = done_keys(stage, lambda r: r["prompt_id"])
        todo = [p for p in wanted if p["id"] not in done]
        log(f"sample {spec.name}: {len(wanted)} prompts in shard {shard[0]}/{shard[1]}, {len(done & {p['id'] for p in wanted})} done, "
            f"{len(todo)} to do")
        if not todo:
            continue
        llm = _llm(spec, cfg)
        t0, n_tokens, n_prompts = time.time(), 0, 0
        step = cfg.vllm.batch_prompts
        for start in range(0, len(todo), step):
            batch = todo[start:start + step]
            params = [SamplingParams(n=cfg.samples[p["domain"]], temperature=spec.temperature, top_p=spec.top_p,
                                     repetition_penalty=spec.repetition_penalty, max_tokens=spec.max_tokens,
                                     seed=request_seed(cfg.seed, spec.name, p["id"])) for p in batch]
            outputs = llm.chat([p["messages"] for p in batch], sampling_params=params, use_tqdm=False)
            rows = []
            for p, out in zip(batch, outputs):
                for i, c in enumerate(out.outputs):
                    rows.append({"prompt_id": p["id"], "model": spec.name, "sample": i, "text": c.text,
                                 "num_tokens": len(c.token_ids), "finish_reason": c.finish_reason})
                    n_tokens += len(c.token_ids)
            write_jsonl_atomic(stage / part_name([p["id"] for p in batch], f"{shard[0]}of{shard[1]}-"), rows)
            n_prompts += len(batch)
            dt = time.time() - t0
            log(f"  {spec.name}: {n_prompts}/{len(todo)} prompts, {n_prompts / dt:.2f} prompts/s, "
                f"{n_tokens / dt:.1f} generated tokens/s")
        stats[spec.name] = {"prompts": n_prompts, "tokens": n_tokens, "seconds": time.time() - t0}
        del llm
        gc.collect()
        _free_accelerator()
    return stats


def _free_accelerator() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
