"""Our Flax backbones reproduce Hugging Face's PyTorch models on random tiny checkpoints."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from prompt_jax.models import load_pretrained
from tests.hf_models import load_reference, save_tiny, untie_t5_head

ATOL = 1e-4

IDS = np.array([[5, 17, 33, 8, 61, 70, 12, 3], [9, 44, 21, 90, 2, 0, 0, 0]], np.int64)
MASK = np.array([[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0, 0]], np.int64)


def _tiny(kind, tmp_path, **overrides):
    directory = save_tiny(kind, tmp_path / kind, **overrides)
    if kind == "t5_v1_1":
        untie_t5_head(directory)
    return directory, load_reference(kind, directory), load_pretrained(directory)


def _close(ours, theirs, mask=None, atol=ATOL):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape
    if mask is not None:
        keep = np.asarray(mask, bool)
        ours, theirs = ours[keep], theirs[keep]
    np.testing.assert_allclose(ours, theirs, atol=atol, rtol=0)


@pytest.mark.parametrize("kind", ["t5_v1_0", "t5_v1_1"])
def test_t5_logits_and_greedy_decoding(kind, tmp_path):
    _, ref, pre = _tiny(kind, tmp_path)
    model, params = pre.model, pre.params
    assert model.config.tie_word_embeddings == (kind == "t5_v1_0")
    assert model.config.scale_decoder_outputs == (kind == "t5_v1_0")
    assert model.config.act_name == ("relu" if kind == "t5_v1_0" else "gelu_new")
    dec = np.array([[0, 4, 9, 11, 7], [0, 31, 5, 2, 6]], np.int64)
    with torch.no_grad():
        theirs = ref(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK),
                     decoder_input_ids=torch.tensor(dec)).logits.numpy()
    embeds = model.embed(params, jnp.asarray(IDS))
    ours = model.forward(params, embeds, jnp.asarray(MASK), decoder_input_ids=jnp.asarray(dec))
    _close(ours, theirs)

    with torch.no_grad():
        gen = ref.generate(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK),
                           max_new_tokens=6, do_sample=False, num_beams=1,
                           use_cache=False).numpy()[:, 1:]
    ours_gen = np.asarray(model.generate(params, embeds, jnp.asarray(MASK), max_new_tokens=6))
    np.testing.assert_array_equal(ours_gen[:, : gen.shape[1]], gen)

    # Rank-classification scores equal the sum of the reference's target log-probs.
    cands = np.array([[7, 13, 1], [22, 1, 0]], np.int64)
    cmask = (np.arange(3)[None] < np.array([[3], [2]])).astype(np.int64)
    scores = np.asarray(model.score(params, embeds, jnp.asarray(MASK), jnp.asarray(cands),
                                    jnp.asarray(cmask)))
    for c in range(2):
        labels = torch.tensor(np.where(cmask[c] > 0, cands[c], -100)[None].repeat(2, 0))
        with torch.no_grad():
            out = ref(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK), labels=labels)
        logp = torch.log_softmax(out.logits, -1).numpy()
        expected = [sum(logp[b, k, cands[c, k]] for k in range(3) if cmask[c, k]) for b in range(2)]
        np.testing.assert_allclose(scores[:, c], expected, atol=ATOL)


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_encoder_mlm_logits_and_scores(kind, tmp_path):
    _, ref, pre = _tiny(kind, tmp_path)
    model, params = pre.model, pre.params
    pad = model.config.pad_token_id
    ids = np.where(MASK > 0, IDS, pad)
    kwargs, ours_kwargs = {}, {}
    if kind == "bert":  # segment ids reach the model too
        tt = np.array([[0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0, 0, 0]], np.int64)
        kwargs["token_type_ids"] = torch.tensor(tt)
        ours_kwargs["token_type_ids"] = jnp.asarray(tt)
    with torch.no_grad():
        theirs = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(MASK),
                     **kwargs).logits.numpy()
    embeds = model.embed(params, jnp.asarray(ids))
    ours = model.forward(params, embeds, jnp.asarray(MASK), **ours_kwargs)
    _close(ours, theirs, MASK)

    target = np.array([2, 1])
    cands = np.array([[7, 13], [22, 0]], np.int64)
    cmask = np.array([[1, 1], [1, 0]], np.int64)
    scores = np.asarray(model.score(params, embeds, jnp.asarray(MASK), jnp.asarray(cands),
                                    jnp.asarray(cmask), target_positions=jnp.asarray(target),
                                    **ours_kwargs))
    logp = torch.log_softmax(torch.tensor(theirs), -1).numpy()
    for b in range(2):
        expected = [logp[b, target[b], [7, 13]].mean(), logp[b, target[b], 22]]
        np.testing.assert_allclose(scores[b], expected, atol=ATOL)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"tie_word_embeddings": True},
        {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 16}},
    ],
    ids=["gqa-untied", "tied", "llama3-rope"],
)
def test_llama_logits_scores_and_generation(overrides, tmp_path):
    _, ref, pre = _tiny("llama", tmp_path, **overrides)
    model, params = pre.model, pre.params
    assert model.config.num_key_value_heads == 2 and model.config.num_attention_heads == 4
    assert model.config.tie_word_embeddings == overrides.get("tie_word_embeddings", False)
    positions = np.maximum(np.cumsum(MASK, 1) - 1, 0)
    with torch.no_grad():
        theirs = ref(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK),
                     position_ids=torch.tensor(positions)).logits.numpy()
    embeds = model.embed(params, jnp.asarray(IDS))
    ours = model.forward(params, embeds, jnp.asarray(MASK))
    _close(ours, theirs, MASK)

    # Candidates continue each row after its last real token.
    cands = np.array([[7, 13, 40], [22, 5, 0]], np.int64)
    cmask = np.array([[1, 1, 1], [1, 1, 0]], np.int64)
    scores = np.asarray(model.score(params, embeds, jnp.asarray(MASK), jnp.asarray(cands),
                                    jnp.asarray(cmask)))
    # Single-token candidates take the one-pass path.
    first = np.asarray(model.score(params, embeds, jnp.asarray(MASK), jnp.asarray(cands[:, :1]),
                                   jnp.asarray(cmask[:, :1])))
    for b in range(2):
        n = int(MASK[b].sum())
        for c in range(2):
            k = int(cmask[c].sum())
            seq = torch.tensor(np.concatenate([IDS[b, :n], cands[c, :k]])[None])
            with torch.no_grad():
                logp = torch.log_softmax(ref(input_ids=seq).logits[0], -1).numpy()
            expected = sum(logp[n - 1 + j, cands[c, j]] for j in range(k))
            np.testing.assert_allclose(scores[b, c], expected, atol=ATOL)
            np.testing.assert_allclose(first[b, c], logp[n - 1, cands[c, 0]], atol=ATOL)

    # Greedy continuation of the unpadded row matches transformers' generate.
    with torch.no_grad():
        gen = ref.generate(input_ids=torch.tensor(IDS[:1]), max_new_tokens=5, do_sample=False,
                           num_beams=1, eos_token_id=None, pad_token_id=0).numpy()[0, 8:]
    ours_gen = model.generate(params, embeds[:1], jnp.asarray(MASK[:1]), max_new_tokens=5)
    np.testing.assert_array_equal(np.asarray(ours_gen)[0], gen)


def _ffn_projections(kind, ref):
    """Each layer's (first projection, output projection) of the reference FFN (the encoder's,
    on encoder families): the activation function's input is the first one's output (the
    gate's, on gated FFNs), the output projection's input is what `activations` returns."""
    if kind == "llama":
        return [(layer.mlp.gate_proj, layer.mlp.down_proj) for layer in ref.model.layers]
    if kind.startswith("t5"):
        ffns = [block.layer[1].DenseReluDense for block in ref.encoder.block]
        return [(f.wi_0 if kind == "t5_v1_1" else f.wi, f.wo) for f in ffns]
    return [(layer.intermediate.dense, layer.output.dense)
            for layer in ref.base_model.encoder.layer]


@pytest.mark.parametrize("kind", ["llama", "t5_v1_0", "t5_v1_1", "roberta", "bert"])
def test_ffn_activations_match_reference(kind, tmp_path):
    _, ref, pre = _tiny(kind, tmp_path)
    pre_activations, output_inputs = [], []
    hooks = []
    for first, output in _ffn_projections(kind, ref):
        hooks.append(first.register_forward_hook(
            lambda mod, inp, out: pre_activations.append(out.numpy())))
        hooks.append(output.register_forward_hook(
            lambda mod, inp, out: output_inputs.append(inp[0].numpy())))
    with torch.no_grad():
        (ref.encoder if kind.startswith("t5") else ref)(input_ids=torch.tensor(IDS[:1]))
    for h in hooks:
        h.remove()
    embeds, mask = pre.model.embed(pre.params, jnp.asarray(IDS[:1])), jnp.ones((1, 8), jnp.int32)
    (acts,) = pre.model.activations(pre.params, embeds, mask).values()
    (gates,) = pre.model.activations(pre.params, embeds, mask, kind="pre_activation").values()
    width = 48 if kind == "llama" else 64
    assert acts.shape == gates.shape == (2, 1, 8, width)
    _close(acts, np.stack(output_inputs))
    _close(gates, np.stack(pre_activations))


def test_sharded_and_torch_bin_checkpoints_load_identically(tmp_path):
    directory = save_tiny("bert", tmp_path / "single")
    ref = load_reference("bert", directory)
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text((directory / "config.json").read_text())
    torch.save(ref.state_dict(), bin_dir / "pytorch_model.bin")
    base = load_pretrained(directory).params
    for other in (tmp_path / "sharded", bin_dir):
        loaded = load_pretrained(other).params
        jax.tree_util.tree_map(np.testing.assert_array_equal, base, loaded)


def test_bfloat16_params_and_compute(tmp_path):
    directory, _, pre = _tiny("llama", tmp_path)
    half = load_pretrained(directory, dtype="bfloat16", param_dtype="bfloat16")
    leaves = jax.tree_util.tree_leaves(half.params)
    assert all(x.dtype == jnp.bfloat16 for x in leaves)
    ids, mask = jnp.asarray(IDS), jnp.asarray(MASK)
    full = pre.model.forward(pre.params, pre.model.embed(pre.params, ids), mask)
    embeds = half.model.embed(half.params, ids)
    assert embeds.dtype == jnp.bfloat16
    low = half.model.forward(half.params, embeds, mask)
    keep = np.asarray(MASK, bool)
    err = np.abs(np.asarray(low) - np.asarray(full))[keep].max()
    assert err < 0.1 * np.abs(np.asarray(full))[keep].max()
    agree = (np.asarray(low).argmax(-1) == np.asarray(full).argmax(-1))[keep].mean()
    assert agree >= 0.8


def _mlm_logits_both(kind, ref, pre):
    """Our and the reference's masked-LM logits on the same batch (BERT: with segment ids)."""
    ids = np.where(MASK > 0, IDS, pre.model.config.pad_token_id)
    tt = np.array([[0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0, 0, 0]], np.int64)
    kwargs = {"token_type_ids": tt} if kind == "bert" else {}
    with torch.no_grad():
        theirs = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(MASK),
                     **{k: torch.tensor(v) for k, v in kwargs.items()}).logits.numpy()
    embeds = pre.model.embed(pre.params, jnp.asarray(ids))
    ours = pre.model.forward(pre.params, embeds, jnp.asarray(MASK),
                             **{k: jnp.asarray(v) for k, v in kwargs.items()})
    return np.asarray(ours), theirs


