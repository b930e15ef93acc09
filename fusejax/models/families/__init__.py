"""Model families: each is a config reader/writer, an HF key table and presets for the one decoder."""

from __future__ import annotations

from fusejax.models.config import ConfigError, ModelConfig
from fusejax.models.families import gemma2, llama, qwen2
from fusejax.models.families.base import Family, KeyRule

FAMILIES: tuple[Family, ...] = (llama.FAMILY, qwen2.FAMILY, gemma2.FAMILY)
PRESETS: dict[str, ModelConfig] = {k: v for f in FAMILIES for k, v in f.presets.items()}


def family_for(model_type: str) -> Family:
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    supported = sorted(t for f in FAMILIES for t in f.model_types)
    raise ConfigError(f"config.json: unsupported model_type '{model_type}' (supported: {', '.join(supported)})")


def config_from_hf(hf: dict) -> ModelConfig:
    """ModelConfig from an HF config.json dict (published pre-5.x format or transformers 5's)."""
    if "model_type" not in hf:
        raise ConfigError("config.json: missing required field 'model_type'")
    return family_for(hf["model_type"]).from_hf(hf)


def config_to_hf(cfg: ModelConfig) -> dict:
    """HF config.json dict in the published (pre-5.x) format, which transformers 4 and 5 both read."""
    return family_for(cfg.model_type).to_hf(cfg)


def key_rules(cfg: ModelConfig) -> list[KeyRule]:
    return family_for(cfg.model_type).key_rules(cfg)


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (known: {', '.join(sorted(PRESETS))})")
    return PRESETS[name]


__all__ = ["FAMILIES", "PRESETS", "Family", "KeyRule", "config_from_hf", "config_to_hf", "family_for", "key_rules",
           "preset"]
