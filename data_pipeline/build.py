"""Stage 5, build: the FuseChat-3.0 SFT and DPO sets from sampled, scored and verified responses.

Rules (shared/reference FACTS):
  - prompts whose responses are all identical are dropped;
  - a seeded split by prompt id sends a prompt to SFT or DPO (4:6 by default; Chinese prompts are SFT only);
  - SFT: instruction -> the highest RM score over all sources; math/code -> the highest-scoring correct response
    (no correct response: dropped); Chinese -> the named model's response (highest RM if it has several);
  - DPO: a pair from ONE source model. instruction: chosen = its highest RM score, rejected = its lowest;
    math/code: chosen = its correct response with the highest RM, rejected = its incorrect one with the lowest RM;
    kept only if gap_min <= chosen - rejected <= gap_max (inclusive, to 1e-9). Where several models qualify, the pair
    whose chosen response scores highest is used (the paper does not say; this favours the best source);
  - code prompts where every response fails are excluded from both sets.
A dataset's own responses (OpenMathInstruct-2's Llama-3.1-405B solutions) are one more source model with one
response per prompt: they can win SFT, but never form a DPO pair alone (a pair needs two responses of one model).
Responses without a reward score (longer than the reward model reads, with reward.overlong: skip) are left out and
counted in summary.json's responses_not_used.
Ties are broken deterministically by (model name, sample index). Output in the training schema:
  sft.jsonl: {"id", "dataset", "domain", "model", "score", "messages": prompt + [assistant]}
  dpo.jsonl: {"id", "dataset", "domain", "model", "chosen_score", "rejected_score", "prompt", "chosen", "rejected"}
"""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

from data_pipeline.config import BuildSpec, PipelineConfig
from data_pipeline.sample import PROMPT_TOO_LONG, load_prompts, response_key as key
from data_pipeline.store import read_parts, write_json_atomic, write_jsonl_atomic

_EPS = 1e-9


def split_of(prompt_id: str, domain: str, spec: BuildSpec, seed: int) -> str:
    fraction = spec.sft_fraction.get(domain, 0.4)
    u = int(hashlib.sha256(f"{seed}:split:{prompt_id}".encode()).hexdigest()[:12], 16) / 16**12
    return "sft" if u < fraction else "dpo"


def _order(r: dict) -> tuple:
    return (r["model"], r["sample"])


def best(responses: list[dict]) -> dict:
    """Highest score; ties -> first by (model, sample)."""
    return min(responses, key=lambda r: (-r["score"], _order(r)))


def worst(responses: list[dict]) -> dict:
    return min(responses, key=lambda r: (r["score"], _order(r)))


def sft_choice(domain: str, responses: list[dict], spec: BuildSpec) -> tuple[dict | None, str]:
    if domain == "chinese":
        own = [r for r in responses if r["model"] == spec.chinese_model]
        return (best(own), "") if own else (None, "no response from the Chinese model")
    if domain in ("math", "code"):
        correct = [r for r in responses if r.get("correct") is True]
        return (best(correct), "") if correct else (None, "no correct response")
    return best(responses), ""


def dpo_choice(domain: str, responses: list[dict], spec: BuildSpec) -> tuple[tuple[dict, dict] | None, str]:
    if domain == "chinese":
        return None, "Chinese prompts are SFT only"
    by_model = collections.defaultdict(list)
    for r in responses:
        by_model[r["model"]].append(r)
    candidates, reasons = [], collections.Counter()
    for model in sorted(by_model):
        rs = by_model[model]
        if domain in ("math", "code"):
            good = [r for r in rs if r.get("correct") is True]
            bad = [r for r in rs if r.get("correct") is False]
            if not good or not bad:
                reasons["no correct/incorrect pair within one model"] += 1
                continue
            chosen, rejected = best(good), worst(bad)
        else:
            if len(rs) < 2:
                reasons["fewer than two samples from one model"] += 1
                continue
            chosen, rejected = best(rs), worst(rs)
            if chosen is rejected:
                reasons["fewer than two samples from one model"] += 1
                continue
        gap = chosen["score"] - rejected["score"]
        if gap < spec.gap_min - _EPS or gap > spec.gap_max + _EPS:
            reasons["reward gap outside window"] += 1
            continue
        candidates.append((chosen, rejected))
    if not candidates:
        return None, reasons.most_common(1)[0][0] if reasons else "no pair"
    return min(candidates, key=lambda cr: (-cr[0]["score"], _order(cr[0]))), ""


