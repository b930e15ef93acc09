"""Select on the datasets as they really are: one row per dataset in its real layout (the datasets' cards and viewers;
LeetCodeDataset from real rows), run through the recipe config itself (configs/data/fusechat3.yaml)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from data_pipeline import config as config_lib
from data_pipeline.select import helpsteer2_messages, instruction_assertions, Drop, select
from data_pipeline.store import read_parts
from fusejax.models.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
LEETCODE = ROOT.parent / "shared" / "data" / "datasets" / "leetcode-LeetCodeDataset-v0.2.0-train.head300.jsonl"
needs_leetcode = pytest.mark.skipif(not LEETCODE.is_file(), reason=f"real LeetCodeDataset rows not found ({LEETCODE})")

ULTRAFEEDBACK = {
    "source": "evol_instruct", "instruction": "Describe a quiet morning in a mountain village in three sentences.",
    "models": ["gpt-4", "llama-2-13b-chat"],
    "completions": [{"annotations": {"helpfulness": {"Rating": "5", "Rationale": "..."}},
                     "critique": "Clear and vivid.", "custom_system_prompt": "You are a helpful assistant.",
                     "fine-grained_score": 4.75, "model": "gpt-4", "overall_score": 8.5,
                     "principle": "helpfulness", "response": "Mist lifts from the roofs..."}],
    "correct_answers": ["None"], "incorrect_answers": ["None"]}
MAGPIE_PRO_DPO = {
    "uuid": "0b5c1f7e-7d2c-5d5e-9a6b-7a2f0c0f4f11",
    "instruction": "I'm planning a weekend trip to Lisbon. What neighbourhoods should I stay in?",
    "gen_input_configs": {"temperature": 1.0, "top_p": 1.0, "input_generator": "meta-llama/Meta-Llama-3-70B-Instruct",
                          "seed": None, "pre_query_template": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"},
    "intent": "The user wants travel advice.", "knowledge": "Lisbon's neighbourhoods.", "difficulty": "easy",
    "input_quality": "good", "quality_explanation": "Clear and specific.", "task_category": "Advice seeking",
    "input_length": 78, "responses": ["Alfama is ...", "Baixa is ...", "Chiado ...", "Bairro Alto ...", "Belem ..."],
    "gen_response_configs": {"prompt": "...", "temperature": 0.8, "top_p": 0.9, "repetition_penalty": 1.0,
                             "max_tokens": 4096, "stop_tokens": ["<|eot_id|>"], "output_generator": "x"},
    "rewards_armorm": [{"score": 0.171}, {"score": 0.168}, {"score": 0.165}, {"score": 0.172}, {"score": 0.16}],
    "chosen": [{"content": "I'm planning ...", "role": "user"}, {"content": "Bairro Alto ...", "role": "assistant"}],
    "rejected": [{"content": "I'm planning ...", "role": "user"}, {"content": "Belem ...", "role": "assistant"}]}
HELPSTEER2_TURNS = ("Give me three ideas for a child's birthday party.",
                    "1. A picnic in the park.\n2. A treasure hunt at home.\n3. A dance party.",
                    "Make the second one work for twelve children in a small flat.")
HELPSTEER2 = [
    {"prompt": f"{HELPSTEER2_TURNS[0]}\n<extra_id_1>Assistant\n{HELPSTEER2_TURNS[1]}\n<extra_id_1>User\n"
               f"{HELPSTEER2_TURNS[2]}",
     "response": "Split the children into teams...", "helpfulness": 3, "correctness": 3, "coherence": 4,
     "complexity": 1, "verbosity": 2},
    # HelpSteer2 has two rows (responses) per prompt: the second is the same prompt
    {"prompt": f"{HELPSTEER2_TURNS[0]}\n<extra_id_1>Assistant\n{HELPSTEER2_TURNS[1]}\n<extra_id_1>User\n"
               f"{HELPSTEER2_TURNS[2]}",
     "response": "Hide clues in each room...", "helpfulness": 2, "correctness": 2, "coherence": 3,
     "complexity": 1, "verbosity": 1},
    {"prompt": "Write a short thank-you note to a neighbour who watered my plants.", "response": "Dear ...",
     "helpfulness": 4, "correctness": 4, "coherence": 4, "complexity": 1, "verbosity": 1}]
OPENMATH = {
    "problem": "A bakery sells muffins in boxes of 6. How many boxes are needed for 70 muffins?",
    "generated_solution": "Since $70 = 6 \\cdot 11 + 4$, eleven boxes hold 66 muffins and one more box is needed "
                          "for the remaining 4. So the answer is $\\boxed{12}$.",
    "expected_answer": "12", "problem_source": "augmented_gsm8k"}
SELF_OSS_GOOD = {
    "fingerprint": None, "sha1": "3c5c2a9c8f0e1f4b7d0e6a5b4c3d2e1f0a9b8c7d",
    "seed": "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))",
    "response": "## Reasoning\nClamp with min and max.\n\n## Implementation\n```python\ndef clamp(x, lo, hi):\n"
                "    return max(lo, min(x, hi))\n```\n\n## Tests\n```python\nassert clamp(5, 0, 3) == 3\n```",
    "concepts": ["min and max", "function definition"],
    "prompt": "<s>[INST] Extract key programming concepts from the code snippet ... [/INST]",
    "instruction": "Write a Python function `clamp(x, lo, hi)` that limits `x` to the range `[lo, hi]`.\n\n"
                   "Your code should pass the following assertions:\n```python\nassert clamp(5, 0, 3) == 3\n"
                   "assert clamp(-1, 0, 3) == 0\nassert clamp(2, 0, 3) == 2\n```",
    "id": 1812}
SELF_OSS_NO_TESTS = dict(SELF_OSS_GOOD, id=1813, instruction="Create a Python function to parse a CSV line into "
                         "fields, honouring double quotes.")
SELF_OSS_NO_ASSERT = dict(SELF_OSS_GOOD, id=1814, instruction="Write a function `greet(name)`.\n\nYour code should "
                          "pass the following assertion:\n```python\nprint(greet('Ada'))\n```")
SELF_OSS_TWO_BLOCKS = dict(SELF_OSS_GOOD, id=1815, instruction="Write `inc(x)`.\n\nYour code should pass the "
                           "following assertion:\n```python\nassert inc(1) == 2\n```\nYour code should pass the "
                           "following assertion:\n```python\nassert inc(2) == 3\n```")
ALPACA_ZH = [{"instruction": "将下面的句子翻译成英文。", "input": "我喜欢在公园里散步。", "output": "I like walking in the park."},
             {"instruction": "给出三个保持健康的建议。", "input": "", "output": "1. 均衡饮食 ..."}]
MAGPIE_QWEN2_ZH = {
    "uuid": "5e0b6a3c-2f1d-5a8e-b9c4-1d2e3f4a5b6c", "model": "Qwen/Qwen2-72B-Instruct",
    "gen_input_configs": {"temperature": 1.0, "top_p": 0.99, "input_generator": "Qwen/Qwen2-72B-Instruct",
                          "seed": None, "pre_query_template": "<|im_start|>user\n"},
    "instruction": "请介绍一下长城的历史。", "response": "长城始建于春秋战国时期……",
    "conversations": [{"from": "human", "value": "请介绍一下长城的历史。"}, {"from": "gpt", "value": "长城始建于春秋战国时期……"}],
    "task_category": "Information seeking", "other_task_category": ["Knowledge"], "difficulty": "easy",
    "input_quality": "good", "llama_guard_2": "safe", "instruct_reward": 2.9, "language": "ZH"}


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(path)


def _recipe(tmp_path: Path, sources: dict[str, list[dict] | Path], **changes) -> config_lib.PipelineConfig:
    """configs/data/fusechat3.yaml with each dataset's source replaced by local rows."""
    raw = yaml.safe_load((ROOT / "configs" / "data" / "fusechat3.yaml").read_text())
    datasets = []
    for d in raw["datasets"]:
        if d["name"] not in sources:
            continue
        src = sources[d["name"]]
        d["source"] = str(src) if isinstance(src, Path) else _write(tmp_path / f"{d['name']}.jsonl", src)
        d.update(changes.get(d["name"], {}))
        datasets.append(d)
    raw["datasets"] = datasets
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return config_lib.load(path)


