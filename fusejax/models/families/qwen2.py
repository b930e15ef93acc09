"""Qwen-2.5: Llama plus bias on the q, k and v projections (none on o); rope theta 1e6; small sizes tie embeddings."""

from __future__ import annotations

from fusejax.models.config import ConfigError, ModelConfig
from fusejax.models.families import base, llama


def from_hf(hf: dict) -> ModelConfig:
    base.check_activation(hf, ("silu",))
    # Published Qwen-2.5 configs carry sliding_window with use_sliding_window false: that window is not used.
    if hf.get("use_sliding_window"):
        raise ConfigError("config.json: use_sliding_window=true is not supported for qwen2")
    return ModelConfig(**base.read_common(hf, "qwen2"), qkv_bias=True,
                       tie_embeddings=bool(hf.get("tie_word_embeddings", False)))


def to_hf(cfg: ModelConfig) -> dict:
    out = base.write_common(cfg, "Qwen2ForCausalLM")
    out.update(hidden_act="silu", use_sliding_window=False, sliding_window=None, max_window_layers=cfg.num_layers)
    return out


def key_rules(cfg: ModelConfig) -> list[base.KeyRule]:
    rules = llama.key_rules(cfg)
    for p in ("q_proj", "k_proj", "v_proj"):
        rules.append(base.layer_rule(f"self_attn.{p}.bias", f"self_attn.{p}.bias", flatten=True))
    return rules


PRESETS = {
    "qwen2.5-7b": ModelConfig(
        model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28,
        num_heads=28, num_kv_heads=4, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6, qkv_bias=True,
        max_position_embeddings=32768, bos_token_id=151643, eos_token_id=151645,
    ),
    "qwen2.5-72b": ModelConfig(
        model_type="qwen2", vocab_size=152064, hidden_size=8192, intermediate_size=29568, num_layers=80,
        num_heads=64, num_kv_heads=8, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6, qkv_bias=True,
        max_position_embeddings=32768, bos_token_id=151643, eos_token_id=151645,
    ),
}

FAMILY = base.Family(
    name="qwen2", model_types=("qwen2",), architecture="Qwen2ForCausalLM",
    from_hf=from_hf, to_hf=to_hf, key_rules=key_rules, presets=PRESETS,
)
