"""Scoring never dies on a response longer than the reward model reads: `reward.overlong` skip (no score, counted)
or truncate (scored on the first max_length tokens, marked), on both backends. Reference scores come from
transformers' LlamaForSequenceClassification on ids from the tokenizer's own chat-template tokenisation."""

import json

import pytest
import torch
from transformers import AutoTokenizer, LlamaForSequenceClassification

from data_pipeline import config as config_lib
from data_pipeline.build import build
from data_pipeline.score import OVERLONG, score
from data_pipeline.store import read_parts
from fusejax.tiny import tiny_reward_model

CONTEXT = 512  # the tiny reward model's max_position_embeddings
PROMPTS = [
    {"id": "multi", "dataset": "d", "domain": "instruction",
     "messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
                  {"role": "user", "content": "Another one?"}]},
    {"id": "single", "dataset": "d", "domain": "instruction",
     "messages": [{"role": "user", "content": "Write a haiku about the sea."}]},
]
RESPONSES = {("multi", 0): "Green.", ("multi", 1): "Red, like a fox.", ("single", 0): "Waves fold into foam.",
             ("single", 1): "The sea, the sea. " * 120}  # the last one is far over 512 tokens


@pytest.fixture(scope="module")
def rm(tmp_path_factory):
    path = tiny_reward_model(tmp_path_factory.mktemp("rm") / "rm")
    tok = AutoTokenizer.from_pretrained(path)
    model = LlamaForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()

    def reference(prompt_id, response, limit=None):
        messages = next(p for p in PROMPTS if p["id"] == prompt_id)["messages"]
        ids = tok.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=True,
                                      return_dict=False)
        with torch.no_grad():
            return len(ids), model(torch.tensor([ids[:limit]])).logits[0, 0].item()

    return {"path": str(path), "reference": reference}


def _out(tmp_path):
    (tmp_path / "select").mkdir(parents=True)
    (tmp_path / "select" / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    (tmp_path / "sample" / "m").mkdir(parents=True)
    (tmp_path / "sample" / "m" / "part-x.jsonl").write_text("".join(
        json.dumps({"prompt_id": p, "model": "m", "sample": s, "text": t, "num_tokens": 1, "finish_reason": "stop"})
        + "\n" for (p, s), t in RESPONSES.items()))
    return tmp_path


def _cfg(rm, backend, overlong):
    return config_lib.PipelineConfig(
        datasets=[config_lib.DatasetSpec(name="d", source="x", domain="instruction", prompt_field="q")],
        reward=config_lib.RewardSpec(path=rm["path"], backend=backend, trust_remote_code=False, dtype="float32",
                                     overlong=overlong),
        build=config_lib.BuildSpec(sft_fraction={"instruction": 1.0}),
        vllm=config_lib.VLLMSpec(enforce_eager=True, kv_cache_memory_bytes=1 << 30))


@pytest.mark.parametrize("backend,overlong", [("transformers", "skip"), ("transformers", "truncate"),
                                              ("vllm", "truncate")])
def test_overlong_responses_do_not_stop_scoring(rm, tmp_path, backend, overlong):
    out = _out(tmp_path)
    stats = score(_cfg(rm, backend, overlong), out, log=lambda *_: None)
    rows = {(r["prompt_id"], r["sample"]): r for r in read_parts(out / "score")}
    assert set(rows) == set(RESPONSES)
    for key, text in RESPONSES.items():
        n, full = rm["reference"](key[0], text)
        r = rows[key]
        if n <= CONTEXT:  # multi-turn prompts are scored with the whole conversation
            assert r["score"] == pytest.approx(full, abs=1e-4) and set(r) == {"prompt_id", "model", "sample",
                                                                               "score"}
        elif overlong == "skip":
            assert r["score"] is None and r["skipped"] == OVERLONG and r["tokens"] == n
        else:
            assert r["truncated"] is True and r["tokens"] == n
            assert r["score"] == pytest.approx(rm["reference"](key[0], text, CONTEXT)[1], abs=1e-4)
    assert (stats["max_length"], stats[{"skip": "skipped", "truncate": "truncated"}[overlong]]) == (CONTEXT, 1)
    if overlong == "skip":  # build leaves the unscored response out and says why
        summary = build(_cfg(rm, backend, overlong), out, log=lambda *_: None)
        assert summary["responses_not_used"] == {f"no reward score: {OVERLONG}": 1}
        assert summary["sft"] == 2
