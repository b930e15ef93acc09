"""Pipeline configuration (YAML): datasets, source models, reward model, verification and build rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from fusejax.models.config import ConfigError
from fusejax.training.config import _coerce_numbers, _from_dict, read_yaml

Domain = Literal["instruction", "math", "code", "chinese"]
DOMAINS = ("instruction", "math", "code", "chinese")


@dataclasses.dataclass
class TestsSpec:
    """Where a code dataset keeps its tests (becomes the prompt row's `tests`: a harness TestSpec dict).
    kind asserts: `field` holds statements run after the solution (MBPP-style asserts);
    kind check:   `field` defines check(candidate), called with the expression in `entry_point_field`
                  (LeetCodeDataset: test / entry_point "Solution().twoSum" / prompt = imports and helpers);
    from_instruction: no field; the asserts are the one fenced block after "Your code should pass the following
                  assertion(s):" inside the prompt itself (bigcode/self-oss-instruct-sc2-exec-filter-50k)."""

    __test__ = False  # not a pytest test class

    kind: Literal["asserts", "check"] = "asserts"
    field: str | None = None
    entry_point_field: str | None = None
    preamble_field: str | None = None
    from_instruction: bool = False


@dataclasses.dataclass
class ResponsesSpec:
    """A response the dataset already carries, used as one more source: scored, verified and built like a sampled
    one (OpenMathInstruct-2's `generated_solution`, written by Llama-3.1-405B-Instruct)."""

    field: str
    model: str  # the source model's name in outputs and reports; must not be a sampled model's name


@dataclasses.dataclass
class DatasetSpec:
    name: str
    source: str  # hub id, or a local .jsonl/.json/.parquet file
    domain: Domain
    split: str = "train"
    subset: str | None = None  # hub config name
    prompt_field: str | None = None  # a text field -> one user message (or a conversation, see prompt_format)
    input_field: str | None = None  # appended to the prompt as prompt + "\n" + input when non-empty (alpaca)
    prompt_format: Literal["text", "helpsteer2"] = "text"  # helpsteer2: turns split at <extra_id_1>User/Assistant
    messages_field: str | None = None  # a list of {role, content} (or {from, value}); the last assistant turn dropped
    answer_field: str | None = None  # math: gold answer
    tests_field: str | None = None  # code: shorthand for tests: {kind: asserts, field: ...}
    tests: TestsSpec | None = None  # code: where the tests are (see TestsSpec)
    responses: ResponsesSpec | None = None  # the dataset's own responses as one more source
    limit: int | None = None  # keep at most this many prompts (seeded sample after filtering)
    drop_math: bool = False  # remove math prompts (instruction-following and Chinese sets)
    drop_code: bool = False  # remove code prompts
    min_chars: int = 1
    max_chars: int = 16000

    def fields(self) -> list[str]:
        """The row fields this entry reads (each must exist in at least one row)."""
        names = [self.prompt_field, self.input_field, self.messages_field, self.answer_field]
        if self.tests:
            names += [self.tests.field, self.tests.entry_point_field, self.tests.preamble_field]
        if self.responses:
            names.append(self.responses.field)
        return [n for n in names if n]


@dataclasses.dataclass
class ModelSpec:
    name: str
    path: str  # hub id or local directory
    temperature: float = 0.8
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    max_tokens: int = 4096
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    domains: list[str] = dataclasses.field(default_factory=lambda: ["instruction", "math", "code"])
    max_model_len: int | None = None


@dataclasses.dataclass
class RewardSpec:
    path: str = "RLHFlow/ArmoRM-Llama3-8B-v0.1"
    backend: Literal["vllm", "transformers"] = "transformers"  # ArmoRM is custom code: transformers
    trust_remote_code: bool = True
    dtype: str = "bfloat16"
    batch_size: int = 8
    max_length: int | None = None  # tokens of prompt + response; None: the reward model's own context length
    overlong: Literal["skip", "truncate"] = "skip"  # longer inputs: no score (counted) or scored on the first
                                                    # max_length tokens (row marked truncated)


@dataclasses.dataclass
class VerifySpec:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    workers: int = 0  # 0: one per CPU core


@dataclasses.dataclass
class BuildSpec:
    sft_fraction: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"instruction": 0.4, "math": 0.4, "code": 0.4, "chinese": 1.0})
    gap_min: float = 0.01
    gap_max: float = 0.1
    chinese_model: str = "qwen2.5-72b-instruct"


