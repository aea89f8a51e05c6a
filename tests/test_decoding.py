"""Cached greedy decoding after a soft prompt equals Hugging Face's greedy `generate` token for
token on tiny random Llama, Gemma 3 (sliding window 4, shorter than the rows) and T5 models,
with the prompt given to HF through `inputs_embeds`; it stops at EOS and at a stop string; and
it compiles once per bucket."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from prompt_jax import decoding, scoring
from prompt_jax.models import T5, Llama, LlamaConfig, T5Config, load_pretrained
from prompt_jax.prompts import PromptSet
from tests.hf_models import load_reference, save_tiny

# Rows of 5, 9 and 3 real tokens (the middle one the longest), then padding; 10 new tokens.
ROWS = [[5, 17, 33, 8, 61], [9, 44, 21, 90, 12, 70, 3, 55, 40], [26, 7, 81]]
P, N = 4, 10
FAMILIES = ("llama", "gemma3", "t5_v1_1")


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tmp_path_factory):
    kind = request.param
    directory = save_tiny(kind, tmp_path_factory.mktemp("decode") / kind)
    pre = load_pretrained(directory)
    prompt = np.random.default_rng(5).normal(0, 1.0, (P, pre.model.d_model)).astype(np.float32)
    return kind, load_reference(kind, directory), pre.model, pre.params, prompt


def _padded(rows, left=False, pad=0):
    """[B, T] ids and mask of rows, right-padded (or left-padded)."""
    t = max(len(r) for r in rows)
    ids, mask = np.full((len(rows), t), pad, np.int64), np.zeros((len(rows), t), np.int64)
    for b, r in enumerate(rows):
        cols = slice(t - len(r), t) if left else slice(0, len(r))
        ids[b, cols], mask[b, cols] = r, 1
    return ids, mask


def _theirs(kind, ref, prompts, rows, eos, pad=0, n=N):
    """HF greedy `generate` of rows after their prompts (one [P_b, H] per row), through
    `inputs_embeds`: decoder-only rows left-padded as a whole ([pad, prompt, text]), T5 rows
    right-padded ([prompt, text, pad]). -> [B, steps] new tokens."""
    with torch.no_grad():
        embedded = [torch.cat([torch.from_numpy(p), ref.get_input_embeddings()(torch.tensor(r))])
                    for p, r in zip(prompts, rows, strict=True)]
        width = max(len(e) for e in embedded)
        embeds = torch.zeros(len(rows), width, embedded[0].shape[1])
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for b, e in enumerate(embedded):
            cols = slice(0, len(e)) if kind.startswith("t5") else slice(width - len(e), width)
            embeds[b, cols], mask[b, cols] = e, 1
        # HF's T5 cache has num_layers (encoder) slots and fails with more decoder layers.
        out = ref.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=n,
                           do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=pad,
                           use_cache=not kind.startswith("t5"))
    out = out.numpy()
    return out[:, 1:] if kind.startswith("t5") else out  # T5: drop the decoder start token


def _assert_same(ours: decoding.Generation, theirs: np.ndarray, pad=0):
    steps = theirs.shape[1]
    np.testing.assert_array_equal(ours.token_ids[:, :steps], theirs)
    assert (ours.token_ids[:, steps:] == pad).all()


def test_greedy_equals_transformers_generate_with_a_soft_prompt(tiny):
    kind, ref, model, params, prompt = tiny
    ids, mask = _padded(ROWS, left=kind == "llama")  # our rows may be padded either side
    # No EOS among the tokens: every row runs N steps, equal to HF's.
    full = decoding.greedy(model, params, jnp.asarray(prompt), ids, mask, max_new_tokens=N,
                           eos_ids=-1)
    assert full.finish == ("length",) * 3 and (full.lengths == N).all()
    unused = next(i for i in range(3, 96) if i not in full.token_ids)
    _assert_same(full, _theirs(kind, ref, [prompt] * 3, ROWS, unused))
    assert len({tuple(r) for r in full.token_ids}) == 3  # the rows decode differently

    # EOS = the first token row 0 emits at a step s >= 1 and not before: row 0 stops after
    # s + 1 tokens (HF's too), the other rows wherever they emit it, or not.
    s = next(s for s in range(1, N) if full.token_ids[0, s] not in full.token_ids[0, :s])
    eos = int(full.token_ids[0, s])
    early = decoding.greedy(model, params, jnp.asarray(prompt), ids, mask, max_new_tokens=N,
                            eos_ids=[eos, unused])
    assert early.lengths[0] == s + 1 < N and early.finish[0] == "eos"
    assert (early.token_ids[0, s + 1:] == 0).all()
    _assert_same(early, _theirs(kind, ref, [prompt] * 3, ROWS, [eos, unused]))

    # A stop string: the text of row 1's tokens 3 and 4 (under a toy decode). Row 1 ends at the
    # token that completes it (and its ids after are pad); its text stops before it.
    decode = lambda toks: "".join(chr(ord("a") + t % 26) for t in toks)  # noqa: E731
    stop = decode(full.token_ids[1, 3:5].tolist())
    cut = decoding.greedy(model, params, jnp.asarray(prompt), ids, mask, max_new_tokens=N,
                          eos_ids=-1, stop=stop, decode=decode)
    text1 = decode(full.token_ids[1].tolist())
    k = text1.index(stop) + len(stop)
    assert cut.finish[1] == "stop" and cut.lengths[1] == k
    assert cut.texts[1] == text1[:text1.index(stop)]
    np.testing.assert_array_equal(cut.token_ids[1, :k], full.token_ids[1, :k])
    assert (cut.token_ids[1, k:] == 0).all()

    # A smaller per-task maximum: HF's max_new_tokens=4.
    short = decoding.greedy(model, params, jnp.asarray(prompt), ids, mask, max_new_tokens=4,
                            eos_ids=-1)
    np.testing.assert_array_equal(short.token_ids, _theirs(kind, ref, [prompt] * 3, ROWS, unused,
                                                           n=4))


def test_mixed_prompts_and_precomputed_prompt_keys_values(tiny):
    """Rows with different prompts (a PromptSet of lengths 4 and 2) decode as HF decodes each
    row after its own prompt; on decoder-only models the prompts' keys and values given
    precomputed (once per prompt, as a serving bank holds them) decode the same."""
    kind, ref, model, params, prompt = tiny
    second = np.random.default_rng(4).normal(0, 1.0, (2, model.d_model)).astype(np.float32)
    prompt_set = PromptSet.stack([prompt, second])
    index = np.array([0, 1, 1])
    ids, mask = _padded(ROWS)
    ours = decoding.greedy(model, params, prompt_set, ids, mask, max_new_tokens=N, eos_ids=-1,
                           prompt_index=index)
    for b in range(3):
        theirs = _theirs(kind, ref, [[prompt, second][index[b]]], ROWS[b:b + 1], 95)
        np.testing.assert_array_equal(ours.token_ids[b, :theirs.shape[1]], theirs[0])
    if not model.shares_prefix:
        kv = scoring.CachedPrompts(jnp.zeros((1, 1, 1, 1, 1)), jnp.zeros((1, 1, 1, 1, 1)),
                               jnp.ones((1,), jnp.int32))
        with pytest.raises(ValueError, match="does not share prefixes"):
            decoding.greedy(model, params, kv, ids, mask, max_new_tokens=N, prompt_index=index)
        return
    keys, values = model.prefix_kv(params, prompt_set.vectors, prompt_set.lengths)
    bank = scoring.CachedPrompts(keys, values, prompt_set.lengths)
    again = decoding.greedy(model, params, bank, ids, mask, max_new_tokens=N, eos_ids=-1,
                            prompt_index=index)
    np.testing.assert_array_equal(again.token_ids, ours.token_ids)


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_one_compilation_per_bucket(family):
    """Batches of 2 and 3 rows, 5 and 7 tokens, and task maxima of 3 and 6 new tokens share a
    bucket (4 rows, 8 tokens, 8 new tokens): one compilation. 5 rows is another bucket."""
    if family == "llama":
        model = Llama(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2))
    else:
        model = T5(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                            num_decoder_layers=2, num_heads=4))
    params = model.init_params(jax.random.key(0))
    prompt = jnp.ones((3, 32), jnp.float32)
    buckets = decoding.Buckets(min_batch=4, min_length=8, min_new_tokens=8)
    rng = np.random.default_rng(0)
    before = decoding.TRACES[family]
    for b, t, n in [(2, 5, 3), (3, 7, 6), (4, 8, 8), (5, 4, 3)]:
        ids = rng.integers(3, 64, (b, t))
        out = decoding.greedy(model, params, prompt, ids, np.ones((b, t)), max_new_tokens=n,
                              buckets=buckets)
        assert out.token_ids.shape == (b, n)
        assert decoding.TRACES[family] - before == (1 if b <= 4 else 2)


def test_rows_without_tokens_and_stop_without_decode_raise():
    model = Llama(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    ids, mask = np.ones((2, 3), np.int32), np.array([[1, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match=r"rows \[1\] have no real input token"):
        decoding.greedy(model, None, None, ids, mask, max_new_tokens=2)
    with pytest.raises(ValueError, match="needs `decode`"):
        decoding.greedy(model, None, None, ids, np.ones((2, 3)), max_new_tokens=2, stop="\n")
    with pytest.raises(ValueError, match="prompt_index"):
        decoding.greedy(model, None, PromptSet.stack([np.ones((2, 32))]), ids, np.ones((2, 3)),
                        max_new_tokens=2)


def test_a_line_break_stop_does_not_cut_an_answer_that_starts_on_a_new_line():
    decode = lambda toks: "".join("\n" if t == 5 else chr(ord("a") + t % 26) for t in toks)  # noqa: E731
    tokens = np.asarray([[5, 6, 7, 5, 8, 9], [5, 5, 5, 5, 5, 5], [6, 5, 7, 8, 9, 10]])
    out = decoding.finish_rows(tokens, np.asarray([-1]), 0, "\n", decode)
    assert out.texts == ("\ngh", "\n\n\n\n\n\n", "g")
    assert out.finish == ("stop", "length", "stop") and out.lengths.tolist() == [4, 6, 2]
    np.testing.assert_array_equal(out.token_ids[0], [5, 6, 7, 5, 0, 0])
