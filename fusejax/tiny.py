"""Tiny random HF models and a locally trained tokenizer: for the tests, the demo and CPU runs. No downloads.

Needs the dev extra (torch, transformers).
"""

from __future__ import annotations

import json
from pathlib import Path

# A Llama-3-style chat template: the assistant turn ends with <|eot_id|>, which the model must learn to emit.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<|pad|>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is 12 plus 30? The answer is 42.",
    "def add(a, b):\n    return a + b",
    "Write a haiku about the sea. Waves fold into foam.",
    "Solve for x: 2x + 3 = 11. x = 4.",
    "Explain gradient descent in one sentence.",
    "Model fusion distils the strengths of several large models into a small one.",
    "assert add(2, 3) == 5",
    "用中文回答：今天天气很好。",
]


def tiny_tokenizer(out_dir: str | Path, vocab_size: int = 320):
    """Train a byte-level BPE tokenizer locally and save it with a chat template. Returns the HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|pad|>",
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_tok.save_pretrained(out_dir)
    return hf_tok


def tiny_hf_config(family: str, **overrides):
    """A small transformers config of `family` ("llama", "qwen2", "gemma2"); head_dim 32 so vLLM can run it too."""
    from transformers import Gemma2Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, max_position_embeddings=512, bos_token_id=0, eos_token_id=4,
                  pad_token_id=5)
    if family == "llama":
        cfg = dict(common, rope_theta=500000.0, tie_word_embeddings=False, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32})
        cls = LlamaConfig
    elif family == "qwen2":
        cfg = dict(common, rope_theta=1e6, tie_word_embeddings=True)
        cls = Qwen2Config
    elif family == "gemma2":
        cfg = dict(common, sliding_window=8, query_pre_attn_scalar=24, attn_logit_softcapping=50.0,
                   final_logit_softcapping=30.0, attn_implementation="eager")
        cls = Gemma2Config
    else:
        raise ValueError(f"unknown family {family!r}")
    cfg.update(overrides)
    return cls(**cfg)


def tiny_hf_model(family: str, seed: int = 0, scale: float = 0.08, dtype=None, **overrides):
    """A randomly initialised transformers causal LM; all weights (norms and biases too) perturbed so that every
    parameter matters for the output."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_hf_config(family, **overrides)).eval()
    _randomise(model, norm_centre=0.0 if family == "gemma2" else 1.0, scale=scale)
    if dtype is not None:
        model = model.to(dtype)
    return model


