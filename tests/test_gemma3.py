"""Gemma 3 reproduces transformers' Gemma3ForCausalLM on random tiny configs whose sliding
window (4) is shorter than the rows (11 tokens), through every path prompt tuning uses; GGUF
files of it load; a soft prompt means in PEFT what it means here."""

from __future__ import annotations

import dataclasses

import gguf
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import tokenizers
import torch
import transformers

from prompt_jax import prompts
from prompt_jax.models import CheckpointError, Gemma3, load_pretrained
from prompt_jax.prompts.files import save_prompt
from tests.hf_models import load_reference, save_tiny

ATOL = 1e-4
RNG = np.random.default_rng(0)
IDS = RNG.integers(3, 96, (2, 11))
MASK = np.ones((2, 11), np.int64)
MASK[1, 8:] = 0  # row 1: 8 real tokens, then padding
CASES = {"untied": {}, "tied": {"tie_word_embeddings": True},
         "softcapped": {"final_logit_softcapping": 3.0}}


@pytest.fixture(scope="module", params=sorted(CASES))
def tiny(request, tmp_path_factory):
    directory = save_tiny("gemma3", tmp_path_factory.mktemp("gemma3") / request.param,
                          **CASES[request.param])
    return request.param, load_reference("gemma3", directory), load_pretrained(directory)


def _theirs(ref, ids=IDS, mask=MASK):
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        return ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                   position_ids=torch.tensor(positions)).logits.numpy()


def test_logits_match_transformers_and_the_window_matters(tiny):
    case, ref, pre = tiny
    model, params = pre.model, pre.params
    cfg = model.config
    assert model.family == "gemma3"
    assert cfg.tie_word_embeddings == (case == "tied")
    assert (cfg.sliding_window, cfg.query_pre_attn_scalar, cfg.rope_theta,
            cfg.rope_local_theta) == (4, 12.0, 5000.0, 100.0)
    assert cfg.layer_types == ("sliding_attention", "full_attention", "sliding_attention")
    ours = np.asarray(model.forward(params, model.embed(params, jnp.asarray(IDS)),
                                    jnp.asarray(MASK)))
    keep = MASK.astype(bool)
    np.testing.assert_allclose(ours[keep], _theirs(ref)[keep], atol=ATOL, rtol=0)
    # Rows longer than the window: a model whose window covers them computes other logits.
    wide = Gemma3(dataclasses.replace(cfg, sliding_window=64))
    other = np.asarray(wide.forward(params, wide.embed(params, jnp.asarray(IDS)),
                                    jnp.asarray(MASK)))
    assert np.abs(other - ours)[keep].max() > 0.1


def test_prompt_through_inputs_embeds_scores_and_generation(tiny):
    """A soft prompt prepended through `inputs_embeds` (where Gemma does not rescale), on
    both of our paths: inserted into the rows, and computed once as a shared prefix."""
    _, ref, pre = tiny
    model, params = pre.model, pre.params
    prompt = np.random.default_rng(1).normal(0, 1.0, (3, 32)).astype(np.float32)
    row = IDS[:1]
    with torch.no_grad():
        embeds = torch.cat([torch.from_numpy(prompt)[None],
                            ref.get_input_embeddings()(torch.tensor(row))], 1)
        theirs = ref(inputs_embeds=embeds).logits.numpy()[:, 3:]
    ours_embeds = model.embed(params, jnp.asarray(row))
    inserted, mask, _ = prompts.insert_prompt(jnp.asarray(prompt), ours_embeds,
                                              jnp.ones((1, 11), jnp.int32))
    by_insertion = np.asarray(model.forward(params, inserted, mask))[:, 3:]
    shared = np.asarray(model.forward(params, ours_embeds, jnp.ones((1, 11), jnp.int32),
                                      prefix=jnp.asarray(prompt)))
    np.testing.assert_allclose(by_insertion, theirs, atol=ATOL, rtol=0)
    np.testing.assert_allclose(shared, theirs, atol=ATOL, rtol=0)

    # Rank scores of one- and two-token candidates after the padded rows.
    cands = np.array([[7, 13], [22, 0]], np.int64)
    cmask = np.array([[1, 1], [1, 0]], np.int64)
    scores = np.asarray(model.score(params, model.embed(params, jnp.asarray(IDS)),
                                    jnp.asarray(MASK), jnp.asarray(cands), jnp.asarray(cmask)))
    for b in range(2):
        n = int(MASK[b].sum())
        for c in range(2):
            k = int(cmask[c].sum())
            seq = np.concatenate([IDS[b, :n], cands[c, :k]])[None]
            logp = torch.log_softmax(torch.tensor(_theirs(ref, seq, np.ones_like(seq))[0]),
                                     -1).numpy()
            expected = sum(logp[n - 1 + j, cands[c, j]] for j in range(k))
            np.testing.assert_allclose(scores[b, c], expected, atol=ATOL)

    # Greedy decoding past the window matches transformers' generate.
    with torch.no_grad():
        gen = ref.generate(input_ids=torch.tensor(row), max_new_tokens=6, do_sample=False,
                           num_beams=1, eos_token_id=None, pad_token_id=0).numpy()[0, 11:]
    ours_gen = model.generate(params, ours_embeds, jnp.ones((1, 11), jnp.int32),
                              max_new_tokens=6)
    np.testing.assert_array_equal(np.asarray(ours_gen)[0], gen)