ALL_BUT_LEETCODE = {
    "ultrafeedback": [ULTRAFEEDBACK], "magpie-pro-dpo-100k": [MAGPIE_PRO_DPO], "helpsteer2": HELPSTEER2,
    "openmathinstruct-2": [OPENMATH],
    "self-oss-instruct-sc2": [SELF_OSS_GOOD, SELF_OSS_NO_TESTS, SELF_OSS_NO_ASSERT, SELF_OSS_TWO_BLOCKS],
    "alpaca-gpt4-zh": ALPACA_ZH, "magpie-qwen2-pro-200k-chinese": [MAGPIE_QWEN2_ZH]}


@pytest.fixture(scope="module")
def selected(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("select")
    cfg = _recipe(tmp, ALL_BUT_LEETCODE)
    out = tmp / "out"
    report = select(cfg, out, log=lambda *_: None)
    prompts = [json.loads(x) for x in (out / "select" / "prompts.jsonl").read_text().splitlines()]
    return {"report": report, "prompts": prompts, "out": out}


def _by_dataset(selected, name):
    return [p for p in selected["prompts"] if p["dataset"] == name]


def test_single_turn_sets_keep_the_prompt_as_the_dataset_has_it(selected):
    (uf,) = _by_dataset(selected, "ultrafeedback")
    assert uf["messages"] == [{"role": "user", "content": ULTRAFEEDBACK["instruction"]}]
    (mp,) = _by_dataset(selected, "magpie-pro-dpo-100k")
    assert mp["messages"] == [{"role": "user", "content": MAGPIE_PRO_DPO["instruction"]}]
    (zh,) = _by_dataset(selected, "magpie-qwen2-pro-200k-chinese")
    assert zh["messages"] == [{"role": "user", "content": "请介绍一下长城的历史。"}]
    assert selected["report"]["ultrafeedback"] == {"rows": 1, "kept": 1, "dropped": {}}


def test_helpsteer2_turns_become_a_conversation(selected):
    rows = _by_dataset(selected, "helpsteer2")
    multi = [p for p in rows if len(p["messages"]) > 1]
    assert len(rows) == 2 and len(multi) == 1
    assert multi[0]["messages"] == [{"role": "user", "content": HELPSTEER2_TURNS[0]},
                                    {"role": "assistant", "content": HELPSTEER2_TURNS[1]},
                                    {"role": "user", "content": HELPSTEER2_TURNS[2]}]
    assert not any("<extra_id_1>" in m["content"] for p in rows for m in p["messages"])
    assert selected["report"]["helpsteer2"] == {"rows": 3, "kept": 2, "dropped": {"exact duplicate": 1}}


def test_helpsteer2_split_edges():
    assert helpsteer2_messages("Hi there") == [{"role": "user", "content": "Hi there"}]
    with pytest.raises(Drop, match="no final user turn"):
        helpsteer2_messages("Q\n<extra_id_1>Assistant\nA")
    with pytest.raises(Drop, match="do not alternate"):
        helpsteer2_messages("Q\n<extra_id_1>User\nQ2")


def test_alpaca_zh_keeps_its_input(selected):
    contents = sorted(p["messages"][0]["content"] for p in _by_dataset(selected, "alpaca-gpt4-zh"))
    assert contents == sorted(["将下面的句子翻译成英文。\n我喜欢在公园里散步。", "给出三个保持健康的建议。"])


def test_openmath_gold_answer_and_its_own_405b_response(selected):
    (p,) = _by_dataset(selected, "openmathinstruct-2")
    assert p["messages"] == [{"role": "user", "content": OPENMATH["problem"]}] and p["answer"] == "12"
    rows = list(read_parts(selected["out"] / "sample" / "llama-3.1-405b-instruct"))
    assert rows == [{"prompt_id": p["id"], "model": "llama-3.1-405b-instruct", "sample": 0,
                     "text": OPENMATH["generated_solution"], "num_tokens": None, "finish_reason": "dataset"}]
    assert selected["report"]["openmathinstruct-2"]["dataset_responses"] == {"model": "llama-3.1-405b-instruct",
                                                                             "count": 1}
    from data_pipeline.verify import math_correct  # the dataset's response is verified like a sampled one

    assert math_correct(rows[0]["text"], p["answer"])
    assert not math_correct(rows[0]["text"].replace("boxed{12}", "boxed{11}"), p["answer"])


def test_self_oss_instruct_tests_come_from_the_instruction(selected):
    (p,) = _by_dataset(selected, "self-oss-instruct-sc2")
    assert p["messages"] == [{"role": "user", "content": SELF_OSS_GOOD["instruction"]}]  # shown as the dataset has it
    assert p["tests"] == {"kind": "asserts", "entry_point": None, "preamble": "",
                          "tests": "assert clamp(5, 0, 3) == 3\nassert clamp(-1, 0, 3) == 0\nassert clamp(2, 0, 3) == 2\n"}
    assert selected["report"]["self-oss-instruct-sc2"] == {"rows": 4, "kept": 1, "dropped": {
        "no tests: no assertion block in the instruction": 1, "no tests: assertion block has no assert": 1,
        "no tests: several assertion blocks in the instruction": 1}}
    # the dataset's own (execution-filtered) response passes the extracted asserts; a wrong one does not
    solution = SELF_OSS_GOOD["response"].split("```python\n")[1].split("```")[0]
    assert _runs(solution + "\n" + p["tests"]["tests"])
    assert not _runs(solution.replace("max(lo, min(x, hi))", "min(x, hi)") + "\n" + p["tests"]["tests"])


def test_instruction_assertions_edges():
    assert instruction_assertions("f.\n\nYour code should pass the following assertion:\n```\nassert f() == 1\n```") \
        == "assert f() == 1\n"
    with pytest.raises(Drop, match="not followed by a fenced code block"):
        instruction_assertions("f.\nYour code should pass the following assertion: assert f() == 1")
    with pytest.raises(Drop, match="does not parse"):
        instruction_assertions("f.\nYour code should pass the following assertion:\n```python\nassert (\n```")


def _runs(program: str) -> bool:
    return subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60).returncode == 0


