"""Mixed-task batches: rows with prompts of different lengths (a PromptSet) and candidate sets
of different sizes get exactly the scores each row gets alone, on every family; padded
candidate slots score -inf and never win."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_jax import prompts, scoring
from prompt_jax.models import (
    T5,
    Gemma3,
    Gemma3Config,
    Llama,
    LlamaConfig,
    Roberta,
    RobertaConfig,
    T5Config,
)
from prompt_jax.tasks import FAMILY_STYLE
from prompt_jax.training import train
from tests.test_interface import TINY
from tests.test_train_step import _expressive

# Width 32, 2 layers; position tables long enough for a 100-vector prompt. BERT's fits the
# longest row (110 tokens: 100 prompt vectors and 10 input tokens) but not the batch width (112).
MODELS = {
    "t5": lambda: T5(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                              num_decoder_layers=2, num_heads=4)),
    "roberta": lambda: Roberta(RobertaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=64,
                                             max_position_embeddings=160)),
    "bert": lambda: Roberta(RobertaConfig(variant="bert", vocab_size=64, hidden_size=32,
                                          num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=64, max_position_embeddings=111,
                                          type_vocab_size=2, pad_token_id=0)),
    "llama": lambda: Llama(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=4,
                                       num_key_value_heads=2)),
    "gemma3": lambda: Gemma3(Gemma3Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
        layer_types=("sliding_attention", "full_attention"))),
}
DECODERS = ("llama", "gemma3")  # decoder-only: shared prefixes, packing

PROMPT_LENGTHS = (5, 20, 100)  # task 0, 1, 2
# Verbalizers (token ids) of three tasks: 2, 3 and 6 classes, some of two tokens.
TASK_CANDIDATES = (
    [[11, 12], [21]],
    [[5], [6], [7]],
    [[30], [31], [32, 33], [34], [35], [36]],
)
SINGLE_TOKEN_CANDIDATES = ([[11], [21]], [[5], [6], [7]], [[30], [31], [32], [34], [35], [36]])
ROW_TASK = np.array([0, 1, 2, 0, 2], np.int32)
ROW_LENGTH = np.array([7, 3, 10, 4, 6])  # real input tokens of each row
T = 12  # the batch's input width (every row right-padded)
MASK_ID, CLS_ID = 63, 2


def _rows(family):
    """Each row alone: (ids [T_b], target position) with a <mask> for masked LMs."""
    rng = np.random.default_rng(0)
    rows = []
    for b, n in enumerate(ROW_LENGTH):
        ids = rng.integers(3, 60, size=n).astype(np.int32)
        target = 0
        if family in ("roberta", "bert"):
            ids[0] = CLS_ID
            target = 1 if b % 2 == 0 else n - 1  # <mask> right after [CLS], or last
            ids[target] = MASK_ID
        rows.append((ids, target))
    return rows


def _mixed_batch(rows):
    inputs = np.zeros((len(rows), T), np.int32)
    mask = np.zeros((len(rows), T), np.int32)
    for b, (ids, _) in enumerate(rows):
        inputs[b, :len(ids)], mask[b, :len(ids)] = ids, 1
    return {"inputs": inputs, "input_mask": mask, "prompt_index": ROW_TASK,
            "target_position": np.array([t for _, t in rows], np.int32)}


def _pad(cands, c, k):
    """Token-id lists -> ([C, K] ids, [C, K] mask) padded with zeros to C rows, K columns."""
    ids, mask = np.zeros((c, k), np.int32), np.zeros((c, k), np.int32)
    for i, t in enumerate(cands):
        ids[i, :len(t)], mask[i, :len(t)] = t, 1
    return ids, mask


def _per_row_candidates(task_candidates):
    """[B, C, K] ids and mask: each row its task's candidates, padded to the widest set."""
    c = max(len(s) for s in task_candidates)
    k = max(len(t) for s in task_candidates for t in s)
    padded = [_pad(task_candidates[t], c, k) for t in ROW_TASK]
    return (jnp.asarray(np.stack([p[0] for p in padded])),
            jnp.asarray(np.stack([p[1] for p in padded])))