def test_ffn_activations_match_reference(tiny):
    _, ref, pre = tiny
    captured, gates = [], []
    hooks = [layer.mlp.down_proj.register_forward_hook(
        lambda mod, inp, out: captured.append(inp[0].numpy())) for layer in ref.model.layers]
    hooks += [layer.mlp.gate_proj.register_forward_hook(
        lambda mod, inp, out: gates.append(out.numpy())) for layer in ref.model.layers]
    with torch.no_grad():
        ref(input_ids=torch.tensor(IDS[:1]))
    for h in hooks:
        h.remove()
    embeds = pre.model.embed(pre.params, jnp.asarray(IDS[:1]))
    mask = jnp.ones((1, 11), jnp.int32)
    acts = pre.model.activations(pre.params, embeds, mask)["decoder"]
    assert acts.shape == (3, 1, 11, 48)
    np.testing.assert_allclose(np.asarray(acts), np.stack(captured), atol=ATOL, rtol=0)
    # The GeGLU gate's pre-activation (what the neuron-overlap indicator reads).
    ours_gates = pre.model.activations(pre.params, embeds, mask, kind="pre_activation")["decoder"]
    np.testing.assert_allclose(np.asarray(ours_gates), np.stack(gates), atol=ATOL, rtol=0)


def test_prompt_saved_as_peft_adapter_means_the_same_in_peft(tmp_path):
    """PEFT concatenates its prompt with Gemma's scaled token embeddings, and its text init
    takes scaled embeddings: our prompts live in that space."""
    directory = save_tiny("gemma3", tmp_path / "tiny")
    pre = load_pretrained(directory)
    model, params = pre.model, pre.params
    prompt = np.random.default_rng(2).normal(0, 1.0, (4, 32)).astype(np.float32)
    save_prompt(prompt, tmp_path / "adapter", format="peft",
                metadata={"task_type": "CAUSAL_LM", "base_model_name_or_path": "tiny-gemma3"})
    peft_model = peft.PeftModel.from_pretrained(load_reference("gemma3", directory),
                                                tmp_path / "adapter")
    with torch.no_grad():
        theirs = peft_model(input_ids=torch.tensor(IDS[:1])).logits.numpy()[:, 4:]
    ours = model.forward(params, model.embed(params, jnp.asarray(IDS[:1])),
                         jnp.ones((1, 11), jnp.int32), prefix=jnp.asarray(prompt))
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=ATOL, rtol=0)

    # PEFT's text init (run for real, with a word-level tokenizer over the tiny vocabulary)
    # equals ours: the init text's token embeddings, scaled.
    vocab = {"[UNK]": 0, "alpha": 5, "beta": 9, "gamma": 17, "delta": 40}
    word_level = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    word_level.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="[UNK]") \
        .save_pretrained(tmp_path / "tokenizer")
    config = peft.PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=6, prompt_tuning_init="TEXT",
        prompt_tuning_init_text="alpha beta gamma delta",
        tokenizer_name_or_path=str(tmp_path / "tokenizer"))
    base = load_reference("gemma3", directory)
    theirs_init = peft.get_peft_model(base, config).get_prompt_embedding_to_save("default")
    ours_init = prompts.text(lambda ids: model.embed(params, ids), [5, 9, 17, 40], 6)
    np.testing.assert_allclose(np.asarray(ours_init), theirs_init.numpy(), atol=1e-6, rtol=0)
    table = np.asarray(params["embed_tokens"]["embedding"])[[5, 9, 17, 40, 5, 9]]
    assert np.abs(np.asarray(ours_init) - table).max() > 1.0  # sqrt(32) x the table rows


# --------------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------------

_HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
}
T = gguf.GGUFValueType


