"""`fusejax eval-compare` and the YAML/flags configuration of `fusejax eval`."""

from __future__ import annotations

import json

import pytest

from fusejax.eval import compare, evaluate


def _run(tmp_path, name, answers):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": str(i)}) + "\n" for i in range(4)))
    it = iter(answers)
    return evaluate(name, [f"arith={path}", f"copy={path}"], tmp_path / name, label=name,
                    generator=lambda rs: [next(it) for _ in rs])


def test_compare_table_and_plot(tmp_path):
    _run(tmp_path, "before", ["0", "9", "9", "9"] + ["0", "1", "9", "9"])  # 25%, 50%
    _run(tmp_path, "after", ["0", "1", "2", "9"] + ["0", "1", "2", "3"])  # 75%, 100%
    text = compare([tmp_path / "before", tmp_path / "after"], out_dir=tmp_path / "cmp")
    lines = text.splitlines()
    assert lines[0] == "| benchmark | before | after |"
    assert "| arith | 25.0 | 75.0 |" in lines and "| copy | 50.0 | 100.0 |" in lines
    assert lines[-1].endswith("| **37.5** | **87.5** |")
    png = (tmp_path / "cmp" / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_compare_cli_prints_the_table(tmp_path, capsys):
    from fusejax.cli import main

    _run(tmp_path, "a", ["0", "1", "2", "3"] * 2)
    assert main(["eval-compare", str(tmp_path / "a"), "--out", str(tmp_path / "cmp")]) == 0
    assert "| arith | 100.0 |" in capsys.readouterr().out
    assert main(["eval-compare", str(tmp_path / "nothing")]) == 2


def test_config_file_and_flags(tmp_path):
    from fusejax.eval import config as C
    from fusejax.models.config import ConfigError

    cfg = C.load("configs/eval/fuseeval.yaml", {"model": "m", "out": str(tmp_path), "limit": 5,
                                                "engine.max_model_len": 2048, "judge.base_url": None})
    assert cfg.limit == 5 and cfg.engine.max_model_len == 2048 and cfg.max_new_tokens == 2048
    assert len(cfg.benchmarks) == 12 and cfg.judge_config() is None
    with pytest.raises(ConfigError, match="judge: give both base_url and model"):
        C.load("configs/eval/fuseeval.yaml", {"model": "m", "out": "o", "judge.base_url": "http://x/v1"})
    with pytest.raises(ConfigError, match="model is required"):
        C.load("configs/eval/fuseeval.yaml", {"out": "o"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\nout: o\nbenchmarks: [gsm8k]\nlimt: 3\n")
    with pytest.raises(ConfigError, match="limt: unknown key"):
        C.load(bad, {})
    cfg = C.load(None, {"model": "m", "out": "o", "benchmarks": ["gsm8k"], "judge.base_url": "http://h/v1",
                        "judge.model": "gpt-4", "judge.api_key_env": "K"})
    assert cfg.judge_config().describe() == {"base_url": "http://h/v1", "model": "gpt-4", "api_key_env": "K"}
