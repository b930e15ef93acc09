"""Generation with vLLM and the model's own chat template (`LLM.chat`), built by the project's one engine factory.

A generator is any callable `generator(requests: list[Request]) -> list[str]` (one completion text per request, in
order); `VLLMGenerator` is the real one, tests pass their own (e.g. returning canonical solutions).
`VLLMGenerator.stream(requests)` also yields (index, text) as each request finishes: the driver submits a whole
benchmark at once and writes part files as answers complete, so the engine stays full instead of waiting for the
longest answer of every batch (on CPU a lone long answer runs at a fraction of the batched rate).
"""

from __future__ import annotations

import dataclasses
import gc
import time

from typing import Iterator

from fusejax.eval.prompts import Request


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    max_model_len: int = 4096  # FuseEval's vLLM context (prompt + up to 2048 new tokens)
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    max_num_seqs: int | None = None
    gpu_memory_utilization: float = 0.9
    kv_cache_memory_bytes: int | None = None  # CPU: vLLM's memory check needs it (e.g. 1 << 30)
    enforce_eager: bool = False
    seed: int = 0
    trust_remote_code: bool = False


class VLLMGenerator:
    """Greedy (or per-request temperature) generation with vLLM; the engine starts on the first call."""

    def __init__(self, model: str, options: EngineOptions = EngineOptions(), log=print):
        self.model, self.options, self.log = model, options, log
        self._llm = None
        self.generated_tokens = 0

    def start(self) -> None:
        self._engine()

    def close(self) -> None:
        """Free the engine (as the pipeline's sample stage does between models), so that evaluating several models
        in one process holds one engine at a time."""
        if self._llm is not None:
            self._llm = None
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass

    def _engine(self):
        if self._llm is None:
            from data_pipeline.engine import make_llm

            o = self.options
            t0 = time.time()
            self._llm = make_llm(self.model, seed=o.seed, dtype=o.dtype, max_model_len=o.max_model_len,
                                 max_num_seqs=o.max_num_seqs, tensor_parallel_size=o.tensor_parallel_size,
                                 enforce_eager=o.enforce_eager, gpu_memory_utilization=o.gpu_memory_utilization,
                                 kv_cache_memory_bytes=o.kv_cache_memory_bytes,
                                 trust_remote_code=o.trust_remote_code)
            self.log(f"  vLLM engine for {self.model} ready in {time.time() - t0:.1f}s")
        return self._llm

    def __call__(self, requests: list[Request]) -> list[str]:
        texts: list[str | None] = [None] * len(requests)
        for i, text in self.stream(requests):
            texts[i] = text
        return texts  # type: ignore[return-value]

    def stream(self, requests: list[Request]) -> Iterator[tuple[int, str]]:
        """(index, text) for each request as it finishes; all requests are queued at once."""
        from vllm import SamplingParams

        llm = self._engine()
        index: dict[str, int] = {}
        # The chat renderer takes one continue/generation-prompt mode per call: queue the requests by it.
        for continues in (False, True):
            idx = [i for i, r in enumerate(requests) if r.continues == continues]
            if not idx:
                continue
            params = [SamplingParams(temperature=requests[i].temperature, max_tokens=requests[i].max_tokens,
                                     stop=list(requests[i].stop) or None, seed=0) for i in idx]
            ids = llm.enqueue_chat([list(requests[i].messages) for i in idx], sampling_params=params, use_tqdm=False,
                                   add_generation_prompt=not continues, continue_final_message=continues)
            for rid, i in zip(ids, idx):
                # enqueue returns the engine's internal id ("7-9df76336"); outputs carry the external one ("7").
                index[rid] = index[rid.split("-", 1)[0]] = i
        engine, done = llm.llm_engine, 0
        while engine.has_unfinished_requests():  # as LLM.wait_for_completion, yielding each finished output
            for out in engine.step():
                if out.finished and out.request_id in index:
                    self.generated_tokens += len(out.outputs[0].token_ids)
                    done += 1
                    yield index.pop(out.request_id), out.outputs[0].text
        if done != len(requests):
            raise RuntimeError(f"vLLM finished {done} of {len(requests)} requests")