def _randomise(model, norm_centre: float, scale: float) -> None:
    """Every weight random (norm weights around norm_centre), so that every parameter matters for the output."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(norm_centre + 0.2 * torch.randn_like(p))
            else:
                p.copy_(scale * torch.randn_like(p))


def save_tiny_model(out_dir: str | Path, family: str = "llama", seed: int = 0, with_tokenizer: bool = True,
                    **overrides) -> Path:
    """Tiny random HF model (+ local tokenizer with a chat template) saved to out_dir."""
    out_dir = Path(out_dir)
    if with_tokenizer:
        tok = tiny_tokenizer(out_dir)
        overrides.setdefault("vocab_size", len(tok))
    model = tiny_hf_model(family, seed=seed, **overrides)
    model.save_pretrained(out_dir)
    if with_tokenizer:
        gen = {"bos_token_id": 0, "eos_token_id": 4, "pad_token_id": 5}
        (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=2))
    return out_dir


_PROMPTS = ["What is {a} plus {b}?", "Write a short line about the number {a}.", "Name a colour and the number {b}.",
            "Explain why {a} is less than {b}.", "用中文说出数字 {a}。"]


def tiny_datasets(out_dir: str | Path, n_sft: int = 64, n_dpo: int = 64, seed: int = 0) -> dict[str, Path]:
    """Synthetic SFT and DPO JSONL files in the FuseChat-3.0 schema (for CPU runs and tests)."""
    import random

    rnd = random.Random(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def prompt():
        a, b = rnd.randint(1, 50), rnd.randint(51, 99)
        return rnd.choice(_PROMPTS).format(a=a, b=b), a, b

    sft, dpo = [], []
    for i in range(n_sft):
        p, a, b = prompt()
        msgs = [{"role": "user", "content": p}, {"role": "assistant", "content": f"The answer is {a + b}."}]
        if i % 4 == 0:  # some multi-turn rows with a system prompt
            msgs = [{"role": "system", "content": "Be brief."}] + msgs + [
                {"role": "user", "content": "And doubled?"}, {"role": "assistant", "content": f"{2 * (a + b)}."}]
        sft.append({"messages": msgs})
    for _ in range(n_dpo):
        p, a, b = prompt()
        dpo.append({"prompt": [{"role": "user", "content": p}],
                    "chosen": [{"role": "user", "content": p}, {"role": "assistant", "content": f"It is {a + b}."}],
                    "rejected": [{"role": "user", "content": p},
                                 {"role": "assistant", "content": f"Maybe {a + b + rnd.randint(1, 9)}, not sure."}]})
    return {"sft": _write_jsonl(out_dir / "sft.jsonl", sft), "dpo": _write_jsonl(out_dir / "dpo.jsonl", dpo)}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def tiny_reward_model(out_dir: str | Path, seed: int = 7) -> Path:
    """A tiny random Llama sequence-classification reward model (num_labels=1) with the local tokenizer."""
    import torch
    from transformers import LlamaForSequenceClassification

    out_dir = Path(out_dir)
    tok = tiny_tokenizer(out_dir)
    cfg = tiny_hf_config("llama", vocab_size=len(tok), num_labels=1, rope_scaling=None)
    cfg.pad_token_id = tok.pad_token_id
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(cfg).eval()
    _randomise(model, norm_centre=1.0, scale=0.08)
    model.save_pretrained(out_dir)
    return out_dir


def tiny_prompt_sets(out_dir: str | Path) -> dict[str, Path]:
    """Small prompt files for each domain of the recipe (instruction, math with gold answers, code with tests,
    Chinese), including rows the selection must drop (math/code inside instruction sets, duplicates, bad rows)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    instruction = [{"instruction": t} for t in [
        "Write a haiku about autumn leaves.", "Give three tips for sleeping well.", "Describe a cat in one sentence.",
        "What makes a good friend?", "Suggest a name for a bakery.", "Explain why the sky looks blue.",
        "Write a limerick about a frog.", "List two uses for a paperclip.",
        "Solve 3x + 5 = 20 for x.",  # math: dropped from instruction sets
        "Write a Python function that reverses a string.",  # code: dropped
        "Give three tips for sleeping well!",  # normalised duplicate
    ]] + [{"instruction": f"Write a {adj} sentence about {noun}."}
          for adj in ("short", "happy", "strange", "formal", "poetic")
          for noun in ("rivers", "mountains", "libraries", "trains", "gardens", "winter")] + [
        {"wrong_field": "no instruction here"}]
    math = [{"problem": f"What is {a} + {b}?", "expected_answer": str(a + b)} for a, b in
            [(2, 3), (10, 32), (7, 8), (100, 250), (6, 6), (13, 29)]]
    code = [{"instruction": f"Write a Python function `{n}` that {d}.", "tests": t} for n, d, t in [
        ("add", "adds two numbers", "assert add(2, 3) == 5"),
        ("square", "squares a number", "assert square(4) == 16"),
        ("rev", "reverses a list", "assert rev([1, 2]) == [2, 1]"),
        ("nothing", "does nothing", ""),  # no tests: dropped
    ]]
    chinese = [{"instruction": t} for t in ["用一句话介绍长城。", "写一首关于春天的短诗。", "推荐一本好书。",
                                            "计算 12 加 30 等于多少？"]]  # the last one is math: dropped
    sets = {"instruction": instruction, "math": math, "code": code, "chinese": chinese}
    return {name: _write_jsonl(out_dir / f"{name}.jsonl", rows) for name, rows in sets.items()}


