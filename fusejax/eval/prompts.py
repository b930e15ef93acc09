"""FuseEval's prompts and generation settings, as generation requests (the model's own chat template renders them).

Sources (FuseChat-3.0's FuseEval scripts):
  - math (Math-Eval, after Qwen2.5-Math's evaluation): "Please reason step by step, and put your final answer within
    \\boxed{}." FuseEval puts it in the system turn for Llama-3/Qwen-2.5 and after the question for Gemma-2 (no system
    role); here it always follows the question in the user turn, which every chat template accepts.
  - code (Code-Eval/eval_plus, evalplus's chat prompt): the user turn is the instruction prefix and the task prompt in
    a code block; the assistant turn is pre-filled with the response prefix and an opened ```python block, and
    generation continues it, stopping at FuseEval's EOS strings or the closing fence.
  - multiple choice (General-Eval/MC-Eval, zero-shot chat): the Llama-3.1-evals zero-shot prompt asking for
    "The best answer is [letter]", stop at "Question:".
  - MT-Bench: two turns, the second with the first answer in context, per-category temperatures (FastChat's).
  - Arena-Hard, AlpacaEval-2: the question as one user turn.
  - user benchmarks: the question verbatim.
Greedy decoding (temperature 0) everywhere except MT-Bench's writing/roleplay/stem/humanities categories.
"""

from __future__ import annotations

import dataclasses

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_INSTRUCTION = ("Please provide a self-contained Python script that solves the following problem in a markdown "
                    "code block:")
CODE_RESPONSE_PREFIX = ("Below is a Python script with a self-contained function that solves the problem and passes "
                        "corresponding tests:")
# FuseEval's eval_plus/model.py EOS list, plus "\n```" that its chat decoders add.
CODE_STOP = ("<|endoftext|>", "<|endofmask|>", "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>", "<eos>",
             "<end_of_turn>", "</s>", "\nif __name__", "\ndef main(", "\nprint(", "\n#", "\n```")
CHOICE_STOP = ("Question:",)
# FastChat's llm_judge/common.py temperature_config (also FuseEval's MT-Bench copy); other categories: 0.7.
MT_BENCH_TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                        "reasoning": 0.0, "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0}


@dataclasses.dataclass(frozen=True)
class Request:
    """One generation: `messages` in chat form; when the last message is the assistant's, generation continues it."""

    messages: tuple[dict, ...]
    max_tokens: int
    temperature: float = 0.0
    stop: tuple[str, ...] = ()

    @property
    def continues(self) -> bool:
        return self.messages[-1]["role"] == "assistant"


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def math_prompt(question: str) -> str:
    return f"{question}\n{MATH_INSTRUCTION}"


def code_messages(task_prompt: str) -> tuple[dict, ...]:
    return (_user(f"{CODE_INSTRUCTION}\n```\n{task_prompt.strip()}\n```\n"),
            {"role": "assistant", "content": f"{CODE_RESPONSE_PREFIX}\n```python\n"})


def choice_prompt(question: str, options: list[str]) -> str:
    """FuseEval's MC-Eval zero-shot prompt (`generate_cot_prompt` with zero_shot)."""
    text = ("Please read the following multiple-choice questions and provide the most likely correct answer based on "
            "the options given.\n")
    text += "Question:\n" + question + "\nOptions:\n"
    text += "".join(f"{letter}. {opt}\n" for letter, opt in zip("ABCDEFGHIJKLMNOP", options))
    text += ("- For simple problems:\nDirectly provide the answer with minimal explanation.\n\n"
             "- For complex problems:\n"
             "Use this step-by-step format:\n## Step 1: [Concise description]\n[Brief explanation]\n"
             "## Step 2: [Concise description]\n[Brief explanation]\n\nRegardless of the approach, always conclude "
             "with:\nThe best answer is [the_answer_letter].\nwhere the [the_answer_letter] is the correct letter "
             "choice.\n\n")
    return text + "Answer: Let's think step by step."


def first_request(task: str, sample: dict, max_tokens: int, verbatim: bool = False) -> Request:
    """The (first) request for a sample of a benchmark of this task."""
    question = sample["turns"][0]
    if task == "math":
        text = question if verbatim else math_prompt(question)
        return Request((_user(text),), max_tokens)
    if task == "code":
        return Request(code_messages(question), max_tokens, stop=CODE_STOP)
    if task == "choice":
        return Request((_user(choice_prompt(question, sample["meta"]["options"])),), max_tokens, stop=CHOICE_STOP)
    if task == "mt-bench":
        return Request((_user(question),), max_tokens, mt_bench_temperature(sample))
    if task == "pairwise":
        return Request((_user(question),), max_tokens)
    raise ValueError(f"unknown task {task!r}")


def mt_bench_temperature(sample: dict) -> float:
    return MT_BENCH_TEMPERATURE.get(sample["meta"]["category"], 0.7)


def second_turn(sample: dict, first_answer: str, max_tokens: int) -> Request:
    """MT-Bench's second turn: both user turns with the model's first answer between them."""
    return Request((_user(sample["turns"][0]), {"role": "assistant", "content": first_answer},
                    _user(sample["turns"][1])), max_tokens, mt_bench_temperature(sample))


def settings() -> dict:
    """The prompt settings written into results.json, so that two runs can be compared honestly."""
    return {"math_instruction": MATH_INSTRUCTION, "code_instruction": CODE_INSTRUCTION,
            "code_response_prefix": CODE_RESPONSE_PREFIX, "code_stop": list(CODE_STOP),
            "choice_stop": list(CHOICE_STOP), "mt_bench_temperature": MT_BENCH_TEMPERATURE,
            "temperature": 0.0}
