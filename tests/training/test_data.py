"""The training reader on the published FuseChat-3.0 layouts: FuseAI/FuseChat-3.0-SFT-Data (ShareGPT
`conversations` of {from, value}, one train.json) and FuseAI/FuseChat-3.0-DPO-Data (`prompt` as messages,
`chosen`/`rejected` as one-message lists). The reference for the response tokens is the tiny tokenizer's chat
template (fusejax.tiny.CHAT_TEMPLATE): each assistant turn is its trimmed text followed by <|eot_id|>."""

import json

import numpy as np
import pytest

from fusejax.tiny import tiny_tokenizer
from fusejax.training.data import ChatTokenizer, DataReport, read_rows, tokenize_dpo, tokenize_sft

SFT_PUBLISHED = [
    {"conversations": [{"from": "human", "value": "Name a primary colour."},
                       {"from": "gpt", "value": "Blue is a primary colour."}],
     "dataset": "ultrafeedback", "source_model": "gemma-2-27b-it"},
    {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "2 + 2?"},
                       {"from": "gpt", "value": "4."}, {"from": "human", "value": "And doubled?"},
                       {"from": "gpt", "value": "8."}],
     "dataset": "openmathinstruct2", "source_model": "Qwen2.5-Math-72B-Instruct"},
]
DPO_PUBLISHED = [
    {"prompt": [{"role": "user", "content": "Suggest a name for a cat."}],
     "chosen": [{"role": "assistant", "content": "Miso, short and warm."}],
     "rejected": [{"role": "assistant", "content": "Cat."}],
     "dataset": "magpie_pro_dpo", "source_model": "Mistral-Large-Instruct-2407"},
]
ROLE = {"human": "user", "gpt": "assistant", "system": "system"}


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    return ChatTokenizer(tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def _decode(chat, ids):
    return chat.tok.decode(ids.tolist(), skip_special_tokens=False)


def test_published_sft_file_trains_on_every_assistant_turn(chat, tmp_path):
    path = tmp_path / "train.json"  # the published file is one JSON list
    path.write_text(json.dumps(SFT_PUBLISHED, ensure_ascii=False, indent=1))
    report = DataReport()
    examples = tokenize_sft(read_rows([str(path)], report=report), chat, 512, report)
    assert (report.rows, report.used, dict(report.skipped)) == (2, 2, {})
    for row, ex in zip(SFT_PUBLISHED, examples):
        replies = [m["value"] for m in row["conversations"] if m["from"] == "gpt"]
        assert _decode(chat, ex["input_ids"][ex["loss_mask"] == 1]) == "".join(r + "<|eot_id|>" for r in replies)
        # the same conversation in the {role, content} schema gives the same example, token for token
        messages = [{"role": ROLE[m["from"]], "content": m["value"]} for m in row["conversations"]]
        (same,) = tokenize_sft([("x", {"messages": messages})], chat, 512, DataReport())
        np.testing.assert_array_equal(ex["input_ids"], same["input_ids"])
        np.testing.assert_array_equal(ex["loss_mask"], same["loss_mask"])


def test_published_dpo_rows(chat, tmp_path):
    path = tmp_path / "dpo.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in DPO_PUBLISHED))
    report = DataReport()
    (ex,) = tokenize_dpo(read_rows([str(path)], report=report), chat, 512, report)
    row = DPO_PUBLISHED[0]
    prompt = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nSuggest a name for a cat.<|eot_id|>" \
             "<|start_header_id|>assistant<|end_header_id|>\n\n"
    for side in ("chosen", "rejected"):
        ids, mask = ex[f"{side}_ids"], ex[f"{side}_mask"]
        assert _decode(chat, ids[mask == 0]) == prompt
        assert _decode(chat, ids[mask == 1]) == row[side][0]["content"] + "<|eot_id|>"
    # ShareGPT messages are accepted in DPO rows too
    sharegpt = {"prompt": [{"from": "human", "value": "Suggest a name for a cat."}],
                "chosen": [{"from": "gpt", "value": "Miso, short and warm."}],
                "rejected": [{"from": "gpt", "value": "Cat."}]}
    (same,) = tokenize_dpo([("x", sharegpt)], chat, 512, DataReport())
    for k in ("chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask"):
        np.testing.assert_array_equal(ex[k], same[k])


def test_bad_sharegpt_rows_are_counted(chat):
    rows = [("a:1", {"conversations": [{"from": "human", "value": "Hi"}, {"from": "bot", "value": "Hello"}]}),
            ("a:2", {"conversations": [{"from": "human", "value": "Hi"}]}),
            ("a:3", {"conversation": []})]
    report = DataReport()
    assert tokenize_sft(rows, chat, 512, report) == []
    assert report.skipped == {"unknown ShareGPT speaker 'bot'": 1, "no assistant turn": 1,
                              "missing field 'messages' (or ShareGPT 'conversations')": 1}