def tiny_pipeline_assets(root: str | Path) -> dict[str, Path]:
    """Everything configs/data/tiny.yaml needs: two tiny source models, a tiny reward model, prompt files."""
    root = Path(root)
    out = {"source_a": save_tiny_model(root / "source-a", "llama", seed=1),
           "source_b": save_tiny_model(root / "source-b", "qwen2", seed=2),
           "reward": tiny_reward_model(root / "reward")}
    out.update(tiny_prompt_sets(root / "prompts"))
    return out


# ---------------------------------------------------------------- trainable tiny models (the demo's sources/target)

# Chat formats of three model families, as small as a character-level vocabulary allows: the role names are single
# tokens (learned merges), so a turn costs a few tokens. Different families get different templates and special
# tokens, so that text is the only thing their models share.
CHAT_STYLES = {
    "llama3": dict(
        template=CHAT_TEMPLATE, specials=["<|begin_of_text|>", "<|eot_id|>", "<|pad|>", "<|start_header_id|>",
                                          "<|end_header_id|>"],
        bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|pad|>"),
    "chatml": dict(
        template=("{% for message in messages %}"
                  "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>\n' }}"
                  "{% endfor %}"
                  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos=None, eos="<|im_end|>", pad="<|endoftext|>"),
    "gemma": dict(
        template=("{{ bos_token }}"
                  "{% for message in messages %}"
                  "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
                  "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
                  "{% endfor %}"
                  "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"),
        specials=["<bos>", "<end_of_turn>", "<pad>", "<start_of_turn>"], bos="<bos>", eos="<end_of_turn>",
        pad="<pad>"),
}
FAMILY_STYLE = {"llama": "llama3", "qwen2": "chatml", "gemma2": "gemma"}


def digit_tokenizer(out_dir: str | Path, style: str = "llama3", words: list[str] = ()):
    """A byte-level BPE tokenizer whose only merges are whole words (role names and `words`): digits stay one token
    each, which small models need to learn arithmetic. `style`: a CHAT_STYLES key. Saved to out_dir; returned."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if style not in CHAT_STYLES:
        raise ValueError(f"unknown chat style {style!r} (known: {', '.join(CHAT_STYLES)})")
    s = CHAT_STYLES[style]
    vocab = sorted({"user", "assistant", "system", "model", *words})
    if any(ch.isdigit() for w in vocab for ch in w):
        raise ValueError("digit_tokenizer: words must not contain digits (digits stay single tokens)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    # Every word and its " word" form, merged completely: at most len(chars) - 1 merges per form.
    corpus = [w for v in vocab for w in (v, " " + v)]
    merges = sum(len(w) for w in corpus)
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + len(s["specials"]) + merges,
                                  special_tokens=s["specials"], initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=s["bos"], eos_token=s["eos"], pad_token=s["pad"])
    hf_tok.chat_template = s["template"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_tok.save_pretrained(out_dir)
    return hf_tok


def save_trainable_model(out_dir: str | Path, family: str, tokenizer, hidden_size: int = 128, num_layers: int = 2,
                         intermediate_size: int | None = None, head_dim: int = 32, seed: int = 0,
                         max_position_embeddings: int = 256) -> Path:
    """A small HF causal LM of `family` with the library's standard initialisation (for training from scratch, not
    for parity tests), the given tokenizer and a generation config that stops at its end-of-turn token."""
    import torch
    from transformers import AutoModelForCausalLM

    if hidden_size % head_dim:
        raise ValueError(f"hidden_size {hidden_size} is not a multiple of head_dim {head_dim}")
    heads = hidden_size // head_dim
    ids = dict(bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id,
               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    overrides = dict(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
                     intermediate_size=intermediate_size or 2 * hidden_size, num_attention_heads=heads,
                     num_key_value_heads=heads, head_dim=head_dim, max_position_embeddings=max_position_embeddings,
                     tie_word_embeddings=True, **ids)
    if family == "llama":
        overrides["rope_scaling"] = None
    if family == "gemma2":
        overrides.update(query_pre_attn_scalar=head_dim, sliding_window=max_position_embeddings // 2)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_hf_config(family, **overrides)).eval()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "generation_config.json").write_text(json.dumps(ids, indent=2))
    return out_dir