def _setup(name):
    model = MODELS[name]()
    params = _expressive(jax.jit(model.init_params)(jax.random.key(0)))
    keys = jax.random.split(jax.random.key(1), len(PROMPT_LENGTHS))
    task_prompts = [prompts.random_uniform(k, p, model.d_model)
                    for k, p in zip(keys, PROMPT_LENGTHS, strict=True)]
    return model, params, task_prompts


def _scorer(model, placement):
    return jax.jit(lambda params, prompt, batch, cands: scoring.candidate_scores(
        model, params, prompt, batch, cands, placement))


def _alone(model, params, task_prompts, rows, task_candidates):
    """Each row's scores [C_b] in a batch of its own: its own [P, H] prompt, its unpadded
    candidates and input."""
    score = _scorer(model, model.default_placement)
    out = []
    for (ids, target), task in zip(rows, ROW_TASK, strict=True):
        batch = {"inputs": ids[None], "input_mask": np.ones((1, len(ids)), np.int32),
                 "target_position": np.array([target], np.int32)}
        cands = task_candidates[task]
        cands = tuple(map(jnp.asarray, _pad(cands, len(cands), max(map(len, cands)))))
        out.append(np.asarray(score(params, task_prompts[task], batch, cands))[0])
    return out


def _assert_rows_match(mixed, alone):
    mixed = np.asarray(mixed)
    for b, want in enumerate(alone):
        c = len(want)
        np.testing.assert_allclose(mixed[b, :c], want, atol=1e-5, rtol=0, err_msg=f"row {b}")
        assert np.all(mixed[b, c:] == -np.inf), (b, mixed[b])
        assert mixed[b].argmax() == want.argmax(), (b, mixed[b], want)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_mixed_batch_scores_equal_each_row_alone(name):
    """Prompts of 5, 20 and 100 vectors, 2, 3 and 6 candidates (some of two tokens), inputs of
    different lengths, in one batch: each row gets its solo scores and prediction."""
    model, params, task_prompts = _setup(name)
    rows = _rows(model.family)
    cands = _per_row_candidates(TASK_CANDIDATES)
    mixed = _scorer(model, model.default_placement)(
        params, prompts.PromptSet.stack(task_prompts), _mixed_batch(rows), cands)
    alone = _alone(model, params, task_prompts, rows, TASK_CANDIDATES)
    _assert_rows_match(mixed, alone)
    # The scores depend on the prompt: a row's prediction is not the same for every row.
    assert len({round(float(a.max()), 3) for a in alone}) == len(alone)


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("task_candidates", [TASK_CANDIDATES, SINGLE_TOKEN_CANDIDATES],
                         ids=["two_token", "single_token"])
def test_decoder_prompt_set_keys_values_equal_per_row_insertion(task_candidates, name):
    """A decoder's shared-prefix path (each prompt's keys and values computed once, gathered
    by prompt_index) equals inserting each row's prompt into it, and each row alone."""
    model, params, task_prompts = _setup(name)
    rows = _rows(name)
    batch = _mixed_batch(rows)
    prompt_set = prompts.PromptSet.stack(task_prompts)
    cands = _per_row_candidates(task_candidates)

    @jax.jit
    def by_insertion(prompt_set):
        embeds, mask, pos = prompts.prompted_inputs(model, params, prompt_set, batch, "prefix")
        return model.score(params, embeds, mask, *cands, target_positions=pos)

    fast = _scorer(model, "prefix")(params, prompt_set, batch, cands)
    np.testing.assert_allclose(fast, by_insertion(prompt_set), atol=1e-5, rtol=0)
    _assert_rows_match(fast, _alone(model, params, task_prompts, rows, task_candidates))
    # Shared [C, K] candidates work with a PromptSet too.
    shared = tuple(map(jnp.asarray, _pad(task_candidates[2], 6, 2)))
    embeds, mask, _ = prompts.prompted_inputs(model, params, prompt_set, batch, "prefix")
    np.testing.assert_allclose(_scorer(model, "prefix")(params, prompt_set, batch, shared),
                               jax.jit(model.score)(params, embeds, mask, *shared),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["t5", "roberta", "bert", "llama"])
