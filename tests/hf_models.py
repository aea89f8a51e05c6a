"""Random tiny Hugging Face PyTorch models saved to disk: the references for parity tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import transformers


def save_tiny(kind: str, directory: Path, seed: int = 0, **overrides) -> Path:
    """Creates a random tiny HF model of `kind` and saves it (safetensors) into `directory`."""
    torch.manual_seed(seed)
    if kind == "t5_v1_0":
        config = transformers.T5Config(**{**dict(
            vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
            num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
            feed_forward_proj="relu", dropout_rate=0.0, decoder_start_token_id=0), **overrides})
        model = transformers.T5ForConditionalGeneration(config)
    elif kind == "t5_v1_1":
        config = transformers.T5Config(**{**dict(
            vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2,
            num_decoder_layers=3, num_heads=4, relative_attention_num_buckets=8,
            relative_attention_max_distance=20, feed_forward_proj="gated-gelu",
            decoder_start_token_id=0, dropout_rate=0.0), **overrides})
        model = transformers.T5ForConditionalGeneration(config)
    elif kind == "roberta":
        config = transformers.RobertaConfig(**{**dict(
            vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=40, type_vocab_size=1,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), **overrides})
        model = transformers.RobertaForMaskedLM(config)
    elif kind == "bert":
        config = transformers.BertConfig(
            vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=40, type_vocab_size=2,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **overrides)
        model = transformers.BertForMaskedLM(config)
    elif kind == "llama":
        kwargs = dict(
            vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            rms_norm_eps=1e-5, tie_word_embeddings=False)
        config = transformers.LlamaConfig(**{**kwargs, **overrides})
        model = transformers.LlamaForCausalLM(config)
    elif kind == "gemma3":
        # Window 4 with longer rows, so that sliding and global layers differ; every scale
        # (attention scalar, both RoPE bases) differs from its default.
        kwargs = dict(
            vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
            rms_norm_eps=1e-5, query_pre_attn_scalar=12, sliding_window=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 5000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}},
            tie_word_embeddings=False, attn_implementation="eager")
        config = transformers.Gemma3TextConfig(**{**kwargs, **overrides})
        model = transformers.Gemma3ForCausalLM(config)
    else:
        raise ValueError(kind)
    # Default inits leave some weights at exact zeros/ones: randomize everything so that a
    # transposed or misplaced tensor cannot go unnoticed.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.eval()
    model.save_pretrained(directory)
    return directory


def untie_t5_head(directory: Path, seed: int = 1) -> None:
    """Rewrites a saved tiny T5 in the original v1.1 layout: an untied `lm_head.weight` and a
    config that says `tie_word_embeddings: false` (as google/t5-v1_1-* ship)."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(directory / "model.safetensors")
    rng = np.random.default_rng(seed)
    tensors["lm_head.weight"] = rng.normal(0, 0.3, tensors["shared.weight"].shape).astype(
        np.float32)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((directory / "config.json").read_text())
    config["tie_word_embeddings"] = False
    config.pop("scale_decoder_outputs", None)
    (directory / "config.json").write_text(json.dumps(config))


def load_reference(kind: str, directory: Path):
    cls = {
        "t5_v1_0": transformers.T5ForConditionalGeneration,
        "t5_v1_1": transformers.T5ForConditionalGeneration,
        "roberta": transformers.RobertaForMaskedLM,
        "bert": transformers.BertForMaskedLM,
        "llama": transformers.LlamaForCausalLM,
        "gemma3": transformers.Gemma3ForCausalLM,
    }[kind]
    kwargs = {"attn_implementation": "eager"} if kind == "gemma3" else {}
    return cls.from_pretrained(directory, **kwargs).eval()
