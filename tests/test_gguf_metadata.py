"""GGUF files written with the `gguf` package: a complete tiny Llama loads and matches
transformers; a metadata field that is missing, undecodable or mistyped raises, naming it."""

from __future__ import annotations

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from prompt_jax.models import CheckpointError, load_pretrained
from tests.hf_models import load_reference, save_tiny

T = gguf.GGUFValueType

# Every field the GGUF spec requires for llama, for the tiny model of `save_tiny("llama")`.
REQUIRED = {
    "llama.context_length": (64, T.UINT32),
    "llama.embedding_length": (32, T.UINT32),
    "llama.block_count": (2, T.UINT32),
    "llama.feed_forward_length": (48, T.UINT32),
    "llama.rope.dimension_count": (8, T.UINT32),
    "llama.attention.head_count": (4, T.UINT32),
    "llama.attention.layer_norm_rms_epsilon": (1e-5, T.FLOAT32),
}

_HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def _permute_rope_rows(w, n_heads):
    """llama.cpp's convert script: Hugging Face rotate-half rows -> interleaved RoPE rows."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2) \
        .reshape(w.shape)


def _write_gguf(path, fields, tensors):
    writer = gguf.GGUFWriter(path, "llama")
    for key, (value, vtype) in fields.items():
        writer.add_key_value(key, value, vtype)
    for name, array in tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(array, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _llama_as_gguf(ref):
    tensors = {}
    for name, value in ref.state_dict().items():
        w = value.numpy()
        if name in _HF_TO_GGUF:
            tensors[_HF_TO_GGUF[name]] = w
            continue
        _, _, i, rest = name.split(".", 3)  # model.layers.{i}.<rest>
        heads = {"self_attn.q_proj.weight": 4, "self_attn.k_proj.weight": 2}.get(rest)
        tensors[f"blk.{i}.{_HF_TO_GGUF[rest]}"] = w if heads is None else \
            _permute_rope_rows(w, heads)
    return tensors


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    directory = save_tiny("llama", tmp_path_factory.mktemp("gguf") / "llama")
    ref = load_reference("llama", directory)
    assert ref.config.rope_parameters["rope_theta"] == 10000.0  # the GGUF default below
    return ref, _llama_as_gguf(ref)


def test_complete_gguf_loads_and_absent_optional_fields_take_their_defaults(tiny_llama,
                                                                            tmp_path):
    ref, tensors = tiny_llama
    # head_count_kv is written (the model uses GQA); rope.freq_base, key_length and vocab_size
    # are absent, so they come from their documented defaults.
    fields = {**REQUIRED, "llama.attention.head_count_kv": (2, T.UINT32)}
    pre = load_pretrained(_write_gguf(tmp_path / "m.gguf", fields, tensors))
    cfg = pre.model.config
    assert (cfg.rope_theta, cfg.head_dim, cfg.vocab_size, cfg.num_key_value_heads,
            cfg.max_position_embeddings) == (10000.0, 8, 96, 2, 64)
    ids = np.array([[5, 17, 33, 8, 61, 70]], np.int64)
    with torch.no_grad():
        theirs = ref(input_ids=torch.tensor(ids)).logits.numpy()
    ours = pre.model.forward(pre.params, pre.model.embed(pre.params, jnp.asarray(ids)),
                             jnp.ones(ids.shape, jnp.int32))
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=0)


def _metadata_only(tmp_path, fields):
    embed = np.zeros((96, 32), np.float32)  # the loader reads metadata before other weights
    return _write_gguf(tmp_path / "m.gguf", fields, {"token_embd.weight": embed})


def test_undecodable_field_raises_naming_it_never_a_default(tmp_path):
    # Not UTF-8: the gguf reader cannot decode it. The old loader skipped the field and used
    # rope_theta = 10000.
    fields = {**REQUIRED, "llama.rope.freq_base": (b"\xff\xfe1e6", T.STRING)}
    with pytest.raises(CheckpointError, match=r"m\.gguf: GGUF metadata field llama\.rope\."
                                              r"freq_base cannot be decoded \(UnicodeDecodeError"):
        load_pretrained(_metadata_only(tmp_path, fields))


@pytest.mark.parametrize("key,value,message", [
    ("llama.rope.freq_base", ("1e6", T.STRING), r"holds '1e6' \(str\), expected float"),
    ("llama.block_count", (2.0, T.FLOAT32), r"holds 2\.0 \(float\), expected int"),
    ("llama.attention.head_count_kv", ([2, 2], T.ARRAY), r"holds \[2, 2\] \(list\), "
                                                         r"expected int"),
])
def test_mistyped_field_raises_naming_it(tmp_path, key, value, message):
    fields = {**REQUIRED, key: value}
    with pytest.raises(CheckpointError, match=rf"m\.gguf: GGUF metadata field "
                                              rf"{key.replace('.', chr(92) + '.')} {message}"):
        load_pretrained(_metadata_only(tmp_path, fields))


@pytest.mark.parametrize("key", ["llama.attention.layer_norm_rms_epsilon",
                                 "llama.context_length"])
def test_required_field_absent_raises_naming_it(tmp_path, key):
    fields = {k: v for k, v in REQUIRED.items() if k != key}
    with pytest.raises(CheckpointError, match=rf"m\.gguf: GGUF metadata lacks "
                                              rf"{key.replace('.', chr(92) + '.')}$"):
        load_pretrained(_metadata_only(tmp_path, fields))