@needs_leetcode
def test_leetcode_rows_with_their_check_tests(tmp_path):
    real = [json.loads(x) for x in LEETCODE.read_text().splitlines()]
    cfg = _recipe(tmp_path, {"leetcode": LEETCODE})
    report = select(cfg, tmp_path / "out", log=lambda *_: None)
    assert report["leetcode"] == {"rows": 300, "kept": 300, "dropped": {}}
    prompts = {p["messages"][0]["content"]: p for p in
               map(json.loads, (tmp_path / "out" / "select" / "prompts.jsonl").read_text().splitlines())}
    for row in real:
        p = prompts[row["query"]]  # the problem with its starter code, as the dataset has it
        assert p["messages"] == [{"role": "user", "content": row["query"]}]
        assert p["tests"] == {"kind": "check", "tests": row["test"], "entry_point": row["entry_point"],
                              "preamble": row["prompt"]}
    # Independent check of the wiring: the dataset's reference harness (preamble + completion + test +
    # check(entry_point)) built from our prompt rows passes with the reference completions, and fails without them.
    script = textwrap.dedent("""
        import json, sys
        passed = 0
        for spec, completion in json.load(sys.stdin):
            program = spec["preamble"] + "\\n" + completion + "\\n" + spec["tests"] + f"\\ncheck({spec['entry_point']})\\n"
            try:
                exec(compile(program, "<leetcode>", "exec"), {"__name__": "solution"})
                passed += 1
            except BaseException:
                pass
        print(passed)
    """)
    pairs = [(prompts[r["query"]]["tests"], r["completion"]) for r in real]
    run = lambda items: int(subprocess.run([sys.executable, "-c", script], input=json.dumps(items), text=True,
                                           capture_output=True, timeout=300, check=True).stdout)
    # 3 of the 300 reference solutions fail here: two import sortedcontainers (not installed), word-ladder-ii's
    # order-sensitive check
    assert run(pairs) >= 297
    assert run([(spec, "") for spec, _ in pairs]) == 0


