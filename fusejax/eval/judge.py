"""LLM-as-judge through any OpenAI-compatible endpoint: MT-Bench (single-answer 1-10), Arena-Hard and AlpacaEval-2
(pairwise against GPT-4 baseline outputs). Without a judge these benchmarks are generated and reported "not judged".

Prompts and parsing follow the originals:
  - MT-Bench: FastChat's llm_judge `data/judge_prompts.jsonl` (single-v1, single-math-v1 with the GPT-4 reference
    answer for math/reasoning/coding, and their -multi-turn variants for the second turn); the rating is the number in
    "[[rating]]" (else "[rating]"), as FastChat's `one_score_pattern` / `one_score_pattern_backup`; temperature 0,
    2048 tokens. Score = mean rating over both turns of all questions (FastChat's show_result), malformed replies
    excluded and counted.
  - Arena-Hard v0.1: arena-hard-auto's judge_config.yaml (as shipped in FuseEval): its system prompt and template,
    two games with the answers' positions swapped, verdict "[[A>>B]]" ... "[[B>>A]]" (a reply without one gets the
    follow-up "continue your judgment and finish by outputting a final verdict label" once), strong verdicts weighted
    3. With one model against the baseline the Bradley-Terry score arena-hard reports is the weighted win rate
    (ties count half), computed here directly; no bootstrap interval, no style control.
  - AlpacaEval 2.0: alpaca_eval's `alpaca_eval_clf_gpt4_turbo` prompt (as `weighted_alpaca_eval_gpt4_turbo`, which
    FuseEval used): one token, "m" or "M", output order randomised per instruction; the preference is the
    probability of the model's identifier from the top log-probabilities when the endpoint returns them, else the
    token itself (0 or 1). Reported: the (weighted) win rate. The length-controlled win rate needs alpaca_eval's GLM
    fit and is not computed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import math
import os
import re
import time

# FastChat llm_judge data/judge_prompts.jsonl (Apache-2.0): name -> (system prompt, prompt template).
MT_BENCH_PROMPTS = {
    'single-v1': (
        'You are a helpful assistant.',
        '[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided '
        'by an AI assistant to the user question displayed below. Your evaluation should consider factors '
        'such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of the '
        'response. Begin your evaluation by providing a short explanation. Be as objective as possible. '
        'After providing your explanation, you must rate the response on a scale of 1 to 10 by strictly '
        'following this format: "[[rating]]", for example: "Rating: '
        '[[5]]".\n\n[Question]\n{question}\n\n[The Start of Assistant\'s Answer]\n{answer}\n[The End of '
        "Assistant's Answer]"),
    'single-math-v1': (
        'You are a helpful assistant.',
        '[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided '
        'by an AI assistant to the user question displayed below. Your evaluation should consider '
        "correctness and helpfulness. You will be given a reference answer and the assistant's answer. "
        "Begin your evaluation by comparing the assistant's answer with the reference answer. Identify and "
        'correct any mistakes. Be as objective as possible. After providing your explanation, you must '
        'rate the response on a scale of 1 to 10 by strictly following this format: "[[rating]]", for '
        'example: "Rating: [[5]]".\n\n[Question]\n{question}\n\n[The Start of Reference '
        "Answer]\n{ref_answer_1}\n[The End of Reference Answer]\n\n[The Start of Assistant's "
        "Answer]\n{answer}\n[The End of Assistant's Answer]"),
    'single-v1-multi-turn': (
        'Please act as an impartial judge and evaluate the quality of the response provided by an AI '
        'assistant to the user question displayed below. Your evaluation should consider factors such as '
        'the helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. You '
        "evaluation should focus on the assistant's answer to the second user question. Begin your "
        'evaluation by providing a short explanation. Be as objective as possible. After providing your '
        'explanation, you must rate the response on a scale of 1 to 10 by strictly following this format: '
        '"[[rating]]", for example: "Rating: [[5]]".\n\n',
        "<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n### Assistant "
        'A:\n{answer_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n{answer_2}\n\n<|The End of '
        "Assistant A's Conversation with User|>"),
    'single-math-v1-multi-turn': (
        'Please act as an impartial judge and evaluate the quality of the response provided by an AI '
        'assistant to the user question. Your evaluation should consider correctness and helpfulness. You '
        "will be given a reference answer and the assistant's answer. You evaluation should focus on the "
        "assistant's answer to the second question. Begin your evaluation by comparing the assistant's "
        'answer with the reference answer. Identify and correct any mistakes. Be as objective as possible. '
        'After providing your explanation, you must rate the response on a scale of 1 to 10 by strictly '
        'following this format: "[[rating]]", for example: "Rating: [[5]]".\n\n',
        '<|The Start of Reference Answer|>\n\n### User:\n{question_1}\n\n### Reference '
        'answer:\n{ref_answer_1}\n\n### User:\n{question_2}\n\n### Reference '
        "answer:\n{ref_answer_2}\n\n<|The End of Reference Answer|>\n\n\n<|The Start of Assistant A's "
        'Conversation with User|>\n\n### User:\n{question_1}\n\n### Assistant A:\n{answer_1}\n\n### '
        "User:\n{question_2}\n\n### Assistant A:\n{answer_2}\n\n<|The End of Assistant A's Conversation "
        'with User|>'),
}
MT_BENCH_REFERENCE_CATEGORIES = ("math", "reasoning", "coding", "arena-hard-200")  # FastChat's NEED_REF_CATS

# arena-hard-auto judge_config.yaml, arena-hard-v0.1 (as in FuseEval's IF-Eval/Arena-Hard/judge_configs).
ARENA_HARD_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the "
    "user prompt displayed below. You will be given assistant A's answer and assistant B's answer. Your job is to "
    "evaluate which assistant's answer is better.\n\nBegin your evaluation by generating your own answer to the "
    "prompt. You must provide your answers before judging any answers.\n\nWhen evaluating the assistants' answers, "
    "compare both assistants' answers with your answer. You must identify and correct any mistakes or inaccurate "
    "information.\n\nThen consider if the assistant's answers are helpful, relevant, and concise. Helpful means the "
    "answer correctly responds to the prompt or follows the instructions. Note when user prompt has any ambiguity or "
    "more than one interpretation, it is more helpful and appropriate to ask for clarifications or more information "
    "from the user than providing an answer based on assumptions. Relevant means all parts of the response closely "
    "connect or are appropriate to what is being asked. Concise means the response is clear and not verbose or "
    "excessive.\n\nThen consider the creativity and novelty of the assistant's answers when needed. Finally, "
    "identify any missing important information in the assistants' answers that would be beneficial to include when "
    "responding to the user prompt.\n\nAfter providing your explanation, you must output only one of the following "
    "choices as your final verdict with a label:\n\n1. Assistant A is significantly better: [[A>>B]]\n2. Assistant A "
    "is slightly better: [[A>B]]\n3. Tie, relatively the same: [[A=B]]\n4. Assistant B is slightly better: "
    "[[B>A]]\n5. Assistant B is significantly better: [[B>>A]]\n\nExample output: \"My final verdict is tie: "
    "[[A=B]]\".")
ARENA_HARD_TEMPLATE = ("<|User Prompt|>\n{question_1}\n\n<|The Start of Assistant A's Answer|>\n{answer_1}\n"
                       "<|The End of Assistant A's Answer|>\n\n<|The Start of Assistant B's Answer|>\n{answer_2}\n"
                       "<|The End of Assistant B's Answer|>")
ARENA_HARD_RETRY = "continue your judgment and finish by outputting a final verdict label"
ARENA_HARD_PATTERN = re.compile(r"\[\[([AB<>=]+)\]\]")

# alpaca_eval evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt (Apache-2.0).
ALPACA_SYSTEM = ("You are a highly efficient assistant, who evaluates and selects the best large language model "
                 "(LLMs) based on the quality of their responses to a given instruction. This process will be used "
                 "to create a leaderboard reflecting the most accurate and human-preferred answers.")
ALPACA_TEMPLATE = """I require a leaderboard for various large language models. I'll provide you with prompts given to these models and their corresponding outputs. Your task is to assess these responses, and select the model that produces the best output from a human perspective.

