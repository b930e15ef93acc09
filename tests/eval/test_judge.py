"""The judge round trip against a local OpenAI-compatible server on 127.0.0.1 (real HTTP through the `openai`
client): the prompts that arrive match MT-Bench's judge templates (FastChat's file, read here independently),
ratings and verdicts are parsed, malformed replies are reported, and nothing is regenerated when judging later."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fusejax.eval import evaluate
from fusejax.eval.judge import ALPACA_SYSTEM, ARENA_HARD_SYSTEM, MT_BENCH_PROMPTS
from tests.eval.conftest import read_jsonl

MARK = "<<model answer>>"


def _reply(body: dict) -> dict:
    messages = body["messages"]
    system, user = messages[0]["content"], messages[1]["content"]
    logprobs = None
    if system == ALPACA_SYSTEM:
        # The model's output is the one holding MARK: answer its identifier with probability 0.8.
        first_is_model = user.index(MARK) < user.index("\"model_identifier\": \"M\"")
        mine, other = ("m", "M") if first_is_model else ("M", "m")
        text = mine
        logprobs = {"content": [{"token": mine, "logprob": math.log(0.8), "bytes": None, "top_logprobs": [
            {"token": mine, "logprob": math.log(0.8), "bytes": None},
            {"token": other, "logprob": math.log(0.2), "bytes": None}]}]}
    elif system == ARENA_HARD_SYSTEM:
        if len(messages) > 2:  # the follow-up after a reply without a verdict
            text = "Final verdict: [[A=B]]"
        elif "tie please" in user:
            text = "Both are fine, no label here."
        else:
            a_is_model = user.index(MARK) < user.index("<|The Start of Assistant B's Answer|>")
            text = "My final verdict is: " + ("[[A>>B]]" if a_is_model else "[[B>>A]]")
    elif "MALFORMED" in user:
        text = "A fine answer. I would rate it highly."  # no [[rating]]
    else:
        text = "The answer is helpful. Rating: [[7]]" if "second" not in user else "Rating: [[4]]"
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


@pytest.fixture
def judge_server():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path.endswith("/chat/completions"), self.path
            received.append({"body": body, "auth": self.headers.get("Authorization")})
            data = json.dumps(_reply(body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", received
    server.shutdown()
    thread.join()


def _data_dir(eval_data, tmp_path):
    """MT-Bench questions of three kinds (general, with a reference, one whose answer makes the judge misbehave),
    Arena-Hard questions with a baseline file, AlpacaEval instructions."""
    d = tmp_path / "data"
    d.mkdir()
    questions = read_jsonl(eval_data / "mt-bench-questions.jsonl")
    picked = [next(q for q in questions if q["category"] == c) for c in ("writing", "math", "roleplay")]
    (d / "mt-bench-questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in picked))
    (d / "mt-bench-reference-gpt-4.jsonl").write_text((eval_data / "mt-bench-reference-gpt-4.jsonl").read_text())
    arena = read_jsonl(eval_data / "arena-hard-v0.1-questions.jsonl")[:3]
    (d / "arena-hard-v0.1-questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in arena))
    base = [{"question_id": q["question_id"], "model_id": "gpt-4-0314", "choices": [
        {"index": 0, "turns": [{"content": f"baseline answer {i}" + (" tie please" if i == 2 else "")}]}]}
        for i, q in enumerate(arena)]
    (d / "arena-hard-v0.1-gpt-4-0314.jsonl").write_text("".join(json.dumps(b) + "\n" for b in base))
    alpaca = json.loads((eval_data / "alpaca-eval-gpt4-baseline.json").read_text())[:4]
    (d / "alpaca-eval-gpt4-baseline.json").write_text(json.dumps(alpaca))
    return d, picked


def test_judge_round_trip(eval_data, tmp_path, judge_server, monkeypatch):
    url, received = judge_server
    data, picked = _data_dir(eval_data, tmp_path)
    calls = []

    def generator(requests):
        calls.append(len(requests))
        out = []
        for r in requests:
            turn = sum(m["role"] == "user" for m in r.messages)
            bad = "MALFORMED " if r.messages[0]["content"] == picked[2]["turns"][0] else ""  # the roleplay one
            out.append(f"{MARK} {bad}{'first' if turn == 1 else 'second'} answer")
        return out

    benches = ["mt-bench", "arena-hard", "alpaca-eval"]
    run = tmp_path / "run"
    res = evaluate("m", benches, run, data_dir=data, generator=generator)
    assert {n: e["status"] for n, e in res["benchmarks"].items()} == dict.fromkeys(benches, "not judged")
    assert res["average"] is None and received == []
    n_calls = len(calls)

    monkeypatch.setenv("JUDGE_KEY", "sk-test-123")
    judge = {"base_url": url, "model": "judge-model", "api_key_env": "JUDGE_KEY"}
    res = evaluate("m", benches, run, data_dir=data, generator=generator, judge=judge)
    assert len(calls) == n_calls  # judged the stored generations: nothing regenerated
    assert all(r["auth"] == "Bearer sk-test-123" for r in received)

    # MT-Bench: what arrived is FastChat's template filled in, read from FastChat's own file here.
    prompts = {p["name"]: p for p in read_jsonl(eval_data / "mt-bench-judge-prompts.jsonl")}
    for name, (system, template) in MT_BENCH_PROMPTS.items():
        assert (system, template) == (prompts[name]["system_prompt"], prompts[name]["prompt_template"])
    refs = {r["question_id"]: r["choices"][0]["turns"]
            for r in read_jsonl(eval_data / "mt-bench-reference-gpt-4.jsonl")}
    mt = [r["body"] for r in received if r["body"]["messages"][0]["content"] not in (ARENA_HARD_SYSTEM, ALPACA_SYSTEM)]
    expected = []
    for q in picked:
        bad = "MALFORMED " if q["category"] == "roleplay" else ""
        a1, a2 = f"{MARK} {bad}first answer", f"{MARK} {bad}second answer"
        ref = q["category"] == "math"
        p1 = prompts["single-math-v1" if ref else "single-v1"]
        p2 = prompts["single-math-v1-multi-turn" if ref else "single-v1-multi-turn"]
        args1 = {"question": q["turns"][0], "answer": a1}
        args2 = {"question_1": q["turns"][0], "question_2": q["turns"][1], "answer_1": a1, "answer_2": a2}
        if ref:
            args1["ref_answer_1"] = args2["ref_answer_1"] = refs[q["question_id"]][0]
            args2["ref_answer_2"] = refs[q["question_id"]][1]
        expected += [[{"role": "system", "content": p1["system_prompt"]},
                      {"role": "user", "content": p1["prompt_template"].format(**args1)}],
                     [{"role": "system", "content": p2["system_prompt"]},
                      {"role": "user", "content": p2["prompt_template"].format(**args2)}]]
    assert sorted(json.dumps(b["messages"]) for b in mt) == sorted(json.dumps(m) for m in expected)
    assert all(b["model"] == "judge-model" and b["temperature"] == 0 for b in mt)

    e = res["benchmarks"]["mt-bench"]
    # writing and math: turn 1 rated 7, turn 2 rated 4; roleplay: both replies malformed, excluded and counted.
    assert e["status"] == "scored" and e["malformed_judgments"] == 2
    assert e["rating"] == pytest.approx((7 + 4 + 7 + 4) / 4) and e["score"] == pytest.approx(55.0)
    rows = {r["id"]: r for r in read_jsonl(run / "mt-bench" / "samples.jsonl")}
    roleplay = rows[str(picked[2]["question_id"])]
    assert roleplay["verdict"] is None and "malformed" in roleplay["detail"]
    assert roleplay["response"] == [f"{MARK} MALFORMED first answer", f"{MARK} MALFORMED second answer"]
    assert "I would rate it highly" in roleplay["judge"]["judgments"][0]["reply"]

    # Arena-Hard: the judge always prefers the model strongly (weight 3, both games), except question 3 where the
    # first reply has no label, the follow-up is sent, and the tie counts half: (3 + 3 + 3 + 3 + 0.5 + 0.5) / 14.
    e = res["benchmarks"]["arena-hard"]
    assert e["status"] == "scored" and e["score"] == pytest.approx(100 * 13 / 14)
    followups = [r["body"]["messages"] for r in received if r["body"]["messages"][0]["content"] == ARENA_HARD_SYSTEM
                 and len(r["body"]["messages"]) > 2]
    assert len(followups) == 2 and followups[0][-1]["content"].startswith("continue your judgment")

    # AlpacaEval: preference = P(model's identifier) from the top log-probs = 0.8, whatever the order.
    e = res["benchmarks"]["alpaca-eval"]
    assert e["status"] == "scored" and e["score"] == pytest.approx(80.0)
    firsts = {r["body"]["messages"][1]["content"].index(MARK) < r["body"]["messages"][1]["content"].index('"M"')
              for r in received if r["body"]["messages"][0]["content"] == ALPACA_SYSTEM}
    assert firsts == {True, False}  # both orders occurred (randomised per instruction)

    assert res["average"] == pytest.approx((55.0 + 100 * 13 / 14 + 80.0) / 3)


def test_missing_judge_key_is_one_clear_error(eval_data, tmp_path, monkeypatch):
    from fusejax.eval.judge import JudgeError

    data, _ = _data_dir(eval_data, tmp_path)
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(JudgeError, match="NO_SUCH_KEY"):
        evaluate("m", ["alpaca-eval"], tmp_path / "run", data_dir=data, generator=lambda rs: ["x"] * len(rs),
                 judge={"base_url": "http://127.0.0.1:9/v1", "model": "j", "api_key_env": "NO_SUCH_KEY"})
