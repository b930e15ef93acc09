"""Typed model configuration: one decoder, families differ only in these fields."""

from __future__ import annotations

import dataclasses
from typing import Literal

LayerType = Literal["full_attention", "sliding_attention"]


class ConfigError(ValueError):
    """A model config (or a config/weights pair) that we cannot honour; the message names the field."""


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama-3 ("llama3") RoPE frequency scaling. Other rope types are rejected at load time."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int
    rope_type: str = "llama3"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a decoder-only transformer (what a HF config.json describes)."""

    model_type: str  # "llama", "mistral", "qwen2" or "gemma2": selects the HF key table and config writer
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 8192
    tie_embeddings: bool = False
    # Qwen-2: bias on q, k and v projections.
    qkv_bias: bool = False
    # Gemma-2 switches.
    norm_plus_one: bool = False  # RMSNorm scales by (1 + w)
    scale_embeddings: bool = False  # embeddings multiplied by sqrt(hidden_size)
    post_norms: bool = False  # extra norms on the attention and MLP outputs
    activation: Literal["silu", "gelu_tanh"] = "silu"
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    sliding_window: int | None = None
    layer_types: tuple[LayerType, ...] | None = None  # None: every layer full attention
    query_pre_attn_scalar: float | None = None  # attention scale is its -1/2 power; None: head_dim
    # Token ids carried through to the exported config / generation config.
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    torch_dtype: str = "bfloat16"  # dtype the HF checkpoint is published in; export default

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_attention_heads ({self.num_heads}) must be a multiple of num_key_value_heads ({self.num_kv_heads})"
            )
        if self.layer_types is not None:
            if len(self.layer_types) != self.num_layers:
                raise ConfigError(
                    f"layer_types has {len(self.layer_types)} entries but num_hidden_layers is {self.num_layers}"
                )
            bad = sorted(set(self.layer_types) - {"full_attention", "sliding_attention"})
            if bad:
                raise ConfigError(f"layer_types: unsupported layer type(s) {bad}")
            if "sliding_attention" in self.layer_types and not self.sliding_window:
                raise ConfigError("layer_types has sliding_attention layers but sliding_window is not set")

    @property
    def attention_scale(self) -> float:
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    def layer_windows(self) -> tuple[int, ...]:
        """Per layer: the sliding-window size, or 0 for full attention."""
        if self.layer_types is None:
            return (0,) * self.num_layers
        return tuple(self.sliding_window if t == "sliding_attention" else 0 for t in self.layer_types)

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
    """How the model runs, independent of what it is: dtypes, rematerialisation, layer scan."""

    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    # "none": keep all activations; "full": recompute each layer in the backward pass;
    # "dots": save matmul outputs without batch dims (jax.checkpoint_policies.dots_with_no_batch_dims_saveable).
    remat: Literal["none", "full", "dots"] = "none"
    scan_layers: bool = True
    # Attention over blocks of this many queries (memory: scores for one block at a time); None: all at once.
    attention_query_chunk: int | None = None
    # "xla": masked dot-product attention (the reference, and the CPU path); "splash": the Pallas TPU flash kernel
    # (models/splash.py; interpret mode off TPU), no [T,S] scores in memory. Sequence a multiple of 128.
    attention: Literal["xla", "splash"] = "xla"
    splash_block: int = 512  # splash q/kv block: the largest of 1024/512/256/128 not above it that divides T
