"""Prompt initializers and placement (pure functions)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_jax import prompts
from tests.test_interface import TINY

TABLE = jnp.arange(50 * 4, dtype=jnp.float32).reshape(50, 4)


def embed(ids):
    return TABLE[ids]


def test_random_uniform_range_and_shape():
    p = prompts.random_uniform(jax.random.key(0), 7, 16, scale=0.5)
    assert p.shape == (7, 16) and p.dtype == jnp.float32
    assert float(p.min()) >= -0.5 and float(p.max()) <= 0.5 and float(p.std()) > 0.2


def test_sampled_vocab_draws_distinct_rows_from_the_frequent_range():
    p = np.asarray(prompts.sampled_vocab(jax.random.key(0), embed, 50, 6, top_k=10, skip=3))
    ids = p[:, 0] / 4  # row i of TABLE starts with 4 * i
    assert len(set(ids)) == 6 and all(3 <= i < 13 for i in ids)
    np.testing.assert_array_equal(p, np.asarray(TABLE)[ids.astype(int)])


def test_class_labels_average_pieces_then_sample():
    p = np.asarray(prompts.class_labels(jax.random.key(0), embed, 50, 5, [[2], [4, 6]],
                                        top_k=10))
    np.testing.assert_array_equal(p[0], TABLE[2])
    np.testing.assert_array_equal(p[1], (TABLE[4] + TABLE[6]) / 2)
    assert p.shape == (5, 4)
    with pytest.raises(ValueError, match="3 class labels do not fit in a prompt of length 2"):
        prompts.class_labels(jax.random.key(0), embed, 50, 2, [[1], [2], [3]])


def test_text_init_repeats_or_truncates():
    np.testing.assert_array_equal(prompts.text(embed, [5, 6], 5), TABLE[np.array([5, 6, 5, 6, 5])])
    np.testing.assert_array_equal(prompts.text(embed, [5, 6, 7], 2), TABLE[np.array([5, 6])])


def test_lengths_and_widths_are_checked():
    with pytest.raises(ValueError, match="prompt length must be at least 1, got 0"):
        prompts.random_uniform(jax.random.key(0), 0, 16)
    with pytest.raises(ValueError, match=r"prompt length 100 \+ input length 500 exceeds the "
                                         r"model's maximum length 512"):
        prompts.check_length(100, 512, 500)
    with pytest.raises(ValueError, match=r"p\.npy: prompt of shape \(3, 8\) does not fit the "
                                         r"llama backbone, which expects \(P, 16\)"):
        prompts.from_array(np.zeros((3, 8)), 16, source="p.npy", family="llama")


def test_insert_prompt_at_each_placement_with_padding():
    embeds = jnp.arange(1, 9, dtype=jnp.float32).reshape(2, 4, 1)  # rows 1..4 and 5..8
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    prompt = jnp.array([[-1.0], [-2.0]])
    cases = {
        "prefix": ([[-1, -2, 1, 2, 3, 4], [-1, -2, 5, 6, 7, 8]],
                   [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]], [0, 0]),
        "after_bos": ([[1, -1, -2, 2, 3, 4], [5, -1, -2, 6, 7, 8]],
                      [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]], [1, 1]),
        "suffix": ([[1, 2, 3, -1, -2, 4], [5, 6, -1, -2, 7, 8]],
                   [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]], [3, 2]),
    }
    for placement, (want, want_mask, want_start) in cases.items():
        out, out_mask, start = prompts.insert_prompt(prompt, embeds, mask, placement)
        np.testing.assert_array_equal(np.asarray(out)[..., 0], want, err_msg=placement)
        np.testing.assert_array_equal(out_mask, want_mask, err_msg=placement)
        np.testing.assert_array_equal(start, want_start)
    np.testing.assert_array_equal(prompts.shift_positions(jnp.array([0, 3]), jnp.array([1, 1]),
                                                          2), [0, 5])
    with pytest.raises(ValueError, match="unknown placement 'middle'"):
        prompts.insert_prompt(prompt, embeds, mask, "middle")


def test_per_row_prompts_for_mixed_task_batches():
    embeds = jnp.zeros((2, 3, 2))
    rows = jnp.stack([jnp.ones((2, 2)), 2 * jnp.ones((2, 2))])  # [B, P, H]
    out, _, _ = prompts.insert_prompt(rows, embeds, jnp.ones((2, 3)), "prefix")
    np.testing.assert_array_equal(out[:, :2, 0], [[1, 1], [2, 2]])


def test_per_row_prompt_lengths_keep_each_row_contiguous():
    """Row b takes its prompt's first lengths[b] vectors; the rest of the prompt width becomes
    masked slots at the end of the row, after the text and its padding."""
    embeds = jnp.arange(1, 9, dtype=jnp.float32).reshape(2, 4, 1)  # rows 1..4 and 5..8
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    rows = -jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])[..., None]  # [B, P=3, H=1]
    lengths = jnp.array([1, 3])
    cases = {
        "prefix": ([[-1, 1, 2, 3, 4, 0, 0], [-4, -5, -6, 5, 6, 7, 8]],
                   [[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0]]),
        "after_bos": ([[1, -1, 2, 3, 4, 0, 0], [5, -4, -5, -6, 6, 7, 8]],
                      [[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0]]),
        "suffix": ([[1, 2, 3, -1, 4, 0, 0], [5, 6, -4, -5, -6, 7, 8]],
                   [[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0]]),
    }
    for placement, (want, want_mask) in cases.items():
        out, out_mask, _ = prompts.insert_prompt(rows, embeds, mask, placement, lengths)
        np.testing.assert_array_equal(np.asarray(out)[..., 0], want, err_msg=placement)
        np.testing.assert_array_equal(out_mask, want_mask, err_msg=placement)
    batch = {"inputs": jnp.array([[3, 4, 0], [5, 6, 7]]), "input_mask": jnp.ones((2, 3)),
             "target_position": jnp.array([1, 2]), "prompt_index": jnp.array([1, 0])}
    prompt_set = prompts.PromptSet.stack([jnp.ones((2, 16)), jnp.ones((5, 16))])
    _, _, positions = prompts.prompted_inputs(TINY["bert"](), _bert_params(), prompt_set, batch,
                                              "after_bos")
    np.testing.assert_array_equal(positions, [1 + 5, 2 + 2])  # each row shifts by its own P


def _bert_params():
    return jax.jit(TINY["bert"]().init_params)(jax.random.key(0))


@pytest.mark.parametrize("name", ["llama", "roberta", "t5"])
def test_padding_is_never_attended(name):
    """Changing what sits in padded positions changes nothing at real positions."""
    model = TINY[name]()
    params = jax.jit(model.init_params)(jax.random.key(0))
    ids = jnp.array([[3, 4, 5, 0, 0]])
    mask = jnp.array([[1, 1, 1, 0, 0]])
    prompt = prompts.random_uniform(jax.random.key(1), 2, model.d_model)
    kw = {"decoder_input_ids": jnp.array([[0, 7]])} if model.family == "t5" else {}

    @jax.jit
    def run(ids):
        embeds, m, _ = prompts.insert_prompt(prompt, model.embed(params, ids), mask,
                                             model.default_placement)
        return model.forward(params, embeds, m, **kw)

    a, b = run(ids), run(ids.at[0, 3:].set(9))
    keep = slice(None) if model.family == "t5" else slice(0, 5)  # real + prompt positions
    np.testing.assert_allclose(np.asarray(a)[:, keep], np.asarray(b)[:, keep], atol=1e-6)