## Instruction

{{
    "instruction": \"\"\"{instruction}\"\"\",
}}

## Model Outputs

Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a unique model identifier.

{{
    {{
        "model_identifier": "m",
        "output": \"\"\"{output_1}\"\"\"
    }},
    {{
        "model_identifier": "M",
        "output": \"\"\"{output_2}\"\"\"
    }}
}}

## Task

Evaluate the models based on the quality and relevance of their outputs, and select the model that generated the best output. Answer by providing the model identifier of the best model. We will use your output as the name of the best model, so make sure your output only contains one of the following model identifiers and nothing else (no quotes, no spaces, no new lines, ...): m or M.

## Best Model Identifier
"""  # noqa: E501


class JudgeError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    base_url: str
    model: str
    api_key_env: str | None = None  # name of the environment variable holding the key (never the key itself)
    workers: int = 8  # concurrent requests
    timeout_s: float = 300.0
    max_retries: int = 3

    def describe(self) -> dict:
        return {"base_url": self.base_url, "model": self.model, "api_key_env": self.api_key_env}


class Judge:
    """A chat-completions client for the judge endpoint (the `openai` package)."""

    def __init__(self, cfg: JudgeConfig):
        from openai import OpenAI

        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else "none"
        if cfg.api_key_env and not key:
            raise JudgeError(f"judge: environment variable {cfg.api_key_env} is empty or not set")
        self.cfg = cfg
        self.client = OpenAI(base_url=cfg.base_url, api_key=key, timeout=cfg.timeout_s, max_retries=cfg.max_retries)

    def chat(self, messages: list[dict], max_tokens: int, temperature: float = 0.0,
             logprobs: bool = False) -> tuple[str, dict | None]:
        """(reply text, {token: probability} of the first generated token when `logprobs`)."""
        kwargs = dict(model=self.cfg.model, messages=messages, max_tokens=max_tokens, temperature=temperature)
        if logprobs:
            kwargs.update(logprobs=True, top_logprobs=5)
        out = self.client.chat.completions.create(**kwargs)
        choice = out.choices[0]
        text = choice.message.content or ""
        probs = None
        content = getattr(getattr(choice, "logprobs", None), "content", None)
        if logprobs and content:
            probs = {t.token: math.exp(t.logprob) for t in (content[0].top_logprobs or [])}
        return text, probs


# ---- MT-Bench ------------------------------------------------------------------------------------------------------

_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


def parse_rating(reply: str) -> float | None:
    m = _RATING.search(reply) or _RATING_BACKUP.search(reply)
    if not m:
        return None
    try:
        return float(m.group(1))
    except ValueError:
        return None


def mt_bench_messages(sample: dict, answers: list[str], turn: int, references: list[str] | None) -> list[dict]:
    """The judge conversation for one turn (1 or 2) of an MT-Bench answer, exactly as FastChat builds it."""
    q = sample["turns"]
    with_ref = sample["meta"]["category"] in MT_BENCH_REFERENCE_CATEGORIES
    if with_ref and not references:
        raise JudgeError(f"mt-bench question {sample['id']} ({sample['meta']['category']}) needs a reference answer")
    name = ("single-math-v1" if with_ref else "single-v1") + ("-multi-turn" if turn == 2 else "")
    system, template = MT_BENCH_PROMPTS[name]
    if turn == 1:
        args = {"question": q[0], "answer": answers[0]}
    else:
        args = {"question_1": q[0], "question_2": q[1], "answer_1": answers[0], "answer_2": answers[1]}
    if with_ref:
        args["ref_answer_1"] = references[0]
        if turn == 2:
            args["ref_answer_2"] = references[1]
    return [{"role": "system", "content": system}, {"role": "user", "content": template.format(**args)}]


def judge_mt_bench(judge: Judge, sample: dict, answers: list[str], references: list[str] | None) -> dict:
    ratings, judgments = [], []
    for turn in (1, 2):
        messages = mt_bench_messages(sample, answers, turn, references)
        reply, _ = judge.chat(messages, max_tokens=2048)
        rating = parse_rating(reply)
        ratings.append(rating)
        judgments.append({"turn": turn, "prompt": messages, "reply": reply, "rating": rating})
    valid = [r for r in ratings if r is not None]
    malformed = len(ratings) - len(valid)
    detail = "ratings " + ", ".join("malformed" if r is None else f"{r:g}" for r in ratings)
    return {"verdict": sum(valid) / len(valid) if valid else None, "ratings": ratings, "malformed": malformed,
            "detail": detail, "judgments": judgments}


# ---- Arena-Hard ----------------------------------------------------------------------------------------------------

def parse_verdict(reply: str) -> tuple[str | None, bool]:
    """(verdict label, ask again): arena-hard's get_score."""
    matches = [m for m in ARENA_HARD_PATTERN.findall(reply) if m != ""]
    if not matches:
        return None, True
    if len(set(matches)) == 1:
        return matches[0].strip("\n"), False
    return None, False


