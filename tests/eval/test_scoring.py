"""Answer extraction and math scoring on hand-written responses (no model, no data files)."""

import pytest

from fusejax.eval.benchmarks import DataError, gsm8k_gold, last_boxed
from fusejax.eval.scoring import choice_verdict, extract_letter, math_verdict


@pytest.mark.parametrize("response, letter", [
    ("Step 1: ... so the best answer is B.", "B"),
    ("The answer is (C)", "C"),
    ("the answer is D because ...", "D"),
    ("Reasoning... Answer: E", "E"),
    ("I think A is wrong and B is wrong; it must be J", "J"),  # last standalone letter
    ("## Step 1: compute\nThe best answer is (F).\nwhere ... A", "F"),  # "answer is" wins over a later letter
    ("No idea, sorry.", None),  # no capital letter at all
    ("The answer is probably the second option", None),
    ("Answer: K", None),  # outside A-J (MMLU-Pro's range)
    ("I cannot decide.", "I"),  # FuseEval's last-letter fallback reads the pronoun "I" as option I (kept as is)
])
def test_letter_extraction_on_written_responses(response, letter):
    assert extract_letter(response) == letter


def test_no_letter_is_wrong_never_a_guess():
    ok, extracted, detail = choice_verdict("No idea, sorry.", "A")
    assert (ok, extracted) == (False, None) and "no random guess" in detail
    assert choice_verdict("so the answer is (A)", "A")[0]
    assert not choice_verdict("so the answer is (B)", "A")[0]


def test_gsm8k_gold_is_after_the_hashes():
    assert gsm8k_gold("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18") == "18"
    assert gsm8k_gold("... \n#### 1,080") == "1080"
    with pytest.raises(DataError):
        gsm8k_gold("no final line")


def test_last_boxed_balances_braces():
    assert last_boxed(r"so $x=\boxed{\frac{1}{2}}$ and later \boxed{3}") == "3"
    assert last_boxed(r"\boxed{\frac{a}{b^{2}}}.") == r"\frac{a}{b^{2}}"
    assert last_boxed("nothing here") is None


@pytest.mark.parametrize("response, gold, correct", [
    (r"The total is $18$, so the final answer is \boxed{18}.", "18", True),
    (r"\boxed{\frac{1}{2}}", "0.5", True),
    (r"\boxed{\dfrac{2}{4}}", r"\frac{1}{2}", True),
    (r"So we get \boxed{17}.", "18", False),
    ("I could not solve it.", "18", False),
])
def test_math_verify_on_written_responses(response, gold, correct):
    assert math_verdict(response, gold)[0] is correct
