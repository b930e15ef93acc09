"""Stage 2, sample: several responses per prompt from each source model with vLLM (offline `LLM.chat`).

Output rows {"prompt_id", "model", "sample", "text", "num_tokens", "finish_reason"} in part files under
OUT/sample/<model>/. One source model in memory at a time. Each prompt has its own sampling seed derived from
(seed, model, prompt id), so results do not depend on batching, sharding or restarts. Multi-turn prompts (HelpSteer2)
are continued as conversations. A dataset's own responses (select writes them as OUT/sample/<model>/part-dataset-*,
finish_reason "dataset") sit beside the sampled ones and go through score, verify and build the same way.
A prompt longer than the model's context gets one placeholder row (finish_reason "prompt too long", skipped by the
later stages, counted by build) instead of failing its whole batch. The engine comes from
`data_pipeline.engine.make_llm` (on CPU: no chunked prefill, see there).
"""

from __future__ import annotations

import gc
import hashlib
import time
from pathlib import Path

from data_pipeline.config import ModelSpec, PipelineConfig
from data_pipeline.store import done_keys, part_name, read_jsonl, read_parts, shard_of, write_jsonl_atomic


PROMPT_TOO_LONG = "prompt too long"  # finish_reason of the placeholder row for a prompt over the model's context


def prompt_length(tokenizer, messages: list[dict]) -> int:
    """Tokens of the prompt as `LLM.chat` renders it (chat template with the generation prompt)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


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
    responses = [r for r in read_parts(out_dir / "sample") if shard_of(r["prompt_id"], shard[1]) == shard[0]
                 and r["finish_reason"] != PROMPT_TOO_LONG]
    done = done_keys(out_dir / stage, response_key)
    return prompts, sorted((r for r in responses if response_key(r) not in done), key=response_key), len(responses)


def write_response_part(stage_dir: Path, rows: list[dict], shard: tuple[int, int]) -> None:
    names = ["|".join(map(str, response_key(r))) for r in rows]
    write_jsonl_atomic(stage_dir / part_name(names, f"{shard[0]}of{shard[1]}-"), rows)


def source_llm(spec: ModelSpec, cfg: PipelineConfig):
    """The source model's vLLM engine."""
    from data_pipeline.engine import make_llm

    return make_llm(spec.path, seed=cfg.seed, dtype=spec.dtype, tensor_parallel_size=spec.tensor_parallel_size,
                    enforce_eager=cfg.vllm.enforce_eager, gpu_memory_utilization=cfg.vllm.gpu_memory_utilization,
                    kv_cache_memory_bytes=cfg.vllm.kv_cache_memory_bytes, max_model_len=spec.max_model_len)


def model_prompts(cfg: PipelineConfig, spec: ModelSpec, prompts: list[dict], shard: tuple[int, int]) -> list[dict]:
    """The prompts `spec` samples in this shard: those of its domains; Chinese ones only for build.chinese_model."""
    wanted = [p for p in prompts if p["domain"] in spec.domains and shard_of(p["id"], shard[1]) == shard[0]]
    if spec.name != cfg.build.chinese_model:
        wanted = [p for p in wanted if p["domain"] != "chinese"]
    return wanted


def sample_batch(llm, cfg: PipelineConfig, spec: ModelSpec, batch: list[dict]) -> list[dict]:
    """One unit's rows: `samples[domain]` responses per prompt, each prompt with its own seed; a prompt longer than
    the engine's context gets one placeholder row (finish_reason PROMPT_TOO_LONG). The single-process loop below and
    the Ray replicas (data_pipeline/distributed.py) both run this."""
    from vllm import SamplingParams

    context, tokenizer = llm.model_config.max_model_len, llm.get_tokenizer()
    # vLLM rejects a whole call when one prompt does not fit the context: leave such prompts out, recorded
    fits = [p for p in batch if prompt_length(tokenizer, p["messages"]) < context]
    params = [SamplingParams(n=cfg.samples[p["domain"]], temperature=spec.temperature, top_p=spec.top_p,
                             repetition_penalty=spec.repetition_penalty, max_tokens=spec.max_tokens,
                             seed=request_seed(cfg.seed, spec.name, p["id"])) for p in fits]
    outputs = llm.chat([p["messages"] for p in fits], sampling_params=params, use_tqdm=False) if fits else []
    rows = [{"prompt_id": p["id"], "model": spec.name, "sample": i, "text": c.text, "num_tokens": len(c.token_ids),
             "finish_reason": c.finish_reason} for p, out in zip(fits, outputs) for i, c in enumerate(out.outputs)]
    fitting = {p["id"] for p in fits}
    return rows + [{"prompt_id": p["id"], "model": spec.name, "sample": 0, "text": "", "num_tokens": 0,
                    "finish_reason": PROMPT_TOO_LONG} for p in batch if p["id"] not in fitting]


def sample(cfg: PipelineConfig, out_dir: Path, shard: tuple[int, int] = (0, 1), log=print) -> dict:
    from data_pipeline import engine  # noqa: F401  (picks vLLM's platform before vllm is imported)

    prompts = load_prompts(out_dir)
    stats = {}
    for spec in cfg.models:
        stage = out_dir / "sample" / spec.name
        wanted = model_prompts(cfg, spec, prompts, shard)
        done = done_keys(stage, lambda r: r["prompt_id"])
        todo = [p for p in wanted if p["id"] not in done]
        log(f"sample {spec.name}: {len(wanted)} prompts in shard {shard[0]}/{shard[1]}, {len(done & {p['id'] for p in wanted})} done, "
            f"{len(todo)} to do")
        if not todo:
            continue
        llm = source_llm(spec, cfg)
        context = llm.model_config.max_model_len
        t0, n_tokens, n_prompts, n_long = time.time(), 0, 0, 0
        step = cfg.vllm.batch_prompts
        for start in range(0, len(todo), step):
            batch = todo[start:start + step]
            rows = sample_batch(llm, cfg, spec, batch)
            n_tokens += sum(r["num_tokens"] for r in rows)
            n_long += sum(r["finish_reason"] == PROMPT_TOO_LONG for r in rows)
            write_jsonl_atomic(stage / part_name([p["id"] for p in batch], f"{shard[0]}of{shard[1]}-"), rows)
            n_prompts += len(batch)
            dt = time.time() - t0
            log(f"  {spec.name}: {n_prompts}/{len(todo)} prompts, {n_prompts / dt:.2f} prompts/s, "
                f"{n_tokens / dt:.1f} generated tokens/s, ETA {(len(todo) - n_prompts) * dt / n_prompts:.0f}s"
                + (f", {n_long} prompts longer than the {context}-token context skipped" if n_long else ""))
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
