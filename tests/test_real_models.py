"""The real checkpoints we have offline load exactly: SmolLM2-135M and Gemma 3 270M (GGUF) and
MiniLM (BERT)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from prompt_jax.models import load_pretrained, load_tokenizer

SENTENCES = [
    "The capital of France is",
    "Prompt tuning learns a few vectors and keeps the model frozen.",
    "I loved this movie, it was",
]


def _logits_both(pre, tok, gguf):
    """(transformers' model loaded from the same GGUF, our logits, its logits, real-token
    mask) on SENTENCES, padded (positions skip the padding on both sides)."""
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    enc = tok(SENTENCES, return_tensors="np", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert mask.min() == 0  # padding is exercised
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        theirs = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(positions)).logits.numpy()
    model, params = pre.model, pre.params
    ours = np.asarray(jax.jit(lambda p, i, m: model.forward(p, model.embed(p, i), m))(
        params, jnp.asarray(ids), jnp.asarray(mask)))
    return ref, ours, theirs, mask.astype(bool)


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    return load_pretrained(smollm2_gguf), load_tokenizer(smollm2_gguf)


def test_smollm2_gguf_matches_transformers_gguf_loader(smollm2, smollm2_gguf):
    pre, tok = smollm2
    cfg = pre.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads,
            cfg.num_key_value_heads, cfg.vocab_size) == (30, 576, 9, 3, 49152)
    assert cfg.tie_word_embeddings
    _, ours, theirs, keep = _logits_both(pre, tok, smollm2_gguf)
    # 30 float32 layers on logits of magnitude ~30: agreement to ~1e-5 relative.
    np.testing.assert_allclose(ours[keep], theirs[keep], atol=5e-4, rtol=0)
    assert (ours.argmax(-1) == theirs.argmax(-1))[keep].all()


def test_smollm2_continues_capital_of_france_with_paris(smollm2):
    pre, tok = smollm2
    enc = tok(["The capital of France is"], return_tensors="np")
    model = pre.model
    out = model.generate(pre.params, model.embed(pre.params, jnp.asarray(enc["input_ids"])),
                         jnp.asarray(enc["attention_mask"]), max_new_tokens=3)
    assert tok.decode(np.asarray(out)[0]).startswith(" Paris")


@pytest.fixture(scope="module")
def gemma3(gemma3_gguf):
    return load_pretrained(gemma3_gguf), load_tokenizer(gemma3_gguf)


def test_gemma3_gguf_matches_transformers_gguf_loader_and_decodes_alike(gemma3, gemma3_gguf):
    pre, tok = gemma3
    cfg = pre.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads,
            cfg.num_key_value_heads, cfg.head_dim, cfg.vocab_size, cfg.sliding_window) == (
        18, 640, 4, 1, 256, 262144, 512)
    assert cfg.tie_word_embeddings and cfg.layer_types.count("full_attention") == 3
    ref, ours, theirs, keep = _logits_both(pre, tok, gemma3_gguf)
    assert not keep[:, 0].all()  # Gemma's tokenizer pads on the left
    # Both sides dequantize the same file to float32; 18 float32 layers on logits up to ~27
    # agree to 5e-5 (measured), so 2e-4 leaves a 4x margin.
    np.testing.assert_allclose(ours[keep], theirs[keep], atol=2e-4, rtol=0)
    assert (ours.argmax(-1) == theirs.argmax(-1))[keep].all()

    model, params = pre.model, pre.params
    # Greedy decoding: the same tokens as transformers' generate. (A base model: the bare
    # "The capital of France is" does not answer; the question form does.)
    for text, answer in (("Question: What is the capital of France?\nAnswer:", " Paris"),
                         ("Paris is the capital of", " France")):
        e = tok([text], return_tensors="np")
        with torch.no_grad():
            want = ref.generate(input_ids=torch.tensor(e["input_ids"]), max_new_tokens=5,
                                do_sample=False).numpy()[0, e["input_ids"].shape[1]:]
        got = np.asarray(model.generate(params, model.embed(params, jnp.asarray(e["input_ids"])),
                                        jnp.asarray(e["attention_mask"]), max_new_tokens=5))[0]
        np.testing.assert_array_equal(got[:len(want)], want)
        assert tok.decode(got).startswith(answer), tok.decode(got)


def test_minilm_hidden_states_match_bert_model(minilm_dir):
    pre = load_pretrained(minilm_dir)
    assert pre.model.family == "bert" and not pre.model.config.mlm_head
    tok = load_tokenizer(minilm_dir)
    enc = tok(SENTENCES, return_tensors="np", padding=True)
    ref = transformers.BertModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        theirs = ref(**{k: torch.tensor(v) for k, v in enc.items()}).last_hidden_state.numpy()
    model = pre.model
    ours = model.encode(pre.params, model.embed(pre.params, jnp.asarray(enc["input_ids"])),
                        jnp.asarray(enc["attention_mask"]),
                        token_type_ids=jnp.asarray(enc["token_type_ids"]))
    keep = enc["attention_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(ours)[keep], theirs[keep], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="no masked-LM head"):
        model.forward(pre.params, model.embed(pre.params, jnp.asarray(enc["input_ids"])),
                      jnp.asarray(enc["attention_mask"]))
