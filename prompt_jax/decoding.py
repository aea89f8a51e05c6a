"""Batched greedy decoding after a soft prompt: the entry point for text-to-text tasks,
training-time evaluation and a /generate endpoint.

    out = decoding.greedy(model, params, prompt, input_ids, input_mask, max_new_tokens=32,
                          stop="\\n", decode=lambda ids: tokenizer.decode(ids))
    out.token_ids[b, :out.lengths[b]]   # row b's tokens; out.texts[b] its text

One jitted program per (model, shape bucket, prompt kind) decodes with a key/value cache
(`Backbone.generate`). Batch size, input length and the new-token buffer round up to powers of
two (`Buckets`); the task's own maximum of new tokens, the EOS ids and the pad id are traced,
so traffic of any batch size, input length and task inside one bucket runs one compiled
program (`TRACES` counts the compilations). Frozen params are an argument of the program,
never closed over.

Where the prompt goes: decoder-only backbones (`shares_prefix`) take it as a prefix whose keys
and values are computed once per batch ([P, H] or a `PromptSet`), or precomputed once per
prompt (`CachedPrompts`, e.g. a serving bank's arrays); other families (T5) get it inserted into
the encoder input at `default_placement`.

Stopping: a row ends at its first EOS (kept, like Hugging Face's `generate`), at the caller's
maximum of new tokens, or, on the host after the loop, at the first token whose decoded text
completes the stop string after the text's leading whitespace (so a "\n" stop does not cut an
answer that starts on a new line to nothing): that token is the row's last, the ids after it
are replaced by pad, and the row's text is cut where the stop string begins.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from prompt_jax.models.base import Params
from prompt_jax.prompts.initializers import PromptSet, insert_prompt
from prompt_jax.scoring import CachedPrompts, bucket

TRACES: collections.Counter = collections.Counter()  # family -> decode programs compiled
FINISH_REASONS = ("eos", "stop", "length")


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Powers of two that batch size, input length and the new-token buffer round up to."""

    min_batch: int = 1
    min_length: int = 8
    min_new_tokens: int = 8


@dataclasses.dataclass(frozen=True)
class Generation:
    """What `greedy` returns, on the host."""

    token_ids: np.ndarray  # [B, max_new_tokens] int32; row b's tokens, then pad_id
    lengths: np.ndarray  # [B] int32 tokens of row b (its EOS or stop token included)
    finish: tuple[str, ...]  # per row, one of FINISH_REASONS
    texts: tuple[str, ...] | None  # per row, decoded without EOS, cut before the stop string


def greedy(model, params: Params, prompt, input_ids, input_mask, *, max_new_tokens: int,
           eos_ids: int | Sequence[int] | None = None, pad_id: int | None = None,
           prompt_index=None, stop: str | None = None,
           decode: Callable[[list[int]], str] | None = None,
           buckets: Buckets = Buckets()) -> Generation:
    """Greedy continuation of each row after the soft prompt.

    Args:
      model: a generative `Backbone` (Llama, Gemma 3, T5).
      params: its frozen params (an argument of the jitted program).
      prompt: None; [P, H], one prompt for every row; a `PromptSet` (N prompts) or a
        `CachedPrompts` (N prompts' keys and values, decoder-only backbones), with `prompt_index`.
      input_ids: [B, T] token ids, padded anywhere.
      input_mask: [B, T] 1 for real tokens; every row needs one.
      max_new_tokens: the task's maximum of new tokens.
      eos_ids: the token id(s) that end a row (default: the model config's EOS).
      pad_id: what follows a row's end (default: the config's pad, else 0).
      prompt_index: [B] int, the prompt of each row (with N prompts).
      stop: the task's stop string (needs `decode`).
      decode: token ids -> text (e.g. a tokenizer's decode skipping special tokens); gives
        `Generation.texts`.
      buckets: the bucket minima.

    Returns:
      A `Generation` of the B rows.

    Raises:
      ValueError: on a row without real tokens, a stop string without `decode`, N prompts
        without `prompt_index`, or keys and values for a backbone that does not share prefixes.
    """
    ids, mask = np.asarray(input_ids), np.asarray(input_mask)
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise ValueError(f"input ids and mask must be [B, T] alike; got {ids.shape} and "
                         f"{mask.shape}")
    if not (mask > 0).any(axis=1).all():
        raise ValueError(f"rows {np.flatnonzero(~(mask > 0).any(axis=1)).tolist()} have no real "
                         f"input token; greedy decoding continues a row's last token")
    if stop is not None and decode is None:
        raise ValueError("a stop string needs `decode` (token ids -> text) to be found")
    if isinstance(prompt, CachedPrompts) and not model.shares_prefix:
        raise ValueError(f"the {model.family} backbone does not share prefixes: give it the "
                         f"prompt vectors, not their keys and values")
    if isinstance(prompt, (PromptSet, CachedPrompts)) and prompt_index is None:
        raise ValueError("N prompts need prompt_index [B], the prompt of each row")
    cfg = model.config
    if pad_id is None:
        pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    if eos_ids is None:
        eos_ids = -1 if cfg.eos_token_id is None else cfg.eos_token_id
    eos = np.atleast_1d(np.asarray(eos_ids, np.int32))

    b, t = ids.shape
    rows, width = bucket(b, buckets.min_batch), bucket(t, buckets.min_length)
    n_buffer = bucket(max_new_tokens, buckets.min_new_tokens)
    padded_ids = np.full((rows, width), pad_id, np.int32)
    padded_ids[:b, :t] = ids
    padded_mask = np.zeros((rows, width), np.int32)
    padded_mask[:b, :t] = mask > 0
    index = np.zeros((rows,), np.int32)
    if prompt_index is not None:
        index[:b] = np.asarray(prompt_index)
    tokens = _program(model, params, prompt, jnp.asarray(index), jnp.asarray(padded_ids),
                      jnp.asarray(padded_mask), jnp.arange(rows) < b, jnp.asarray(eos),
                      jnp.asarray(pad_id, jnp.int32), jnp.asarray(max_new_tokens, jnp.int32),
                      max_new_tokens=n_buffer)
    tokens = np.asarray(tokens)[:b, :max_new_tokens]
    return finish_rows(tokens, eos, pad_id, stop, decode)