def test_padded_candidate_slot_scores_minus_inf_and_never_wins(name):
    model = TINY[name]()
    params = jax.jit(model.init_params)(jax.random.key(0))
    ids = jnp.array([[3, 4, 63, 6, 7], [8, 63, 10, 11, 0]])
    mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    cand_ids = jnp.array([[5, 6], [7, 0], [0, 0]])
    cand_mask = jnp.array([[1, 1], [1, 0], [0, 0]])  # slot 2 is padding
    scores = np.asarray(jax.jit(model.score)(params, model.embed(params, ids), mask, cand_ids,
                                             cand_mask, target_positions=jnp.array([2, 1])))
    assert np.all(np.isfinite(scores[:, :2])) and np.all(scores[:, :2] < 0)
    assert np.all(scores[:, 2] == -np.inf)
    assert np.all(scores.argmax(-1) != 2)


@pytest.mark.parametrize("name", ["llama", "roberta"])
def test_rank_loss_with_padded_slots_is_finite_and_equals_the_unpadded_loss(name):
    model = TINY[name]()
    params = _expressive(jax.jit(model.init_params)(jax.random.key(0)))
    b = 4
    batch = {"inputs": jnp.array([[3, 63, 5, 6], [7, 63, 9, 0], [10, 63, 12, 13], [2, 63, 0, 0]]),
             "input_mask": jnp.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]]),
             "target_position": jnp.ones((b,), jnp.int32), "label": jnp.array([0, 1, 1, 0]),
             "weight": jnp.ones((b,), jnp.float32)}
    prompt = prompts.random_uniform(jax.random.key(1), 3, model.d_model)
    placement = model.default_placement
    unpadded = (jnp.array([[11, 12], [21, 0]]), jnp.array([[1, 1], [1, 0]]))
    padded = (jnp.array([[11, 12], [21, 0], [0, 0], [0, 0]]),
              jnp.array([[1, 1], [1, 0], [0, 0], [0, 0]]))

    def loss(p, cands):
        return train.loss_fn(p, params, batch, model=model, loss="rank", placement=placement,
                             candidates=cands)[0]

    value, grad = jax.jit(jax.value_and_grad(loss))(prompt, padded)
    want_value, want_grad = jax.jit(jax.value_and_grad(loss))(prompt, unpadded)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    assert float(jnp.abs(grad).sum()) > 0
    np.testing.assert_allclose(float(value), float(want_value), atol=1e-5, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, atol=1e-5, rtol=1e-4)


def test_prompt_set_stacks_prompts_of_different_lengths():
    a, b = jnp.ones((2, 4)), 2 * jnp.ones((5, 4))
    ps = prompts.PromptSet.stack([a, b])
    assert ps.vectors.shape == (2, 5, 4) and ps.lengths.tolist() == [2, 5]
    np.testing.assert_array_equal(ps.vectors[0, 2:], 0)
    vectors, lengths = ps.rows(jnp.array([1, 0, 1]))
    assert vectors.shape == (3, 5, 4) and lengths.tolist() == [5, 2, 5]
    with pytest.raises(ValueError, match=r"one H.*\(2, 4\), \(5, 3\)"):
        prompts.PromptSet.stack([a, jnp.ones((5, 3))])
    leaves = jax.tree_util.tree_leaves(ps)  # a pytree: jitted steps take it as an argument
    assert len(leaves) == 2


@pytest.mark.parametrize("name", sorted(MODELS))
def test_backbone_declares_style_placement_and_capabilities(name):
    """What callers used to derive from the family name, the backbone declares."""
    model = MODELS[name]()
    assert model.prompt_style == FAMILY_STYLE[model.family]
    assert model.default_placement == ("after_bos" if model.family in ("roberta", "bert")
                                       else "prefix")
    assert model.shares_prefix == model.packs == (model.family in DECODERS)
    if not model.packs:
        with pytest.raises(NotImplementedError, match=f"the {model.family} backbone has no"):
            model.pack_keys_per_token()
        with pytest.raises(NotImplementedError, match=f"the {model.family} backbone has no"):
            model.prefix_kv(None, jnp.zeros((2, model.d_model)))
    if model.family not in DECODERS:
        with pytest.raises(NotImplementedError, match="hidden_states"):
            model.hidden_states(None, None, None)
    else:
        with pytest.raises(NotImplementedError, match=f"the {name} backbone has no encoder"):
            model.encode(None, None, None)
    if model.family in ("roberta", "bert"):
        with pytest.raises(NotImplementedError, match="generation"):
            model.generate(None, None, None, 3)