# winner of a game for the model: (model's share, weight); game 1 puts the baseline as A, game 2 as B.
_GAME = {"A=B": (0.5, 1), "A>B": (0.0, 1), "A>>B": (0.0, 3), "B>A": (1.0, 1), "B>>A": (1.0, 3)}


def judge_arena_hard(judge: Judge, sample: dict, answer: str, baseline: str) -> dict:
    games, wins, weight = [], 0.0, 0
    for game in (1, 2):
        a, b = (baseline, answer) if game == 1 else (answer, baseline)
        messages = [{"role": "system", "content": ARENA_HARD_SYSTEM},
                    {"role": "user", "content": ARENA_HARD_TEMPLATE.format(question_1=sample["turns"][0],
                                                                           answer_1=a, answer_2=b)}]
        conv, judgment, label = list(messages), "", None
        for _ in range(2):  # number_of_judgment_attempts
            reply, _ = judge.chat(conv, max_tokens=4096)
            judgment += "\n" + reply
            label, again = parse_verdict(judgment)
            conv.append({"role": "assistant", "content": reply})
            if not again:
                break
            conv.append({"role": "user", "content": ARENA_HARD_RETRY})
        games.append({"game": game, "prompt": messages, "judgment": judgment, "label": label})
        if label in _GAME:
            share, w = _GAME[label]
            wins += (share if game == 1 else 1.0 - share) * w
            weight += w
    labels = [g["label"] for g in games]
    malformed = sum(label not in _GAME for label in labels)
    return {"verdict": wins / weight if weight else None, "wins": wins, "weight": weight, "malformed": malformed,
            "detail": "games " + ", ".join(str(label) for label in labels), "judgments": games}


