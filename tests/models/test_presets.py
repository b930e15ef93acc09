"""Presets: parameter counts of the published models (abstract shapes only) and HF config round trips, checked
against values copied from the published config.json files."""

import pytest

from fusejax.models import PRESETS, ModelConfig, config_from_hf, config_to_hf, param_count
from fusejax.models.families.gemma2 import from_hf as gemma_from_hf

# Published parameter counts (model cards / safetensors metadata).
PUBLISHED = {
    "llama3.1-8b": 8_030_261_248,
    "llama3.2-3b": 3_212_749_824,
    "llama3.2-1b": 1_235_814_400,
    "qwen2.5-7b": 7_615_616_512,
    "gemma2-9b": 9_241_705_984,
    "gemma2-27b": 27_227_128_320,
    "llama3.1-70b": 70_553_706_496,
    "qwen2.5-72b": 72_706_203_648,
}

# Hand-copied from the published config.json files (pre-transformers-5 format), fields that matter.
LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "max_position_embeddings": 131072, "tie_word_embeddings": False,
    "hidden_act": "silu", "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16",
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}
LLAMA32_1B = {**LLAMA31_8B, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
              "head_dim": 64, "tie_word_embeddings": True,
              "rope_scaling": {**LLAMA31_8B["rope_scaling"], "factor": 32.0}}
LLAMA32_3B = {**LLAMA32_1B, "hidden_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 24,
              "head_dim": 128}
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584,
    "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "max_position_embeddings": 32768, "tie_word_embeddings": False,
    "hidden_act": "silu", "sliding_window": 131072, "use_sliding_window": False, "max_window_layers": 28,
    "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "bfloat16",
}
GEMMA2_9B = {
    "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "vocab_size": 256000, "hidden_size": 3584,
    "intermediate_size": 14336, "num_hidden_layers": 42, "num_attention_heads": 16, "num_key_value_heads": 8,
    "head_dim": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "max_position_embeddings": 8192,
    "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256,
    "sliding_window": 4096, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
    "bos_token_id": 2, "eos_token_id": [1, 107], "pad_token_id": 0, "torch_dtype": "bfloat16",
}
PUBLISHED_CONFIGS = {"llama3.1-8b": LLAMA31_8B, "llama3.2-1b": LLAMA32_1B, "llama3.2-3b": LLAMA32_3B,
                     "qwen2.5-7b": QWEN25_7B, "gemma2-9b": GEMMA2_9B}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_published(name):
    assert param_count(PRESETS[name]) == PUBLISHED[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED_CONFIGS))
def test_published_config_reads_as_preset(name):
    assert config_from_hf(PUBLISHED_CONFIGS[name]) == PRESETS[name]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_hf_config_round_trip(name):
    cfg: ModelConfig = PRESETS[name]
    assert config_from_hf(config_to_hf(cfg)) == cfg


def test_gemma2_alternation_implied_by_published_config():
    cfg = gemma_from_hf(GEMMA2_9B)
    assert cfg.layer_windows()[:4] == (4096, 0, 4096, 0)
    assert cfg.attention_scale == 256 ** -0.5  # query_pre_attn_scalar (= head_dim here), not hidden/heads


def test_transformers5_config_format_reads_the_same():
    """transformers 5 writes rope_parameters (rope_theta inside) and layer_types; both formats must agree."""
    new = {k: v for k, v in LLAMA31_8B.items() if k not in ("rope_theta", "rope_scaling")}
    new["rope_parameters"] = {**LLAMA31_8B["rope_scaling"], "rope_theta": 500000.0}
    assert config_from_hf(new) == PRESETS["llama3.1-8b"]
    g = {k: v for k, v in GEMMA2_9B.items() if k != "rope_theta"}
    g["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    g["layer_types"] = ["sliding_attention", "full_attention"] * 21
    assert config_from_hf(g) == PRESETS["gemma2-9b"]


def test_transformers_reads_our_exported_config():
    from transformers import AutoConfig
    import json, tempfile, pathlib

    for name in ("llama3.1-8b", "qwen2.5-7b", "gemma2-9b"):
        d = pathlib.Path(tempfile.mkdtemp())
        (d / "config.json").write_text(json.dumps(config_to_hf(PRESETS[name])))
        hf = AutoConfig.from_pretrained(d)
        assert hf.hidden_size == PRESETS[name].hidden_size
        assert config_from_hf(hf.to_dict()) == PRESETS[name]
