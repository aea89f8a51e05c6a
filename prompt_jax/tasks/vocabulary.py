"""A Hugging Face tokenizer as a seqio Vocabulary. Imports TensorFlow and seqio."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import seqio
import tensorflow as tf

from prompt_jax.tasks import encoding


class HFVocabulary(seqio.Vocabulary):
    """A Hugging Face tokenizer as a seqio Vocabulary (no special tokens added by `encode`)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        vocab = sorted(tokenizer.get_vocab().items())
        digest = hashlib.sha1(json.dumps([vocab, tokenizer.all_special_tokens]).encode())
        stem = re.sub(r"\W", "_", Path(str(tokenizer.name_or_path or "tok")).name)[:40]
        self.name = f"{stem}_{digest.hexdigest()[:10]}"
        super().__init__(extra_ids=0)

    @property
    def eos_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    @property
    def unk_id(self) -> int | None:
        return self.tokenizer.unk_token_id

    @property
    def pad_id(self) -> int:
        return pad_id(self.tokenizer)

    @property
    def _base_vocab_size(self) -> int:
        return len(self.tokenizer)

    def _encode(self, s: str) -> list[int]:
        return encoding.encode_text(self.tokenizer, s)

    def _decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        def encode(text):  # a 0-d object array holding bytes
            return np.asarray(self._encode(text.item().decode("utf-8")), np.int32)

        ids = tf.numpy_function(encode, [s], tf.int32, stateful=False)
        ids.set_shape([None])
        return ids

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        def decode(arr):
            if arr.ndim == 1:
                return np.asarray(self._decode(arr).encode("utf-8"), object)
            return np.asarray([self._decode(row).encode("utf-8") for row in arr], object)

        out = tf.numpy_function(decode, [ids], tf.string, stateful=False)
        out.set_shape(ids.shape[:-1])
        return out

    def __eq__(self, other) -> bool:
        return isinstance(other, HFVocabulary) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


def pad_id(tokenizer) -> int:
    """The tokenizer's pad id, else its EOS id (Llama-family tokenizers often have no pad)."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    raise ValueError(f"{type(tokenizer).__name__} has neither a pad nor an EOS token")


_VOCABS: dict[int, HFVocabulary] = {}


def vocabulary(tokenizer) -> HFVocabulary:
    """One HFVocabulary per tokenizer object."""
    vocab = _VOCABS.get(id(tokenizer))
    if vocab is None or vocab.tokenizer is not tokenizer:
        vocab = _VOCABS[id(tokenizer)] = HFVocabulary(tokenizer)
    return vocab
