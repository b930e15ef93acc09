"""FuseEval's benchmarks for any model directory: `evaluate` one model, `compare` several runs.

    from fusejax.eval import evaluate, compare
    results = evaluate("path/to/hf_dir", ["gsm8k", "humaneval"], "runs/eval/base", limit=100)
    print(compare(["runs/eval/base", "runs/eval/sft"], out_dir="runs/eval"))

Layout: benchmarks.py (built-in benchmarks: hub ids with pinned revisions, local file layouts), prompts.py
(FuseEval's prompts), generate.py (vLLM with the model's chat template), scoring.py (math-verify, answer letters),
code.py (HumanEval / MBPP+ tests through the code harness), judge.py (OpenAI-compatible judge for MT-Bench,
Arena-Hard, AlpacaEval-2), run.py (the resumable driver), compare.py (table and plot of several runs), config.py (YAML).
"""

from fusejax.eval.compare import compare
from fusejax.eval.run import evaluate

__all__ = ["evaluate", "compare"]
