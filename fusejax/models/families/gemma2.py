"""Gemma-2: sqrt(hidden) embedding scale, (1 + w) RMSNorm, pre and post norms around attention and MLP, GeGLU with
tanh GELU, attention-logit and final-logit soft-caps, sliding window on alternating layers (layer 0 sliding),
attention scale from query_pre_attn_scalar, tied embeddings."""

from __future__ import annotations

from fusejax.models.config import ConfigError, ModelConfig
from fusejax.models.families import base


def _layer_types(hf: dict, num_layers: int) -> tuple[str, ...]:
    if hf.get("layer_types"):
        return tuple(hf["layer_types"])
    # Published configs (pre transformers 5) imply the alternation: even layers slide, odd layers are global.
    return tuple("sliding_attention" if i % 2 == 0 else "full_attention" for i in range(num_layers))


def from_hf(hf: dict) -> ModelConfig:
    base.check_activation(hf, ("gelu_pytorch_tanh",), "hidden_activation")
    base.check_activation(hf, ("gelu_pytorch_tanh",), "hidden_act")
    common = base.read_common(hf, "gemma2")
    if common["rope_scaling"] is not None:
        raise ConfigError("config.json: rope scaling is not supported for gemma2")
    if not hf.get("sliding_window"):
        raise ConfigError("config.json: gemma2 requires sliding_window")
    return ModelConfig(
        **common,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        norm_plus_one=True,
        scale_embeddings=True,
        post_norms=True,
        activation="gelu_tanh",
        attn_logit_softcap=hf.get("attn_logit_softcapping"),
        final_logit_softcap=hf.get("final_logit_softcapping"),
        sliding_window=int(hf["sliding_window"]),
        layer_types=_layer_types(hf, common["num_layers"]),
        query_pre_attn_scalar=float(base.require(hf, "query_pre_attn_scalar")),
    )


def to_hf(cfg: ModelConfig) -> dict:
    out = base.write_common(cfg, "Gemma2ForCausalLM")
    del out["rope_scaling"]
    out.update(
        hidden_act="gelu_pytorch_tanh",
        hidden_activation="gelu_pytorch_tanh",
        attn_logit_softcapping=cfg.attn_logit_softcap,
        final_logit_softcapping=cfg.final_logit_softcap,
        sliding_window=cfg.sliding_window,
        # transformers 5 validates this field as an int
        query_pre_attn_scalar=int(q) if (q := cfg.query_pre_attn_scalar) is not None and float(q).is_integer() else q,
        attention_bias=False,
        cache_implementation="hybrid",
    )
    if cfg.layer_types is not None and cfg.layer_types != _layer_types({}, cfg.num_layers):
        out["layer_types"] = list(cfg.layer_types)
    return out


def key_rules(cfg: ModelConfig) -> list[base.KeyRule]:
    return base.common_rules(cfg) + [
        base.layer_rule(f"{n}.weight", f"{n}.weight")
        for n in ("post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm")
    ]


def _gemma2(**kw) -> ModelConfig:
    n = kw["num_layers"]
    defaults = dict(
        model_type="gemma2", vocab_size=256000, rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=8192,
        tie_embeddings=True, norm_plus_one=True, scale_embeddings=True, post_norms=True, activation="gelu_tanh",
        attn_logit_softcap=50.0, final_logit_softcap=30.0, sliding_window=4096,
        layer_types=_layer_types({}, n), bos_token_id=2, eos_token_id=[1, 107], pad_token_id=0,
    )
    return ModelConfig(**{**defaults, **kw})


PRESETS = {
    "gemma2-9b": _gemma2(hidden_size=3584, intermediate_size=14336, num_layers=42, num_heads=16, num_kv_heads=8,
                         head_dim=256, query_pre_attn_scalar=256.0),
    "gemma2-27b": _gemma2(hidden_size=4608, intermediate_size=36864, num_layers=46, num_heads=32, num_kv_heads=16,
                          head_dim=128, query_pre_attn_scalar=144.0),
}

FAMILY = base.Family(
    name="gemma2", model_types=("gemma2",), architecture="Gemma2ForCausalLM",
    from_hf=from_hf, to_hf=to_hf, key_rules=key_rules, presets=PRESETS,
)
