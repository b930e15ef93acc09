"""One decoder-only transformer; Llama-3.x, Qwen-2.5 and Gemma-2 as configurations; HF conversion."""

from fusejax.models.build import abstract_model, create_model, param_count, state_shardings
from fusejax.models.config import ConfigError, ModelConfig, RopeScaling, RuntimeOptions
from fusejax.models.families import PRESETS, config_from_hf, config_to_hf, preset
from fusejax.models.hf_io import WeightsError, load_hf, read_hf_config, save_hf
from fusejax.models.transformer import Transformer

__all__ = [
    "ConfigError", "ModelConfig", "PRESETS", "RopeScaling", "RuntimeOptions", "Transformer", "WeightsError",
    "abstract_model", "config_from_hf", "config_to_hf", "create_model", "load_hf", "param_count", "preset",
    "read_hf_config", "save_hf", "state_shardings",
]