def _write_gguf(path, arch, fields, tensors, raw_types=None):
    writer = gguf.GGUFWriter(path, arch)
    for key, (value, vtype) in fields.items():
        writer.add_key_value(key, value, vtype)
    for name, array in tensors.items():
        raw = (raw_types or {}).get(name)
        if raw is None:
            writer.add_tensor(name, np.ascontiguousarray(array, np.float32))
        else:
            writer.add_tensor(name, array, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _gemma3_fields(cfg):
    return {
        "gemma3.context_length": (64, T.UINT32),
        "gemma3.embedding_length": (cfg.hidden_size, T.UINT32),
        "gemma3.block_count": (cfg.num_hidden_layers, T.UINT32),
        "gemma3.feed_forward_length": (cfg.intermediate_size, T.UINT32),
        "gemma3.attention.head_count": (cfg.num_attention_heads, T.UINT32),
        "gemma3.attention.head_count_kv": (cfg.num_key_value_heads, T.UINT32),
        "gemma3.attention.key_length": (cfg.head_dim, T.UINT32),
        "gemma3.attention.value_length": (cfg.head_dim, T.UINT32),
        "gemma3.attention.layer_norm_rms_epsilon": (cfg.rms_norm_eps, T.FLOAT32),
        "gemma3.attention.sliding_window": (cfg.sliding_window, T.UINT32),
        "gemma3.rope.freq_base": (cfg.rope_parameters["full_attention"]["rope_theta"],
                                  T.FLOAT32),
    }


def test_gemma3_gguf_loads_with_llama_cpp_conventions(tmp_path):
    """A GGUF as llama.cpp writes Gemma 3 (norm scales stored as 1 + weight; every 6th layer
    global, local RoPE base 10000 and 1/sqrt(head_dim) attention scaling implied) loads and
    matches transformers."""
    directory = save_tiny("gemma3", tmp_path / "hf", num_hidden_layers=6, layer_types=None,
                          query_pre_attn_scalar=16,
                          rope_parameters={"full_attention": {"rope_type": "default",
                                                              "rope_theta": 5000.0},
                                           "sliding_attention": {"rope_type": "default",
                                                                 "rope_theta": 10000.0}})
    ref = load_reference("gemma3", directory)
    assert ref.config.layer_types[5] == "full_attention" and ref.config.head_dim == 16
    tensors = {}
    for name, value in ref.state_dict().items():
        w = value.numpy() + (1.0 if name.endswith("norm.weight") else 0.0)
        if name in _HF_TO_GGUF:
            tensors[_HF_TO_GGUF[name]] = w
        else:
            _, _, i, rest = name.split(".", 3)  # model.layers.{i}.<rest>
            tensors[f"blk.{i}.{_HF_TO_GGUF[rest]}"] = w
    pre = load_pretrained(_write_gguf(tmp_path / "m.gguf", "gemma3", _gemma3_fields(ref.config),
                                      tensors))
    assert pre.model.family == "gemma3" and not pre.model.config.tie_word_embeddings
    ours = np.asarray(pre.model.forward(pre.params, pre.model.embed(pre.params, jnp.asarray(IDS)),
                                        jnp.asarray(MASK)))
    keep = MASK.astype(bool)
    np.testing.assert_allclose(ours[keep], _theirs(ref)[keep], atol=ATOL, rtol=0)


def test_unsupported_gguf_architecture_and_tensor_type_fail_clearly(tmp_path):
    embed = np.zeros((96, 32), np.float32)
    path = _write_gguf(tmp_path / "g2.gguf", "gemma2", {}, {"token_embd.weight": embed})
    with pytest.raises(CheckpointError, match=r"g2\.gguf: unknown architecture "
                       r"general\.architecture='gemma2' \(supported in GGUF: llama, gemma3\)"):
        load_pretrained(path)
    cfg = load_reference("gemma3", save_tiny("gemma3", tmp_path / "hf")).config
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_1]
    q8_1 = np.zeros((96, 32 // block * size), np.uint8)  # no Python dequantizer for Q8_1
    path = _write_gguf(tmp_path / "q.gguf", "gemma3", _gemma3_fields(cfg),
                       {"token_embd.weight": q8_1},
                       raw_types={"token_embd.weight": gguf.GGMLQuantizationType.Q8_1})
    with pytest.raises(CheckpointError, match=r"q\.gguf: tensor token_embd\.weight is of GGUF "
                       "type Q8_1, which cannot be dequantized"):
        load_pretrained(path)


def test_bidirectional_gemma3_is_refused(tmp_path):
    directory = save_tiny("gemma3", tmp_path / "hf")
    config = (directory / "config.json").read_text().replace(
        '"use_bidirectional_attention": false', '"use_bidirectional_attention": true')
    assert "true" in config
    (directory / "config.json").write_text(config)
    with pytest.raises(CheckpointError, match="use_bidirectional_attention=True"):
        load_pretrained(directory)