@dataclasses.dataclass
class VLLMSpec:
    enforce_eager: bool = False
    kv_cache_memory_bytes: int | None = None
    gpu_memory_utilization: float = 0.9
    batch_prompts: int = 256  # prompts per resumable part file


@dataclasses.dataclass
class PipelineConfig:
    seed: int = 0
    datasets: list[DatasetSpec] = dataclasses.field(default_factory=list)
    models: list[ModelSpec] = dataclasses.field(default_factory=list)
    samples: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"instruction": 5, "math": 5, "code": 8, "chinese": 1})
    reward: RewardSpec = dataclasses.field(default_factory=RewardSpec)
    verify: VerifySpec = dataclasses.field(default_factory=VerifySpec)
    build: BuildSpec = dataclasses.field(default_factory=BuildSpec)
    vllm: VLLMSpec = dataclasses.field(default_factory=VLLMSpec)


def load(path: str | Path) -> PipelineConfig:
    path = Path(path)
    cfg = _from_dict(PipelineConfig, _coerce_numbers(read_yaml(path)), "")
    _validate(cfg, path)
    return cfg


def _validate(cfg: PipelineConfig, path: Path) -> None:
    if not cfg.datasets:
        raise ConfigError(f"{path}: datasets: at least one dataset is required")
    names = [d.name for d in cfg.datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: datasets: duplicate names")
    for i, d in enumerate(cfg.datasets):
        where = f"{path}: datasets[{i}] ({d.name})"
        if (d.prompt_field is None) == (d.messages_field is None):
            raise ConfigError(f"{where}: set exactly one of prompt_field and messages_field")
        if d.domain == "math" and not d.answer_field:
            raise ConfigError(f"{where}: math datasets need answer_field (gold answers)")
        if d.tests_field:
            if d.tests:
                raise ConfigError(f"{where}: set tests_field or tests, not both")
            d.tests, d.tests_field = TestsSpec(kind="asserts", field=d.tests_field), None
        if d.domain == "code" and not d.tests:
            raise ConfigError(f"{where}: code datasets need tests (or tests_field)")
        if d.tests and d.domain != "code":
            raise ConfigError(f"{where}: tests apply to code datasets only")
        if d.tests:
            _validate_tests(d.tests, f"{where}.tests")
        if d.prompt_format == "helpsteer2" and not d.prompt_field:
            raise ConfigError(f"{where}: prompt_format helpsteer2 needs prompt_field")
        if d.input_field and not d.prompt_field:
            raise ConfigError(f"{where}: input_field needs prompt_field")
    models = [m.name for m in cfg.models]
    if len(set(models)) != len(models):
        raise ConfigError(f"{path}: models: duplicate names")
    for m in cfg.models:
        bad = sorted(set(m.domains) - set(DOMAINS))
        if bad:
            raise ConfigError(f"{path}: models ({m.name}).domains: unknown {bad}")
    for d in cfg.datasets:
        if d.responses and d.responses.model in models:
            raise ConfigError(f"{path}: datasets ({d.name}).responses.model '{d.responses.model}' is also a sampled "
                              "model; give the dataset's responses their own source name")
    if "chinese" in {d.domain for d in cfg.datasets} and cfg.build.chinese_model not in models:
        raise ConfigError(f"{path}: build.chinese_model '{cfg.build.chinese_model}' is not among models")
    if not 0 <= cfg.build.gap_min <= cfg.build.gap_max:
        raise ConfigError(f"{path}: build: need 0 <= gap_min <= gap_max")


def _validate_tests(t: TestsSpec, where: str) -> None:
    if t.from_instruction:
        if t.field or t.kind != "asserts":
            raise ConfigError(f"{where}: from_instruction takes its asserts from the prompt; no field or kind")
        return
    if not t.field:
        raise ConfigError(f"{where}: field is required (or from_instruction: true)")
    if t.kind == "check" and not t.entry_point_field:
        raise ConfigError(f"{where}: kind check needs entry_point_field (the expression passed to check)")
