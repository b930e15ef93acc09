"""Training data: read rows, validate them, tokenise with the target's chat template, and feed batches with grain.

Schema (our pipeline's output and the published FuseChat-3.0 datasets):
  SFT:  {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
        or ShareGPT {"conversations": [{"from": "system"|"human"|"gpt", "value": str}, ...]}
        (FuseAI/FuseChat-3.0-SFT-Data); loss on every assistant turn (its tokens plus the end-of-turn tokens the
        template emits after it).
  DPO:  {"prompt": str | [messages], "chosen": str | {"role": "assistant", ...} | [messages],
         "rejected": same as chosen}
        When chosen/rejected are whole conversations, the prompt is their shared prefix (all but the last turn).
        FuseAI/FuseChat-3.0-DPO-Data: prompt = [user message], chosen/rejected = [one assistant message].
  A message is {role, content} or ShareGPT's {from, value} wherever messages are read.

Policies: a row longer than data.max_length tokens is dropped and counted (truncation would cut the response and its
end-of-turn token); rows with missing fields, unknown roles, empty or no assistant turn are skipped and counted with
their reason; the counts are printed and written to OUTPUT_DIR/data_report.json. No row silently trains on nothing.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from fusejax import storage
from fusejax.models.config import ConfigError

ROLES = {"system", "user", "assistant"}
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}  # ShareGPT's `from` -> role


class RowError(ValueError):
    """A data row that cannot be used; the message is the skip reason."""


@dataclasses.dataclass
class DataReport:
    rows: int = 0
    used: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict = dataclasses.field(default_factory=dict)  # reason -> first location seen

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, where)

    def to_json(self) -> dict:
        return {"rows": self.rows, "used": self.used, "skipped": dict(self.skipped), "first_seen": self.examples}

    def summary(self) -> str:
        parts = [f"{self.used}/{self.rows} rows used"]
        parts += [f"{n} skipped: {r} (first: {self.examples[r]})" for r, n in self.skipped.most_common()]
        return "; ".join(parts)


# ---------------------------------------------------------------- reading


def read_rows(sources: list[str], split: str = "train", report: DataReport | None = None,
              subset: str | None = None) -> Iterator[tuple[str, dict]]:
    """(location, row) for every row of JSONL/Parquet files (local, or URLs such as gs://bucket/sft*.jsonl) or a hub
    dataset. Malformed JSON lines are counted in `report` and skipped."""
    for src in (local for s in sources for local in storage.localize(s)):  # gs://... -> a local copy per host
        path = Path(src)
        if path.suffix == ".json" and path.is_file() and _starts_with_array(path):
            yield from _json_array_rows(path, report)  # one JSON list of rows (LLaMA-Factory style train.json)
        elif path.suffix in (".jsonl", ".json") and path.is_file():
            with path.open() as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    where = f"{path.name}:{lineno}"
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        if report is not None:
                            report.rows += 1
                            report.skip("malformed JSON", where)
                        continue
                    if not isinstance(row, dict):
                        if report is not None:
                            report.rows += 1
                            report.skip("row is not a JSON object", where)
                        continue
                    yield where, row
        else:
            import datasets

            try:
                if path.suffix == ".parquet":
                    ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
                else:
                    ds = datasets.load_dataset(src, subset, split=split)
            except Exception as e:  # datasets raises many types; report which source failed and why
                raise ConfigError(f"data: cannot load '{src}': {type(e).__name__}: {e}") from None
            for i, row in enumerate(ds):
                yield f"{path.name}[{i}]", row


def _starts_with_array(path: Path) -> bool:
    with path.open() as f:
        while char := f.read(1):
            if not char.isspace():
                return char == "["
    return False


def _json_array_rows(path: Path, report: DataReport | None) -> Iterator[tuple[str, dict]]:
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"data: {path}: invalid JSON ({e})") from None
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            if report is not None:
                report.rows += 1
                report.skip("row is not a JSON object", f"{path.name}[{i}]")
            continue
        yield f"{path.name}[{i}]", row


# ---------------------------------------------------------------- validation


def _message(m: Any, field: str) -> dict:
    """One message: {role, content}, or ShareGPT's {from: human|gpt|system, value}."""
    if isinstance(m, dict) and "role" in m and "content" in m:
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise RowError(f"unknown role '{role}'")
    elif isinstance(m, dict) and "from" in m and "value" in m:
        role = SHAREGPT_ROLES.get(m["from"])
        content = m["value"]
        if role is None:
            raise RowError(f"unknown ShareGPT speaker '{m['from']}'")
    else:
        raise RowError(f"'{field}' has a message without role/content (or from/value)")
    if not isinstance(content, str):
        raise RowError(f"'{field}' has non-text content")
    return {"role": role, "content": content}


def _messages(value: Any, field: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise RowError(f"'{field}' is not a non-empty list of messages")
    return [_message(m, field) for m in value]


def sft_messages(row: dict) -> list[dict]:
    field = "messages" if "messages" in row else "conversations" if "conversations" in row else None
    if field is None:
        raise RowError("missing field 'messages' (or ShareGPT 'conversations')")
    msgs = _messages(row[field], field)
    assistant = [m for m in msgs if m["role"] == "assistant"]
    if not assistant:
        raise RowError("no assistant turn")
    if any(not m["content"].strip() for m in assistant):
        raise RowError("empty assistant turn")
    return msgs


def _response(value: Any, field: str) -> tuple[list[dict] | None, str]:
    if isinstance(value, str):
        return None, value
    if isinstance(value, dict):
        value = [value]
    msgs = _messages(value, field)
    if msgs[-1]["role"] != "assistant":
        raise RowError(f"'{field}' does not end with an assistant turn")
    return msgs[:-1] or None, msgs[-1]["content"]


def dpo_triple(row: dict) -> tuple[list[dict], str, str]:
    for field in ("chosen", "rejected"):
        if field not in row:
            raise RowError(f"missing field '{field}'")
    chosen_prefix, chosen = _response(row["chosen"], "chosen")
    rejected_prefix, rejected = _response(row["rejected"], "rejected")
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    elif prompt is not None:
        prompt = _messages(prompt, "prompt")
    if prompt is None or (chosen_prefix and len(chosen_prefix) > len(prompt)):
        prompt = chosen_prefix
    if not prompt:
        raise RowError("missing field 'prompt'")
    if not chosen.strip() or not rejected.strip():
        raise RowError("empty assistant turn")
    if prompt[-1]["role"] == "assistant":
        raise RowError("prompt ends with an assistant turn")
    return prompt, chosen, rejected


# ---------------------------------------------------------------- tokenisation


class ChatTokenizer:
    """Chat template rendering + tokenisation, marking response tokens via character offsets."""

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("tokenizer has no chat template (set model.tokenizer to a directory with one)")
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError("a fast tokenizer (tokenizer.json) is required for offset mapping")
        self.tok = tokenizer

    def render(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def encode_spans(self, text: str, spans: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.asarray(enc["input_ids"], np.int32)
        starts = np.asarray([o[0] for o in enc["offset_mapping"]], np.int64)
        mask = np.zeros(len(ids), np.int32)
        for a, b in spans:
            mask |= ((starts >= a) & (starts < b)).astype(np.int32)
        return ids, mask

    def sft(self, messages: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        full = self.render(messages, generation_prompt=False)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self.render(messages[:i], generation_prompt=True)
            upto = self.render(messages[: i + 1], generation_prompt=False)
            if not (upto.startswith(before) and full.startswith(upto)):
                raise RowError("chat template does not render the conversation prefix-consistently")
            spans.append((len(before), len(upto)))
        ids, mask = self.encode_spans(full, spans)
        if not mask.any():
            raise RowError("no response tokens after tokenisation")
        return ids, mask

    def dpo(self, prompt: list[dict], chosen: str, rejected: str):
        p = self.render(prompt, generation_prompt=True)
        out = []
        for response in (chosen, rejected):
            text = self.render(prompt + [{"role": "assistant", "content": response}], generation_prompt=False)
            if not text.startswith(p):
                raise RowError("chat template does not render the prompt prefix-consistently")
            ids, mask = self.encode_spans(text, [(len(p), len(text))])
            if not mask.any():
                raise RowError("no response tokens after tokenisation")
            out.append((ids, mask))
        return out


def _tokenize(rows: Iterable[tuple[str, dict]], report: DataReport, max_length: int, encode) -> list[dict]:
    """encode(row) -> (example, its longest sequence); RowError and over-long rows become counted skips."""
    examples = []
    for where, row in rows:
        report.rows += 1
        try:
            example, length = encode(row)
        except RowError as e:
            report.skip(str(e), where)
            continue
        if length > max_length:
            report.skip(f"longer than max_length {max_length}", where)
            continue
        examples.append(example)
        report.used += 1
    return examples


def tokenize_sft(rows: Iterable[tuple[str, dict]], chat: ChatTokenizer, max_length: int, report: DataReport):
    def encode(row):
        ids, mask = chat.sft(sft_messages(row))
        return {"input_ids": ids, "loss_mask": mask}, len(ids)

    return _tokenize(rows, report, max_length, encode)


def tokenize_dpo(rows: Iterable[tuple[str, dict]], chat: ChatTokenizer, max_length: int, report: DataReport):
    def encode(row):
        (c_ids, c_mask), (r_ids, r_mask) = chat.dpo(*dpo_triple(row))
        example = {"chosen_ids": c_ids, "chosen_mask": c_mask, "rejected_ids": r_ids, "rejected_mask": r_mask}
        return example, max(len(c_ids), len(r_ids))

    examples = _tokenize(rows, report, max_length, encode)
    for i, ex in enumerate(examples):
        ex["index"] = np.int32(i)
    return examples


# ---------------------------------------------------------------- batching (grain)


def _pad(x: np.ndarray, length: int, value: int = 0) -> np.ndarray:
    return np.pad(x, (0, length - len(x)), constant_values=value)


def pad_dpo_example(ex: dict, length: int, pad_id: int) -> dict:
    """Chosen and rejected side by side: input_ids/loss_mask [2, L]."""
    return {
        "input_ids": np.stack([_pad(ex["chosen_ids"], length, pad_id), _pad(ex["rejected_ids"], length, pad_id)]),
        "loss_mask": np.stack([_pad(ex["chosen_mask"], length), _pad(ex["rejected_mask"], length)]),
        "index": np.int32(ex["index"]),
        **({"ref_logps": ex["ref_logps"]} if "ref_logps" in ex else {}),
    }


@dataclasses.dataclass
class Feed:
    """A per-host iterator of host batches plus what the loop needs to know about it."""

    iterator: Any  # grain DatasetIterator (get_state / set_state)
    steps: int  # optimizer steps available
    host_batch: int


def _host_batch(global_batch: int, process_count: int) -> int:
    if global_batch % process_count:
        raise ConfigError(f"train.global_batch_size {global_batch} is not divisible by {process_count} hosts")
    return global_batch // process_count


def _epochs(examples: list, epochs: float, seed: int):
    import grain

    source = grain.MapDataset.source(examples)
    return grain.MapDataset.concatenate([source.shuffle(seed=seed + e) for e in range(max(1, math.ceil(epochs)))])


def sft_feed(examples: list[dict], *, max_length: int, global_batch: int, epochs: float, seed: int, packing: bool,
             pad_id: int, process_index: int = 0, process_count: int = 1) -> Feed:
    """Shuffled (per epoch), per-host sharded, packed (segment ids, restarting positions) SFT batches."""
    from grain.experimental import FirstFitPackIterDataset

    host_batch = _host_batch(global_batch, process_count)

    def build(index: int):
        ds = _epochs(examples, epochs, seed)[index::process_count].to_iter_dataset()
        if packing:
            ds = FirstFitPackIterDataset(ds, length_struct={"input_ids": max_length, "loss_mask": max_length},
                                         num_packing_bins=max(8, host_batch), shuffle_bins=False)
            ds = ds.map(_packed_row)
        else:
            ds = ds.map(lambda ex: pad_sft_example(ex, max_length, pad_id))
        return ds.batch(host_batch, drop_remainder=True)

    # Every host counts every host's batches (the data is the same everywhere) so all agree on the step count.
    per_epoch_fraction = epochs / max(1, math.ceil(epochs))
    steps = min(int(sum(1 for _ in build(h)) * per_epoch_fraction) for h in range(process_count))
    return Feed(iter(build(process_index)), steps, host_batch)


def _packed_row(ex: dict) -> dict:
    return {"input_ids": ex["input_ids"], "loss_mask": ex["loss_mask"],
            "segment_ids": ex["input_ids_segment_ids"], "positions": ex["input_ids_positions"]}


def pad_sft_example(ex: dict, length: int, pad_id: int) -> dict:
    """One unpacked SFT row padded to `length` (segment id 0 and position 0 on padding)."""
    n = len(ex["input_ids"])
    return {"input_ids": _pad(ex["input_ids"], length, pad_id), "loss_mask": _pad(ex["loss_mask"], length),
            "segment_ids": _pad(np.ones(n, np.int32), length), "positions": _pad(np.arange(n, dtype=np.int32), length)}


def dpo_feed(examples: list[dict], *, max_length: int, global_batch: int, epochs: float, seed: int, pad_id: int,
             process_index: int = 0, process_count: int = 1) -> Feed:
    host_batch = _host_batch(global_batch, process_count)
    ds = _epochs(examples, epochs, seed)
    steps = int(len(examples) * epochs) // global_batch
    ds = ds[process_index::process_count].map(lambda ex: pad_dpo_example(ex, max_length, pad_id))
    return Feed(iter(ds.to_iter_dataset().batch(host_batch, drop_remainder=True)), steps, host_batch)


def split_eval(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """Seeded held-out split (by position in the tokenised list)."""
    if fraction <= 0:
        return examples, []
    order = np.random.default_rng(seed).permutation(len(examples))
    n_eval = max(1, int(round(len(examples) * fraction)))
    held = set(order[:n_eval].tolist())
    train = [e for i, e in enumerate(examples) if i not in held]
    evals = [e for i, e in enumerate(examples) if i in held]
    return train, evals
