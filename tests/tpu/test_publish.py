"""Data from a bucket, exports to a bucket, and publishing to a (local, real-HTTP) hub with a model card.

Buckets are fsspec's in-memory filesystem (memory://), the same code path as gs:// with gcsfs installed."""

import json
from pathlib import Path

import fsspec
import numpy as np
import pytest
import yaml

from fusejax import hub
from fusejax.training.data import read_rows


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from fusejax.tiny import save_tiny_model, tiny_datasets

    root = tmp_path_factory.mktemp("assets")
    return {"model": save_tiny_model(root / "model", "llama", num_hidden_layers=2), **tiny_datasets(root / "data")}


def _put(local: Path, url: str) -> None:
    with fsspec.open(url, "wb") as f:
        f.write(local.read_bytes())


def test_training_rows_read_from_a_bucket(assets):
    sft = Path(assets["sft"])
    expected = [json.loads(ln) for ln in sft.read_text().splitlines() if ln.strip()]
    _put(sft, "memory://bucket/data/part-0.jsonl")
    _put(sft, "memory://bucket/data/part-1.jsonl")
    rows = [r for _, r in read_rows(["memory://bucket/data/part-0.jsonl"])]
    assert rows == expected
    both = list(read_rows(["memory://bucket/data/part-*.jsonl"]))  # a glob: every matching file, in order
    assert [r for _, r in both] == expected + expected
    assert both[0][0] == "part-0.jsonl:1" and both[-1][0] == f"part-1.jsonl:{len(expected)}"
    import pyarrow as pa
    import pyarrow.parquet as pq

    with fsspec.open("memory://bucket/data/sft.parquet", "wb") as f:
        pq.write_table(pa.Table.from_pylist(expected), f)
    assert [r for _, r in read_rows(["memory://bucket/data/sft.parquet"])] == expected
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(read_rows(["memory://bucket/missing/*.jsonl"]))
    try:
        import gcsfs  # noqa: F401
    except ImportError:  # without the `tpu` extra, gs:// says what is missing
        with pytest.raises(FileNotFoundError, match="gcsfs"):
            list(read_rows(["gs://bucket/sft.jsonl"]))


def test_model_card_fields():
    tc = {"stage": "dpo", "model": {"path": "FuseAI/Llama-3.1-8B-SFT", "param_dtype": "float32",
                                    "compute_dtype": "bfloat16"},
          "data": {"train": ["FuseAI/FuseChat-3.0-DPO-Data", "gs://b/dpo.jsonl"], "max_length": 2048, "eval": []},
          "optim": {"learning_rate": 8e-7, "warmup_ratio": 0.1}, "train": {"global_batch_size": 128, "epochs": 1},
          "dpo": {"loss": "ln", "beta": 10.0, "reference": "precomputed"}}
    card = hub.model_card("me/FuseChat-Llama-3.1-8B", tc, {"benchmarks": {
        "gsm8k": {"score": 84.3, "n": 1319, "metric": "accuracy", "status": "ok"},
        "humaneval": {"score": None, "n": 0, "metric": "pass@1", "status": "skipped"}}, "average": 84.3},
        license="llama3.1")
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "FuseAI/Llama-3.1-8B-SFT" and front["datasets"] == ["FuseAI/FuseChat-3.0-DPO-Data"]
    assert front["license"] == "llama3.1" and "dpo" in front["tags"]
    assert "| learning rate | 8e-07 |" in card and "| beta | 10.0 |" in card and "length-normalised" in card
    assert "| gsm8k | 84.30 | 1319 | accuracy | ok |" in card and "| humaneval | - | 0 | pass@1 | skipped |" in card
    assert "arXiv:2503.04222" in card and "`gs://b/dpo.jsonl`" in card
    local = hub.model_card("me/x", {"stage": "sft", "model": {"path": "/data/llama"}, "data": {"train": ["a.jsonl"]}})
    assert "base_model" not in yaml.safe_load(local.split("---")[1])  # a local path is not a hub id


