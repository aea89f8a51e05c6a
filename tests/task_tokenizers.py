"""Tokenizers of the four backbone kinds for the task tests, loaded once per process.

`BACKBONES` are tiny tokenizers kept in tests/data, trained on ../shared/data by
tests/data/make_tokenizers.py and read through transformers' own classes: a byte-level BPE in
SmolLM2's layout ("llama"), an uncased WordPiece in MiniLM's ("bert"), a sentencepiece unigram
model (T5Tokenizer) and a byte-level BPE (RobertaTokenizer); no T5 or RoBERTa tokenizer files
exist offline. They need no download and train nothing, so the task tests are in the fast
tier. `REAL_BACKBONES` are the real SmolLM2 (from its GGUF) and all-MiniLM-L6-v2 tokenizers,
for the `real_model` tier.
"""

from __future__ import annotations

import functools
from pathlib import Path

from prompt_jax.models import fetch, load_tokenizer

DATA = Path(__file__).resolve().parent / "data"


@functools.cache
def t5_tokenizer():
    """A T5Tokenizer over the tiny sentencepiece unigram model (tests/data/tiny-t5)."""
    from transformers import T5Tokenizer

    return T5Tokenizer.from_pretrained(str(DATA / "tiny-t5"), extra_ids=0)


@functools.cache
def roberta_tokenizer():
    """A RobertaTokenizer over the tiny byte-level BPE (tests/data/tiny-roberta)."""
    from transformers import RobertaTokenizer

    return RobertaTokenizer.from_pretrained(str(DATA / "tiny-roberta"))


@functools.cache
def llama_tokenizer():
    """The tiny byte-level BPE in SmolLM2's layout (tests/data/tiny-bpe)."""
    return load_tokenizer(DATA / "tiny-bpe")


@functools.cache
def bert_tokenizer():
    """The tiny uncased WordPiece in all-MiniLM-L6-v2's layout (tests/data/tiny-wordpiece)."""
    return load_tokenizer(DATA / "tiny-wordpiece")


@functools.cache
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's own tokenizer (a real-model download)."""
    return load_tokenizer(fetch("smollm2-135m-instruct"))


@functools.cache
def minilm_tokenizer():
    """all-MiniLM-L6-v2's own tokenizer (a real-model download)."""
    return load_tokenizer(fetch("all-minilm-l6-v2"))


# (style, tokenizer factory) for every backbone kind.
BACKBONES = {
    "t5": ("t5", t5_tokenizer),
    "roberta": ("mlm", roberta_tokenizer),
    "bert": ("mlm", bert_tokenizer),
    "llama": ("causal", llama_tokenizer),
}
# The real released tokenizers of two kinds ("<kind>-<model>"), for the real_model tier.
REAL_BACKBONES = {
    "bert-minilm": ("mlm", minilm_tokenizer),
    "llama-smollm2": ("causal", smollm2_tokenizer),
}
