"""Scoring that needs no sandbox and no judge: math answers (math-verify) and multiple-choice answer letters."""

from __future__ import annotations

import re


def math_verdict(response: str, gold: str) -> tuple[bool, str | None, str]:
    """(correct, extracted answer, detail): math-verify parses the gold answer and the response's final answer
    (\\boxed{} first, then the last expression) and compares them symbolically."""
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$") or parse(gold)
    if not gold_parsed:
        return False, None, f"gold answer {gold!r} not parseable by math-verify"
    answer = parse(response)
    if not answer:
        return False, None, "no answer found"
    extracted = str(answer[-1]) if len(answer) > 1 else str(answer[0])
    ok = bool(verify(gold_parsed, answer))
    return ok, extracted, "correct" if ok else "wrong answer"


# FuseEval's MC-Eval extraction (after MMLU-Pro's evaluate_from_local.py): "answer is (X)", then "Answer: X", then the
# last standalone capital letter A-J.
_ANSWER_IS = re.compile(r"answer is \(?([A-J])\)?")
_ANSWER_COLON = re.compile(r".*[aA]nswer:\s*([A-J])")
_LAST_LETTER = re.compile(r"\b[A-J]\b(?!.*\b[A-J]\b)", re.S)


def extract_letter(text: str) -> str | None:
    """The answer letter of a multiple-choice response, or None when no pattern matches.

    FuseEval then draws a random letter (seed 12345) for responses without a match; here no match is simply wrong.
    """
    for pattern in (_ANSWER_IS, _ANSWER_COLON):
        m = pattern.search(text)
        if m:
            return m.group(1)
    m = _LAST_LETTER.search(text)
    return m.group(0) if m else None


def choice_verdict(response: str, gold: str) -> tuple[bool, str | None, str]:
    letter = extract_letter(response)
    if letter is None:
        return False, None, "no answer letter found (counted wrong, no random guess)"
    return letter == gold, letter, "correct" if letter == gold else f"chose {letter}, gold {gold}"
