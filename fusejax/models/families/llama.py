"""Llama-3.x (and Mistral, the same architecture): GQA, SwiGLU, RoPE with "llama3" scaling, optional tied embeddings."""

from __future__ import annotations

from fusejax.models.config import ConfigError, ModelConfig, RopeScaling
from fusejax.models.families import base

_LLAMA3_EOS = [128001, 128008, 128009]


def from_hf(hf: dict) -> ModelConfig:
    base.check_activation(hf, ("silu",))
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise ConfigError("config.json: attention_bias/mlp_bias are not supported for llama")
    if hf.get("sliding_window"):
        raise ConfigError("config.json: sliding_window is not supported for llama/mistral")
    return ModelConfig(**base.read_common(hf, hf.get("model_type", "llama")),
                       tie_embeddings=bool(hf.get("tie_word_embeddings", False)))


def to_hf(cfg: ModelConfig) -> dict:
    out = base.write_common(cfg, ARCHITECTURES[cfg.model_type])
    out.update(hidden_act="silu", attention_bias=False, mlp_bias=False, pretraining_tp=1)
    if cfg.model_type == "mistral":
        out.update(sliding_window=None)
        del out["rope_scaling"]
    return out


def key_rules(cfg: ModelConfig) -> list[base.KeyRule]:
    # Llama's "post_attention_layernorm" is applied before the MLP.
    return base.common_rules(cfg) + [
        base.layer_rule("post_attention_layernorm.weight", "pre_feedforward_layernorm.weight")
    ]


ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}


def _llama3(**kw) -> ModelConfig:
    defaults = dict(
        model_type="llama", vocab_size=128256, head_dim=128, num_kv_heads=8, rope_theta=500000.0,
        rms_norm_eps=1e-5, max_position_embeddings=131072, bos_token_id=128000, eos_token_id=_LLAMA3_EOS,
    )
    return ModelConfig(**{**defaults, **kw})


PRESETS = {
    "llama3.1-8b": _llama3(
        hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
        rope_scaling=RopeScaling(8.0, 1.0, 4.0, 8192),
    ),
    "llama3.1-70b": _llama3(
        hidden_size=8192, intermediate_size=28672, num_layers=80, num_heads=64,
        rope_scaling=RopeScaling(8.0, 1.0, 4.0, 8192),
    ),
    "llama3.2-3b": _llama3(
        hidden_size=3072, intermediate_size=8192, num_layers=28, num_heads=24, tie_embeddings=True,
        rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192),
    ),
    "llama3.2-1b": _llama3(
        hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32, head_dim=64, tie_embeddings=True,
        rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192),
    ),
    "mistral-large-2407": ModelConfig(
        model_type="mistral", vocab_size=32768, hidden_size=12288, intermediate_size=28672, num_layers=88,
        num_heads=96, num_kv_heads=8, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-5,
        max_position_embeddings=131072, bos_token_id=1, eos_token_id=2,
    ),
}

FAMILY = base.Family(
    name="llama", model_types=("llama", "mistral"), architecture="LlamaForCausalLM",
    from_hf=from_hf, to_hf=to_hf, key_rules=key_rules, presets=PRESETS,
)