def finish_rows(tokens: np.ndarray, eos: np.ndarray, pad_id: int, stop: str | None = None,
                decode: Callable[[list[int]], str] | None = None) -> Generation:
    """Lengths, finish reasons, stop-string truncation and texts of decoded rows [B, N]."""
    tokens = tokens.copy()
    b, n = tokens.shape
    is_eos = np.isin(tokens, eos)
    hit = is_eos.any(axis=1)
    lengths = np.where(hit, is_eos.argmax(axis=1) + 1, n).astype(np.int32)
    finish = ["eos" if h else "length" for h in hit]
    texts = []
    for row in range(b):
        body = tokens[row, :lengths[row]].tolist()
        if finish[row] == "eos":
            body = body[:-1]
        if decode is None:
            continue
        text = decode(body)
        if stop is not None and _stop_index(text, stop) >= 0:
            k = next(k for k in range(1, len(body) + 1)
                     if _stop_index(decode(body[:k]), stop) >= 0)
            lengths[row], finish[row] = k, "stop"
            tokens[row, k:] = pad_id
            text = decode(body[:k])
            text = text[:_stop_index(text, stop)]
        texts.append(text)
    return Generation(tokens, lengths, tuple(finish), None if decode is None else tuple(texts))


def _stop_index(text: str, stop: str) -> int:
    """Where the stop string begins in a generated text, past its leading whitespace (an
    answer that starts on a new line is not cut to nothing by a "\n" stop); -1 if absent."""
    start = len(text) - len(text.lstrip())
    return text.find(stop, start) if start < len(text) else -1


@partial(jax.jit, static_argnames=("model", "max_new_tokens"))
def _program(model, params, prompt, prompt_index, ids, mask, live, eos_ids, pad_id, limit, *,
             max_new_tokens: int):
    """The jitted decode of one bucket: ids, mask [B, T] -> new tokens [B, max_new_tokens]."""
    TRACES[model.family] += 1  # runs at trace time only: one per compiled program
    embeds = model.embed(params, ids)  # [B, T, H]
    kwargs = dict(eos_ids=eos_ids, pad_id=pad_id, live=live, limit=limit)
    if model.shares_prefix:
        if isinstance(prompt, CachedPrompts):
            kwargs.update(prefix_kv=(prompt.keys, prompt.values), prefix_lengths=prompt.lengths,
                          prefix_index=prompt_index)
        elif isinstance(prompt, PromptSet):
            kwargs.update(prefix=prompt.vectors, prefix_lengths=prompt.lengths,
                          prefix_index=prompt_index)
        elif prompt is not None:
            kwargs.update(prefix=prompt)  # [P, H]: its keys and values once per batch
    elif prompt is not None:
        vectors, lengths = (prompt.rows(prompt_index) if isinstance(prompt, PromptSet)
                            else (prompt, None))
        embeds, mask, _ = insert_prompt(vectors, embeds, mask, model.default_placement, lengths)
    return model.generate(params, embeds, mask, max_new_tokens, **kwargs)