def build(cfg: PipelineConfig, out_dir: Path, log=print) -> dict:
    prompts = {p["id"]: p for p in load_prompts(out_dir)}
    texts = {key(r): r for r in read_parts(out_dir / "sample")}
    scored = {key(r): r for r in read_parts(out_dir / "score")}
    correct = {key(r): r["correct"] for r in read_parts(out_dir / "verify")}
    grouped = collections.defaultdict(list)
    missing = collections.Counter()
    for k, r in texts.items():
        if r["finish_reason"] == PROMPT_TOO_LONG:
            missing[f"prompt longer than {r['model']}'s context"] += 1
            continue
        if k not in scored:
            missing["unscored response"] += 1
            continue
        if scored[k]["score"] is None:
            missing[f"no reward score: {scored[k].get('skipped', 'unknown reason')}"] += 1
            continue
        domain = prompts[r["prompt_id"]]["domain"] if r["prompt_id"] in prompts else None
        if domain is None:
            missing["response to an unknown prompt"] += 1
            continue
        if domain in ("math", "code") and k not in correct:
            missing["unverified response"] += 1
            continue
        if not r["text"].strip():
            missing["empty response"] += 1
            continue
        grouped[r["prompt_id"]].append({**r, "score": scored[k]["score"], "correct": correct.get(k)})

    sft_rows, dpo_rows = [], []
    drops = collections.Counter()
    counts = collections.Counter()
    for pid in sorted(prompts):
        p = prompts[pid]
        responses = grouped.get(pid, [])
        tag = (p["dataset"], p["domain"])
        if not responses:
            drops[(tag, "no scored responses")] += 1
            continue
        if len(responses) > 1 and len({r["text"] for r in responses}) == 1:
            drops[(tag, "all samples identical")] += 1
            continue
        if p["domain"] == "code" and not any(r["correct"] for r in responses):
            drops[(tag, "every response fails")] += 1
            continue
        split = split_of(pid, p["domain"], cfg.build, cfg.seed)
        base = {"id": pid, "dataset": p["dataset"], "domain": p["domain"]}
        if split == "sft":
            choice, why = sft_choice(p["domain"], responses, cfg.build)
            if choice is None:
                drops[(tag, f"sft: {why}")] += 1
                continue
            sft_rows.append({**base, "model": choice["model"], "score": choice["score"],
                             "messages": p["messages"] + [{"role": "assistant", "content": choice["text"]}]})
            counts[(tag, "sft", choice["model"])] += 1
        else:
            pair, why = dpo_choice(p["domain"], responses, cfg.build)
            if pair is None:
                drops[(tag, f"dpo: {why}")] += 1
                continue
            chosen, rejected = pair
            dpo_rows.append({**base, "model": chosen["model"], "chosen_score": chosen["score"],
                             "rejected_score": rejected["score"], "prompt": p["messages"],
                             "chosen": p["messages"] + [{"role": "assistant", "content": chosen["text"]}],
                             "rejected": p["messages"] + [{"role": "assistant", "content": rejected["text"]}]})
            counts[(tag, "dpo", chosen["model"])] += 1
    out = out_dir / "build"
    write_jsonl_atomic(out / "sft.jsonl", sft_rows)
    write_jsonl_atomic(out / "dpo.jsonl", dpo_rows)
    summary = {
        "sft": len(sft_rows), "dpo": len(dpo_rows),
        "kept": [{"dataset": t[0], "domain": t[1], "stage": s, "model": m, "count": n}
                 for (t, s, m), n in sorted(counts.items())],
        "dropped": [{"dataset": t[0], "domain": t[1], "reason": why, "count": n}
                    for (t, why), n in sorted(drops.items())],
        "responses_not_used": dict(missing),
    }
    write_json_atomic(out / "summary.json", summary)
    log(f"build: {len(sft_rows)} SFT rows, {len(dpo_rows)} DPO pairs -> {out}")
    return summary