def _as_torch_bin(directory, ref, target, config_edit=None):
    """The transformers-4 layout: `torch.save(state_dict)` (the decoder matrix included, tied
    or not) as pytorch_model.bin, next to the config.json."""
    import json

    target.mkdir()
    config = json.loads((directory / "config.json").read_text())
    if config_edit is not None:
        config_edit(config)
    (target / "config.json").write_text(json.dumps(config))
    torch.save(ref.state_dict(), target / "pytorch_model.bin")
    return target


_DECODER = {"bert": ("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),
            "roberta": ("lm_head.decoder.weight", "roberta.embeddings.word_embeddings.weight")}


@pytest.mark.parametrize("layout", ["safetensors", "bin", "bin-config-says-tied"])
@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_untied_mlm_head_uses_its_stored_decoder_matrix(kind, layout, tmp_path):
    directory = save_tiny(kind, tmp_path / kind, tie_word_embeddings=False)
    ref = load_reference(kind, directory)
    state = ref.state_dict()
    decoder, embeddings = (state[k].numpy() for k in _DECODER[kind])
    assert np.abs(decoder - embeddings).max() > 0.5  # a head that differs from the embeddings
    if layout == "bin":
        directory = _as_torch_bin(directory, ref, tmp_path / "bin")
    elif layout == "bin-config-says-tied":
        # A config without the field means tied; transformers then keeps the stored, different
        # matrix untied (and warns). So do we.
        directory = _as_torch_bin(directory, ref, tmp_path / "bin",
                                  lambda c: c.pop("tie_word_embeddings"))
    pre = load_pretrained(directory)
    assert not pre.model.config.tie_word_embeddings
    np.testing.assert_array_equal(np.asarray(pre.params["mlm_decoder"]["kernel"]), decoder.T)
    ours, theirs = _mlm_logits_both(kind, ref, pre)
    _close(ours, theirs, MASK)
    if layout == "bin-config-says-tied":  # transformers reads this folder the same way
        _close(_mlm_logits_both(kind, load_reference(kind, directory), pre)[1], theirs)


@pytest.mark.parametrize("layout", ["safetensors", "bin"])
@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_tied_mlm_head_still_loads_tied(kind, layout, tmp_path):
    directory = save_tiny(kind, tmp_path / kind)
    ref = load_reference(kind, directory)
    if layout == "bin":  # holds the decoder matrix too, equal to the embeddings
        directory = _as_torch_bin(directory, ref, tmp_path / "bin")
    pre = load_pretrained(directory)
    assert pre.model.config.tie_word_embeddings
    assert "mlm_decoder" not in pre.params
    ours, theirs = _mlm_logits_both(kind, ref, pre)
    _close(ours, theirs, MASK)


@pytest.mark.parametrize("kind", ["t5_v1_0", "t5_v1_1"])
def test_t5_neuron_masks_are_the_papers_decoder_hook(kind, tmp_path):
    """ON on T5 reads what the paper's `activate_neuron_T5.py` records: a forward hook on each
    decoder block's FFN input projection (`decoder.block[n].layer[2].DenseReluDense.wi`, the
    gate `wi_0` on v1.1) during greedy generation, kept at the first step's first position,
    binarized > 0. Here the reference generates from the prompted input embeddings."""
    from prompt_jax import indicators as ind
    from prompt_jax import prompts

    _, ref, pre = _tiny(kind, tmp_path)
    model, params = pre.model, pre.params
    embeds, mask = model.embed(params, jnp.asarray(IDS)), jnp.asarray(MASK)
    prompt = jax.random.normal(jax.random.key(3), (3, model.d_model))
    masks = ind.activation_masks(model, params, prompt, embeds, mask, jnp.array([0, 0]))

    recorded = [[] for _ in ref.decoder.block]
    hooks = []
    for n, block in enumerate(ref.decoder.block):
        ffn = block.layer[2].DenseReluDense
        hooks.append((ffn.wi_0 if kind == "t5_v1_1" else ffn.wi).register_forward_hook(
            lambda mod, inp, out, n=n: recorded[n].append(out.numpy())))
    full, full_mask, _ = prompts.insert_prompt(prompt, embeds, mask, "prefix")
    with torch.no_grad():
        ref.generate(inputs_embeds=torch.tensor(np.asarray(full)),
                     attention_mask=torch.tensor(np.asarray(full_mask)), max_new_tokens=3,
                     min_new_tokens=3, do_sample=False, num_beams=1, use_cache=False)
    for h in hooks:
        h.remove()
    assert all(len(steps) == 3 for steps in recorded)  # one call per generated token
    first = np.stack([steps[0][:, :1] for steps in recorded])  # [L_dec, B, 1, F]
    assert masks.shape == first.shape
    np.testing.assert_array_equal(np.asarray(masks), first > 0)
    # The text matters: the decoder cross-attends to it.
    other = ind.activation_masks(model, params, prompt, embeds[::-1], mask[::-1],
                                 jnp.array([0, 0]))
    assert not np.array_equal(np.asarray(other), np.asarray(masks))