def test_push_without_token_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no cached login either
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    with pytest.raises(hub.HubError, match="HF_TOKEN"):
        hub.push(tmp_path, "me/x", "card")


def test_sft_exports_to_a_bucket_then_convert_pushes_to_the_hub(assets, tmp_path, fake_hub):
    from fusejax.cli import main as cli_main
    from fusejax.training.config import load_config
    from fusejax.training.loop import run

    over = {"stage": "sft", "output_dir": str(tmp_path / "run"), "model.path": str(assets["model"]),
            "model.compute_dtype": "float32", "model.remat": "none",
            "data.train": "memory://bucket/tiny/sft.jsonl", "data.max_length": 128, "data.loss_chunk": 128,
            "train.global_batch_size": 8, "train.grad_accum_steps": 1, "train.max_steps": 2,
            "optim.learning_rate": 1e-3, "checkpoint.async_save": False, "mesh": {"fsdp": 8},
            "export_hf": "memory://bucket/tiny/hf", "push_to_hub": "me/tiny-sft", "push_to_hub_private": True}
    _put(Path(assets["sft"]), "memory://bucket/tiny/sft.jsonl")
    cfg = load_config(None, [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in over.items()])
    assert run(cfg).status == "finished"

    # The bucket holds the HF directory, and it loads in transformers (copied down as a user would).
    bucket = fsspec.filesystem("memory")
    names = sorted(Path(p).name for p in bucket.ls("/bucket/tiny/hf", detail=False))
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} - set(names) == {"README.md"}
    down = tmp_path / "down"
    bucket.get("/bucket/tiny/hf/", str(down), recursive=True)
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(down, torch_dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 2]])
    assert torch.isfinite(hf(ids).logits).all()

    # The next stage can start from the bucket's export (model.path: gs://.../hf): same weights as transformers'.
    from fusejax.training.loop import load_model, load_tokenizer

    nxt = load_config(None, ["model.path=memory://bucket/tiny/hf", "data.train=x.jsonl"], check_paths=False)
    ours = load_model(nxt, None)
    np.testing.assert_array_equal(np.asarray(ours.embed_tokens[...]),
                                  hf.model.embed_tokens.weight.detach().numpy())
    assert load_tokenizer(nxt)("hello world")["input_ids"]

    # The hub got the same files plus the card, over HTTP, into a private repository.
    repo = fake_hub.repos["me/tiny-sft"]
    assert repo["private"]
    for name in names:
        assert repo["files"][name] == (down / name).read_bytes(), name
    card = repo["files"]["README.md"].decode()
    assert "| learning rate | 0.001 |" in card and "- stage: sft" in card and "memory://bucket/tiny/sft.jsonl" in card
    assert fake_hub.metadata and "sft" in fake_hub.metadata[-1]["tags"]

    # convert orbax-to-hf --push-to-hub from the run's checkpoint: the card carries the checkpoint's training config
    # and the eval table.
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"benchmarks": {"gsm8k": {"score": 12.5, "n": 8, "metric": "accuracy",
                                                            "status": "ok"}}, "average": 12.5}))
    dst = tmp_path / "converted"
    rc = cli_main(["convert", "orbax-to-hf", cfg.checkpoint_dir, str(dst), "--tokenizer", str(assets["model"]),
                   "--push-to-hub", "me/tiny-converted", "--eval-results", str(results)])
    assert rc == 0
    conv = fake_hub.repos["me/tiny-converted"]
    assert not conv["private"]
    st = conv["files"]["model.safetensors"]
    assert st == (dst / "model.safetensors").read_bytes()
    card = conv["files"]["README.md"].decode()
    assert "| gsm8k | 12.50 | 8 | accuracy | ok |" in card and "| learning rate | 0.001 |" in card
    assert (dst / "README.md").read_text() == card
