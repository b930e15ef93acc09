"""A packed row gives the same logits as each of its sequences run alone."""

import jax.numpy as jnp
import numpy as np
import pytest

from fusejax.models import load_hf
from fusejax.models.transformer import positions_from_segments
from fusejax.tiny import tiny_hf_model


def test_positions_restart_per_segment():
    seg = jnp.asarray([[1, 1, 1, 2, 2, 3, 0, 0]])
    np.testing.assert_array_equal(np.asarray(positions_from_segments(seg)), [[0, 1, 2, 0, 1, 0, 0, 1]])


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2"])
def test_packed_row_equals_sequences_alone(family, tmp_path):
    tiny_hf_model(family, num_hidden_layers=3).save_pretrained(tmp_path)
    model, _ = load_hf(tmp_path)
    rng = np.random.default_rng(0)
    lengths = [13, 20, 7]  # 20 > gemma's window 8: the window must act within a segment
    seqs = [rng.integers(0, 256, n) for n in lengths]
    pad = 4
    ids = np.concatenate(seqs + [np.full(pad, 5)])[None]
    seg = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)] + [np.zeros(pad, int)])[None]
    packed = np.asarray(model(jnp.asarray(ids), segment_ids=jnp.asarray(seg)))
    start = 0
    for s in seqs:
        alone = np.asarray(model(jnp.asarray(s[None])))
        np.testing.assert_allclose(packed[0, start:start + len(s)], alone[0], atol=1e-5, rtol=0)
        start += len(s)