# ---- AlpacaEval 2 --------------------------------------------------------------------------------------------------

def model_is_first(sample_id: str, instruction: str) -> bool:
    """The randomised output order, fixed per instruction (so reruns ask the same question)."""
    return hashlib.sha256(f"{sample_id}\n{instruction}".encode()).digest()[0] % 2 == 1


def judge_alpaca(judge: Judge, sample: dict, answer: str) -> dict:
    instruction, baseline = sample["turns"][0], sample["meta"]["baseline"]
    first = model_is_first(sample["id"], instruction)
    out1, out2 = (answer, baseline) if first else (baseline, answer)
    mine = "m" if first else "M"
    messages = [{"role": "system", "content": ALPACA_SYSTEM},
                {"role": "user", "content": ALPACA_TEMPLATE.format(instruction=instruction, output_1=out1,
                                                                   output_2=out2)}]
    reply, probs = judge.chat(messages, max_tokens=1, temperature=1.0, logprobs=True)
    preference = None
    if probs and ("m" in probs or "M" in probs):
        total = probs.get("m", 0.0) + probs.get("M", 0.0)
        preference = probs.get(mine, 0.0) / total
    elif reply.strip()[:1] in ("m", "M"):
        preference = 1.0 if reply.strip()[:1] == mine else 0.0
    detail = f"judge said {reply.strip()[:20]!r}, model was {mine!r}"
    return {"verdict": preference, "malformed": int(preference is None), "detail": detail,
            "judgments": [{"prompt": messages, "reply": reply, "top_probs": probs}]}


def judge_many(fn, jobs: list, workers: int, log=print, label: str = "judge") -> list[dict]:
    """Run `fn(*job)` over jobs on a thread pool (HTTP-bound), with progress lines (rate, ETA)."""
    results: list[dict | None] = [None] * len(jobs)
    t0, last, done = time.time(), time.time(), 0
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        for fut in concurrent.futures.as_completed(futures):
            results[futures[fut]] = fut.result()
            done += 1
            now = time.time()
            if now - last >= 10 or done == len(jobs):
                rate = done / max(now - t0, 1e-9)
                log(f"  {label}: {done}/{len(jobs)} judged, {rate:.2f}/s, ETA {(len(jobs) - done) / rate:.0f}s")
                last = now
    return results  # type: ignore[return-value]
