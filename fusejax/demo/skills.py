"""The demo's skills: small tasks with exact numeric answers, one per source model.

Every prompt is a short question whose answer is a bare number, so math-verify checks it against the gold answer in
the data pipeline and in `fusejax eval`. Prompt sets are drawn per skill with a seeded generator, and the held-out
set is drawn first and excluded from every other set: no model (source or target) ever trains on a held-out prompt.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Callable

from fusejax.models.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Skill:
    name: str
    description: str
    make: Callable[[random.Random], tuple[str, int]]  # one (question, answer)


def _add(rnd: random.Random) -> tuple[str, int]:
    a, b = rnd.randint(10, 99), rnd.randint(1, 9)
    return f"{a} plus {b}?", a + b


def _sub(rnd: random.Random) -> tuple[str, int]:
    a, b = rnd.randint(10, 99), rnd.randint(1, 9)
    return f"{a} minus {b}?", a - b


def _max(rnd: random.Random) -> tuple[str, int]:
    xs = [rnd.randint(10, 99) for _ in range(3)]
    return f"Max of {xs[0]}, {xs[1]}, {xs[2]}?", max(xs)


def _min(rnd: random.Random) -> tuple[str, int]:
    xs = [rnd.randint(10, 99) for _ in range(3)]
    return f"Min of {xs[0]}, {xs[1]}, {xs[2]}?", min(xs)


SKILLS = {s.name: s for s in [
    Skill("add", "two-digit plus one-digit addition", _add),
    Skill("sub", "two-digit minus one-digit subtraction", _sub),
    Skill("max", "the largest of three two-digit numbers", _max),
    Skill("min", "the smallest of three two-digit numbers", _min),
]}
# Words the prompts use: whole tokens in the demo's tokenizers (digits stay single characters).
WORDS = ["plus", "minus", "Max", "Min", "of"]


def get(name: str) -> Skill:
    if name not in SKILLS:
        raise ConfigError(f"unknown skill {name!r} (known: {', '.join(SKILLS)})")
    return SKILLS[name]


def draw(skill: Skill, n: int, rnd: random.Random, exclude: set[str], distinct: bool = True) -> list[dict]:
    """n rows {"question", "answer", "skill"} whose questions are not in `exclude`; distinct: no question twice
    (and each is added to `exclude`)."""
    rows, seen, tries = [], set(), 0
    while len(rows) < n:
        tries += 1
        if tries > 200 * max(n, 1):
            raise ConfigError(f"skill {skill.name}: could not draw {n} prompts outside the {len(exclude)} excluded "
                             f"ones (got {len(rows)}); lower the prompt counts")
        question, answer = skill.make(rnd)
        if question in exclude or (distinct and question in seen):
            continue
        seen.add(question)
        rows.append({"question": question, "answer": str(answer), "skill": skill.name})
    if distinct:
        exclude.update(seen)
    return rows


@dataclasses.dataclass
class SkillFiles:
    held_out: dict[str, Path]  # skill -> JSONL of {"question", "answer"} (evaluation only)
    prompts: dict[str, Path]  # skill -> JSONL of {"question", "answer"} (the data pipeline's prompts)
    gold: dict[str, Path]  # skill -> SFT JSONL of gold answers (what a source of that skill is taught)


def write_skill_files(out_dir: Path, names: list[str], held_out: int, prompts: int, gold: int,
                      seed: int) -> SkillFiles:
    """The three prompt sets of every skill. Held-out first; the pipeline's prompts (distinct) and the gold training
    rows (repeats allowed) are drawn from everything else. The skills' prompt spaces are small (810 additions,
    810 subtractions) because tiny models only generalise to unseen prompts from dense coverage; a source has
    seen most pipeline prompts, as a large source model has seen most school arithmetic."""
    files = SkillFiles({}, {}, {})
    for i, name in enumerate(names):
        skill = get(name)
        rnd = random.Random(f"{seed}:{name}")
        taken: set[str] = set()
        held = draw(skill, held_out, rnd, taken)
        pipeline = draw(skill, prompts, rnd, set(taken))
        train = draw(skill, gold, rnd, taken, distinct=False)
        files.held_out[name] = _write_jsonl(out_dir / "held_out" / f"{name}.jsonl", held)
        files.prompts[name] = _write_jsonl(out_dir / "prompts" / f"{name}.jsonl", pipeline)
        files.gold[name] = _write_jsonl(out_dir / "gold" / f"{name}.jsonl", [
            {"messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]}
            for r in train])
    return files


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
    return path
