"""What a family is: an HF config reader/writer, an HF parameter-name table, and presets."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from fusejax.models.config import ConfigError, ModelConfig, RopeScaling


@dataclasses.dataclass(frozen=True)
class KeyRule:
    """One HF tensor <-> one of our parameters.

    hf: HF name, "{i}" standing for the layer index (our parameter is then stacked over layers).
    ours: dotted path of our parameter.
    transpose: HF stores Linear weights [out, in]; ours are [in..., out...]. Conversion to ours transposes the 2-D
      HF tensor and reshapes it to our shape; export reshapes ours to 2-D and transposes back.
    """

    hf: str
    ours: str
    transpose: bool = False
    in_dims: int = 1  # with transpose: how many leading dims of ours are the Linear's input (o_proj: N, H)
    flatten: bool = False  # HF keeps it 1-D, ours has more dims (q/k/v bias: [N*H] <-> [N, H])

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf

    def hf_shape(self, our_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The HF tensor shape that corresponds to one (unstacked) parameter of ours."""
        if self.transpose:
            return (math.prod(our_shape[self.in_dims:]), math.prod(our_shape[: self.in_dims]))
        if self.flatten:
            return (math.prod(our_shape),)
        return tuple(our_shape)

    def to_ours(self, hf_tensor, our_shape: tuple[int, ...]):
        x = hf_tensor.T if self.transpose else hf_tensor
        return x.reshape(our_shape)

    def to_hf(self, ours):
        if self.transpose:
            in_size = math.prod(ours.shape[: self.in_dims])
            return ours.reshape(in_size, -1).T
        return ours.reshape(-1) if self.flatten else ours


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    architecture: str  # HF "architectures" entry for the export
    from_hf: Callable[[dict[str, Any]], ModelConfig]
    to_hf: Callable[[ModelConfig], dict[str, Any]]
    key_rules: Callable[[ModelConfig], list[KeyRule]]
    presets: dict[str, ModelConfig]


def _layer(name: str, ours: str, transpose: bool = False, in_dims: int = 1) -> KeyRule:
    return KeyRule(f"model.layers.{{i}}.{name}", f"layers.{ours}", transpose, in_dims)


def common_rules(cfg: ModelConfig) -> list[KeyRule]:
    """The tensors every family shares (HF names of the Llama lineage)."""
    rules = [
        KeyRule("model.embed_tokens.weight", "embed_tokens"),
        KeyRule("model.norm.weight", "norm.weight"),
        _layer("input_layernorm.weight", "input_layernorm.weight"),
    ]
    for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
        rules.append(_layer(f"self_attn.{p}.weight", f"self_attn.{p}.kernel", True, 2 if p == "o_proj" else 1))
    for p in ("gate_proj", "up_proj", "down_proj"):
        rules.append(_layer(f"mlp.{p}.weight", f"mlp.{p}.kernel", transpose=True))
    if not cfg.tie_embeddings:
        rules.append(KeyRule("lm_head.weight", "lm_head", transpose=True))
    return rules


def layer_rule(name: str, ours: str, flatten: bool = False) -> KeyRule:
    return KeyRule(f"model.layers.{{i}}.{name}", f"layers.{ours}", flatten=flatten)


# ---- reading HF configs (both the published pre-5.x format and transformers 5's) ----

def require(hf: dict, key: str, where: str = "config.json"):
    if key not in hf or hf[key] is None:
        raise ConfigError(f"{where}: missing required field '{key}'")
    return hf[key]


def read_rope(hf: dict) -> tuple[float, RopeScaling | None]:
    """rope_theta and scaling from top-level rope_theta/rope_scaling (published configs) or rope_parameters (5.x)."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or None
    theta = hf.get("rope_theta", params.get("rope_theta"))
    if theta is None:
        theta = 10000.0
    if scaling is None and params.get("rope_type", params.get("type", "default")) != "default":
        scaling = params
    if scaling is None:
        return float(theta), None
    rope_type = scaling.get("rope_type", scaling.get("type"))
    if rope_type == "default":
        return float(theta), None
    if rope_type != "llama3":
        raise ConfigError(f"config.json: unsupported rope type '{rope_type}' (supported: default, llama3)")
    try:
        return float(theta), RopeScaling(
            factor=float(scaling["factor"]),
            low_freq_factor=float(scaling["low_freq_factor"]),
            high_freq_factor=float(scaling["high_freq_factor"]),
            original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
        )
    except KeyError as e:
        raise ConfigError(f"config.json: rope_scaling of type llama3 lacks field {e}") from None


def write_rope(cfg: ModelConfig) -> dict:
    out: dict[str, Any] = {"rope_theta": cfg.rope_theta}
    if cfg.rope_scaling is None:
        out["rope_scaling"] = None
    else:
        out["rope_scaling"] = {
            "factor": cfg.rope_scaling.factor,
            "low_freq_factor": cfg.rope_scaling.low_freq_factor,
            "high_freq_factor": cfg.rope_scaling.high_freq_factor,
            "original_max_position_embeddings": cfg.rope_scaling.original_max_position_embeddings,
            "rope_type": "llama3",
        }
    return out


def read_common(hf: dict, model_type: str) -> dict[str, Any]:
    num_heads = int(require(hf, "num_attention_heads"))
    hidden = int(require(hf, "hidden_size"))
    theta, scaling = read_rope(hf)
    return dict(
        model_type=model_type,
        vocab_size=int(require(hf, "vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(require(hf, "intermediate_size")),
        num_layers=int(require(hf, "num_hidden_layers")),
        num_heads=num_heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
        head_dim=int(hf.get("head_dim") or hidden // num_heads),
        rope_theta=theta,
        rope_scaling=scaling,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=int(hf.get("max_position_embeddings", 8192)),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        pad_token_id=hf.get("pad_token_id"),
        torch_dtype=str(hf.get("torch_dtype") or hf.get("dtype") or "bfloat16"),
    )


def write_common(cfg: ModelConfig, architecture: str) -> dict[str, Any]:
    return {
        "architectures": [architecture],
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "torch_dtype": cfg.torch_dtype,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        **write_rope(cfg),
    }


def check_activation(hf: dict, expected: tuple[str, ...], field: str = "hidden_act") -> None:
    act = hf.get(field)
    if act is not None and act not in expected:
        raise ConfigError(f"config.json: unsupported {field} '{act}' (expected one of {list(expected)})")
