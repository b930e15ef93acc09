import pytest

from fusejax.tiny import save_tiny_model, tiny_datasets


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """A tiny random Llama with a locally trained tokenizer, plus SFT and DPO JSONL files."""
    root = tmp_path_factory.mktemp("assets")
    model = save_tiny_model(root / "model", "llama", num_hidden_layers=2)
    paths = tiny_datasets(root / "data")
    return {"model": model, **paths}


def make_config(tiny_assets, tmp_path, stage="sft", **over):
    from fusejax.training.config import load_config

    items = {
        "stage": stage, "output_dir": str(tmp_path / "run"), "model.path": str(tiny_assets["model"]),
        "model.compute_dtype": "float32", "model.remat": "none",
        "data.train": str(tiny_assets[stage]), "data.max_length": 128, "data.loss_chunk": 128,
        "train.global_batch_size": 8, "train.grad_accum_steps": 2, "train.epochs": 1,
        "optim.learning_rate": 1e-3, "checkpoint.save_every": 2, "checkpoint.keep": 10,
        "checkpoint.async_save": False, "mesh": {"fsdp": 8},
    }
    if stage == "dpo":
        items.update({"dpo.beta": 0.1, "dpo.loss": "sigmoid"})
    items.update(over)
    import json
    return load_config(None, [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in items.items()])