def test_a_field_no_row_has_is_an_error(tmp_path):
    # the old recipe read self-oss-instruct's tests from a `tests` column, which does not exist: 0 prompts silently
    cfg = _recipe(tmp_path, {"self-oss-instruct-sc2": [SELF_OSS_GOOD]},
                  **{"self-oss-instruct-sc2": {"tests": {"kind": "asserts", "field": "tests"}}})
    with pytest.raises(ConfigError, match=r"dataset 'self-oss-instruct-sc2': field 'tests' is in none of its 1 rows"):
        select(cfg, tmp_path / "out", log=lambda *_: None)


def test_a_dataset_with_zero_prompts_is_an_error(tmp_path):
    cfg = _recipe(tmp_path, {"self-oss-instruct-sc2": [SELF_OSS_NO_TESTS, SELF_OSS_NO_ASSERT]})
    with pytest.raises(ConfigError, match=r"dataset 'self-oss-instruct-sc2' yields no prompts from 2 rows .*"
                                          r"no assertion block"):
        select(cfg, tmp_path / "out", log=lambda *_: None)


def test_config_rejects_a_dataset_response_named_like_a_sampled_model(tmp_path):
    with pytest.raises(ConfigError, match="also a sampled model"):
        _recipe(tmp_path, {"openmathinstruct-2": [OPENMATH]}, **{"openmathinstruct-2": {
            "responses": {"field": "generated_solution", "model": "qwen2.5-math-72b-instruct"}}})
    with pytest.raises(ConfigError, match="kind check needs entry_point_field"):
        _recipe(tmp_path, {"leetcode": [{"query": "q", "test": "t"}]},
                **{"leetcode": {"tests": {"kind": "check", "field": "test"}}})


def test_recipe_sources_per_domain_follow_the_card():
    cfg = config_lib.load(ROOT / "configs" / "data" / "fusechat3.yaml")
    general = {"gemma-2-27b-it", "mistral-large-2407", "qwen2.5-72b-instruct", "llama-3.1-70b-instruct"}
    sampled = {d: {m.name for m in cfg.models if d in m.domains} for d in ("instruction", "math", "code")}
    assert sampled == {"instruction": general, "math": {"qwen2.5-math-72b-instruct"}, "code": general}
    assert cfg.build.chinese_model == "qwen2.5-72b-instruct" and cfg.samples["chinese"] == 1
    own = {d.name: (d.responses.field, d.responses.model) for d in cfg.datasets if d.responses}
    assert own == {"openmathinstruct-2": ("generated_solution", "llama-3.1-405b-instruct")}
    assert {d.name: d.source for d in cfg.datasets}["leetcode"] == "newfacade/LeetCodeDataset"
