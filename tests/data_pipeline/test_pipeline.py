"""The pipeline end to end with the real vLLM (CPU build) on tiny models: reproducibility, shard-and-merge, resume
after kill -9, reward scores against transformers, outputs usable by training."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from data_pipeline import config as config_lib
from data_pipeline.cli import main as cli
from data_pipeline.store import read_parts
from fusejax.tiny import tiny_pipeline_assets

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    a = tiny_pipeline_assets(root / "assets")
    cfg = yaml.safe_load((ROOT / "configs" / "data" / "tiny.yaml").read_text().replace(
        "runs/tiny/assets/pipeline", str(root / "assets")))
    for m in cfg["models"]:
        m["max_tokens"] = 16
    cfg["vllm"]["batch_prompts"] = 4
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    full = root / "full"
    assert cli(["run", "--config", str(path), "--out", str(full)]) == 0
    return {"root": root, "config": path, "full": full, "assets": a}


def _rows(stage_dir, key=lambda r: (r["prompt_id"], r["model"], r["sample"])):
    return sorted((dict(r) for r in read_parts(stage_dir)), key=key)


def test_outputs_exist_and_train(setup):
    full = setup["full"]
    select = json.loads((full / "select" / "report.json").read_text())
    assert select["tiny-instruction"]["dropped"] == {"math prompt": 1, "code prompt": 1, "normalised duplicate": 1,
                                                     "bad row: missing or non-text field 'instruction'": 1}
    summary = json.loads((full / "build" / "summary.json").read_text())
    assert summary["sft"] > 0 and summary["dpo"] > 0
    for png in ("rm_scores.png", "dpo_gap.png", "sft_wins.png"):
        assert (full / "report" / png).stat().st_size > 1000
    samples = _rows(full / "sample")
    by_model = {m: [r for r in samples if r["model"] == m] for m in ("source-a", "source-b")}
    # 5 samples per instruction/math prompt, 8 per code prompt, 1 per Chinese prompt (source-b only)
    prompts = {json.loads(x)["id"]: json.loads(x)["domain"] for x in (full / "select" / "prompts.jsonl").open()}
    want = {"instruction": 5, "math": 5, "code": 8, "chinese": 1}
    for m, rows in by_model.items():
        counts = {}
        for r in rows:
            counts[r["prompt_id"]] = counts.get(r["prompt_id"], 0) + 1
        for pid, n in counts.items():
            assert n == want[prompts[pid]]
        assert ("chinese" in {prompts[p] for p in counts}) == (m == "source-b")
    # the built sets load with `datasets` and tokenise for training without a single skip
    import datasets
    from transformers import AutoTokenizer

    from fusejax.training.data import ChatTokenizer, DataReport, read_rows, tokenize_dpo, tokenize_sft

    assert len(datasets.load_dataset("json", data_files=str(full / "build" / "dpo.jsonl"), split="train")) == \
        summary["dpo"]
    chat = ChatTokenizer(AutoTokenizer.from_pretrained(setup["assets"]["source_a"]))
    for name, fn in (("sft", tokenize_sft), ("dpo", tokenize_dpo)):
        report = DataReport()
        fn(read_rows([str(full / "build" / f"{name}.jsonl")], report=report), chat, 4096, report)
        assert report.used == report.rows and not report.skipped


def test_shards_merge_into_the_same_result(setup):
    out = setup["root"] / "sharded"
    cfg = str(setup["config"])
    assert cli(["select", "--config", cfg, "--out", str(out)]) == 0
    for stage in ("sample", "score", "verify"):
        for shard in ("1/2", "0/2"):
            assert cli([stage, "--config", cfg, "--out", str(out), "--shard", shard]) == 0
    for stage in ("sample", "score", "verify"):
        assert _rows(out / stage) == _rows(setup["full"] / stage), stage
    assert cli(["build", "--config", cfg, "--out", str(out)]) == 0
    assert (out / "build" / "dpo.jsonl").read_text() == (setup["full"] / "build" / "dpo.jsonl").read_text()


def test_resume_after_kill_9(setup):
    out = setup["root"] / "killed"
    cfg = str(setup["config"])
    assert cli(["select", "--config", cfg, "--out", str(out)]) == 0
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "data_pipeline", "sample", "--config", cfg, "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not list((out / "sample").glob("*/part-*.jsonl")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _rows(out / "sample")
    assert len(partial) < len(_rows(setup["full"] / "sample")), "killed too late to test resumption"
    for p in (out / "sample").glob("*/part-*.jsonl"):
        for line in p.read_text().splitlines():
            json.loads(line)  # every file under a final name is complete
    assert cli(["sample", "--config", cfg, "--out", str(out)]) == 0
    assert _rows(out / "sample") == _rows(setup["full"] / "sample")  # nothing lost, nothing duplicated


def test_reward_scores_match_transformers_without_double_bos(setup):
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    from data_pipeline.score import rm_token_ids

    rm_dir = setup["assets"]["reward"]
    tok = AutoTokenizer.from_pretrained(rm_dir)
    model = LlamaForSequenceClassification.from_pretrained(rm_dir, dtype=torch.float32).eval()
    prompts = {json.loads(x)["id"]: json.loads(x) for x in (setup["full"] / "select" / "prompts.jsonl").open()}
    texts = {(r["prompt_id"], r["model"], r["sample"]): r["text"] for r in read_parts(setup["full"] / "sample")}
    rows = _rows(setup["full"] / "score")[:12]
    for r in rows:
        ids = rm_token_ids(tok, prompts[r["prompt_id"]]["messages"], texts[(r["prompt_id"], r["model"], r["sample"])],
                           4096)
        assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0, 0].item()
        assert abs(r["score"] - ref) < 1e-4


def test_bad_config_is_reported(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  - {name: x, source: x.jsonl, domain: math, prompt_field: q}\n")
    assert cli(["select", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "math datasets need answer_field" in capsys.readouterr().err
    assert cli(["sample", "--config", str(setup_free_config(tmp_path)), "--out", str(tmp_path / "o2")]) == 2
    assert "run the select stage first" in capsys.readouterr().err


def setup_free_config(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text("datasets:\n  - {name: x, source: x.jsonl, domain: instruction, prompt_field: q}\n")
    return p


def test_full_recipe_config_matches_facts():
    cfg = config_lib.load(ROOT / "configs" / "data" / "fusechat3.yaml")
    limits = {d.name: d.limit for d in cfg.datasets}
    assert sum(limits.values()) == 158_667
    assert cfg.samples == {"instruction": 5, "math": 5, "code": 8, "chinese": 1}
    by_name = {m.name: m for m in cfg.models}
    for name in ("gemma-2-27b-it", "mistral-large-2407", "llama-3.1-70b-instruct"):
        assert (by_name[name].temperature, by_name[name].top_p, by_name[name].repetition_penalty) == (0.8, 0.95, 1.0)
    for name in ("qwen2.5-72b-instruct", "qwen2.5-math-72b-instruct"):
        assert (by_name[name].temperature, by_name[name].top_p, by_name[name].repetition_penalty) == (0.7, 0.8, 1.05)
    assert (cfg.build.gap_min, cfg.build.gap_max) == (0.01, 0.1)
    assert cfg.reward.path == "RLHFlow/ArmoRM-Llama3-8B-v0.1"
