"""Soft prompts: initializers and placement. Pure functions over arrays.

A prompt is a [P, H] array (or [B, P, H], one per row). A mixed-task batch carries a
`PromptSet` (N prompts of different lengths, padded to one P) and `batch["prompt_index"]` [B],
the prompt each row uses. Initializers take an `embed` function (ids [N] -> [N, H]) so they
work for every backbone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

INITS = ("random_uniform", "sampled_vocab", "class_labels", "text", "from_array")
PLACEMENTS = ("prefix", "after_bos", "suffix")

EmbedFn = Callable[[jax.Array], jax.Array]  # ids [N] -> [N, H]


def check_length(length: int, max_length: int | None = None, input_length: int = 0) -> None:
    """A prompt must have 1..max_length - input_length vectors."""
    if length < 1:
        raise ValueError(f"prompt length must be at least 1, got {length}")
    if max_length is not None and length + input_length > max_length:
        raise ValueError(
            f"prompt length {length} + input length {input_length} exceeds the model's maximum "
            f"length {max_length}"
        )


def random_uniform(rng: jax.Array, length: int, d_model: int, scale: float = 0.5) -> jax.Array:
    """Uniform in [-scale, scale] (Lester et al.'s random init). -> [P, H] float32."""
    check_length(length)
    return jax.random.uniform(rng, (length, d_model), jnp.float32, -scale, scale)


def sampled_vocab(rng: jax.Array, embed: EmbedFn, vocab_size: int, length: int,
                  top_k: int = 5000, skip: int = 0) -> jax.Array:
    """Embeddings of P distinct tokens drawn from the `top_k` most frequent ones. -> [P, H].

    Sentencepiece and BPE vocabularies are ordered by frequency (merge order), so ids
    `skip .. skip + top_k` stand for the most frequent tokens; `skip` jumps over special tokens.
    """
    check_length(length)
    pool = min(top_k, vocab_size - skip)
    if pool < 1:
        raise ValueError(f"no tokens to sample from (vocab {vocab_size}, skip {skip})")
    ids = skip + jax.random.choice(rng, pool, (length,), replace=length > pool)
    return embed(ids).astype(jnp.float32)


def class_labels(rng: jax.Array, embed: EmbedFn, vocab_size: int, length: int,
                 label_token_ids: Sequence[Sequence[int]], top_k: int = 5000,
                 skip: int = 0) -> jax.Array:
    """Rows 0..C-1: each class label's embedding (multi-piece labels averaged); the remaining
    rows sampled from the vocabulary, as in Lester et al. -> [P, H]."""
    check_length(length)
    if len(label_token_ids) > length:
        raise ValueError(f"{len(label_token_ids)} class labels do not fit in a prompt of "
                         f"length {length}")
    if any(len(t) == 0 for t in label_token_ids):
        raise ValueError(f"a class label tokenizes to no tokens: {list(label_token_ids)}")
    rows = [embed(jnp.asarray(t)).astype(jnp.float32).mean(0) for t in label_token_ids]
    labels = jnp.stack(rows)
    if len(rows) == length:
        return labels
    rest = sampled_vocab(rng, embed, vocab_size, length - len(rows), top_k, skip)
    return jnp.concatenate([labels, rest])


def text(embed: EmbedFn, token_ids: Sequence[int], length: int) -> jax.Array:
    """Embeddings of a text's tokens, repeated or truncated to P rows. -> [P, H]."""
    check_length(length)
    if len(token_ids) == 0:
        raise ValueError("the init text tokenizes to no tokens")
    ids = np.resize(np.asarray(token_ids), length)  # repeats cyclically, or truncates
    return embed(jnp.asarray(ids)).astype(jnp.float32)


def from_array(array, d_model: int, length: int | None = None, source: str = "array",
               family: str = "model") -> jax.Array:
    """A given [P, H] prompt, checked against the backbone's width (and length, if given)."""
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] != d_model or (length and array.shape[0] != length):
        want = f"({length or 'P'}, {d_model})"
        raise ValueError(f"{source}: prompt of shape {array.shape} does not fit the {family} "
                         f"backbone, which expects {want}")
    check_length(array.shape[0])
    return jnp.asarray(array, jnp.float32)


@flax.struct.dataclass
class PromptSet:
    """N prompts padded to a common length P; each row of a batch picks one by index
    (`batch["prompt_index"]` [B] int32). A pytree: jitted steps take it as an argument."""

    vectors: jax.Array  # [N, P, H], prompt n's padded slots (from lengths[n] on) are zero
    lengths: jax.Array  # [N] int32, real vectors of each prompt (the rest is padding)

    @classmethod
    def stack(cls, prompts: Sequence) -> PromptSet:
        """N prompts of shapes [P_n, H] (one H) -> a PromptSet of P = max P_n."""
        arrays = [jnp.asarray(p, jnp.float32) for p in prompts]
        if not arrays:
            raise ValueError("a PromptSet needs at least one prompt")
        if any(a.ndim != 2 or a.shape[1] != arrays[0].shape[1] or a.shape[0] < 1
               for a in arrays):
            raise ValueError(f"prompts must be [P_n, H] with one H and P_n >= 1; got shapes "
                             f"{[tuple(a.shape) for a in arrays]}")
        p = max(a.shape[0] for a in arrays)
        vectors = jnp.stack([jnp.pad(a, ((0, p - a.shape[0]), (0, 0))) for a in arrays])
        lengths = jnp.asarray([a.shape[0] for a in arrays], jnp.int32)
        return cls(vectors, lengths)

    def rows(self, prompt_index: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Each row's prompt: ([B, P, H] vectors, [B] lengths) for `prompt_index` [B]."""
        return (jnp.take(self.vectors, prompt_index, axis=0),
                jnp.take(self.lengths, prompt_index, axis=0))


def insertion_points(mask: jax.Array, placement: str) -> jax.Array:
    """Index [B] at which the prompt goes: 0 (prefix), 1 (after BOS / CLS), or right after the
    last real token (suffix)."""
    b, t = mask.shape
    if placement == "prefix":
        return jnp.zeros((b,), jnp.int32)
    if placement == "after_bos":
        return jnp.ones((b,), jnp.int32)
    if placement == "suffix":
        return jnp.max(jnp.where(mask > 0, jnp.arange(1, t + 1)[None], 0), axis=1).astype(jnp.int32)
    raise ValueError(f"unknown placement {placement!r}; use one of {PLACEMENTS}")


def insert_prompt(prompt: jax.Array, embeds: jax.Array, mask: jax.Array,
                  placement: str = "prefix",
                  lengths: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Inserts the soft prompt into embedded inputs.

    Row b becomes [text before the insertion point, its prompt's first lengths[b] vectors,
    the rest of its text (padding included), P - lengths[b] masked slots]: a row's tokens stay
    contiguous whatever the other rows' prompt lengths, so families whose positions count
    every slot (BERT's absolute ids, T5's relative buckets) see what the row would alone.

    Args:
      prompt: [P, H], or [B, P, H] for a different prompt per row.
      embeds: [B, T, H] embedded input tokens.
      mask: [B, T] 1 for real tokens (padding may follow them).
      placement: "prefix", "after_bos" or "suffix".
      lengths: [B] real vectors of each row's prompt (default: all P); a row's prompt vectors
        from lengths[b] on are padding and are dropped.

    Returns:
      (embeds [B, P + T, H], mask [B, P + T], insertion index [B]). Real prompt vectors are
      always visible (mask 1); padding stays masked.
    """
    b, t, h = embeds.shape
    if prompt.ndim == 2:
        prompt = jnp.broadcast_to(prompt[None], (b, *prompt.shape))
    if prompt.shape[0] != b or prompt.shape[2] != h:
        raise ValueError(f"prompt of shape {prompt.shape} does not fit inputs of shape "
                         f"{embeds.shape} ([B, P, H] with H = {h})")
    p = prompt.shape[1]
    n = jnp.full((b, 1), p, jnp.int32) if lengths is None else lengths[:, None]  # [B, 1]
    start = insertion_points(mask, placement)[:, None]  # [B, 1]
    j = jnp.arange(t + p)[None]  # [1, P + T]
    in_prompt = (j >= start) & (j < start + n)  # [B, P + T]
    text_j = jnp.where(j < start, j, j - n)  # [B, P + T] text index of each slot
    in_text = ~in_prompt & (text_j < t)  # the rest: P - n trailing masked slots
    text_idx = jnp.clip(text_j, 0, t - 1)
    prompt_idx = jnp.clip(j - start, 0, p - 1)
    from_text = jnp.take_along_axis(embeds, text_idx[..., None], axis=1)  # [B, P + T, H]
    from_prompt = jnp.take_along_axis(prompt.astype(embeds.dtype), prompt_idx[..., None], axis=1)
    new_embeds = jnp.where(in_prompt[..., None], from_prompt,
                           jnp.where(in_text[..., None], from_text, 0))
    text_mask = jnp.take_along_axis(mask, text_idx, axis=1)  # [B, P + T]
    new_mask = jnp.where(in_prompt, 1, jnp.where(in_text, text_mask, 0))
    return new_embeds, new_mask.astype(mask.dtype), start[:, 0]


def shift_positions(positions: jax.Array, start: jax.Array,
                    length: int | jax.Array) -> jax.Array:
    """Where input positions [B] land after inserting `length` (an int, or [B] one per row)
    prompt vectors at `start` [B]."""
    return jnp.where(positions >= start, positions + length, positions)


def prompted_inputs(model, params, prompt: jax.Array | PromptSet, batch: dict,
                    placement: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Embeds a batch and inserts the prompt: one [P, H] for every row, [B, P, H], or a
    `PromptSet` whose prompt `batch["prompt_index"][b]` goes into row b.

    Returns:
      (embeds [B, P+T, H], mask [B, P+T], target positions [B] shifted past each row's prompt).
    """
    embeds = model.embed(params, batch["inputs"])  # [B, T, H]
    if isinstance(prompt, PromptSet):
        vectors, lengths = prompt.rows(batch["prompt_index"])  # [B, P, H], [B]
        shift = lengths
    else:
        vectors, lengths, shift = prompt, None, prompt.shape[-2]
    embeds, mask, start = insert_prompt(vectors, embeds, batch["input_mask"], placement, lengths)
    positions = shift_positions(batch["target_position"], start, shift)
    return embeds, mask, positions


def initial_prompt(loaded, task, init: str, length: int, *,
                   seed: int = 0, init_text: str = "", init_scale: float = 0.5,
                   init_prompt: str = "") -> jax.Array:
    """A [P, H] starting prompt (`INITS`) for a task on a loaded model (`engine.LoadedModel`,
    `engine.TaskHandle`): random uniform, sampled vocabulary, the task's class labels, a text's
    embeddings, or a prompt file (`init_prompt`, any format `prompt_io` reads).

    Raises:
      ValueError: an unknown init, or class labels for a generation task (it has none).
    """
    model, tok = loaded.model, loaded.tokenizer
    rng = jax.random.PRNGKey(seed + 1)
    vocab_skip = len(getattr(tok, "all_special_ids", []) or [])
    if init == "random_uniform":
        return random_uniform(rng, length, model.d_model, init_scale)
    if init == "sampled_vocab":
        return sampled_vocab(rng, loaded.embed, model.vocab_size, length,
                                     skip=vocab_skip)
    if init == "class_labels":
        if not task.labels:
            raise ValueError(f"init 'class_labels' needs class labels; task {task.name!r} "
                             f"generates text: use sampled_vocab, text or random_uniform")
        space = " " if task.style == "causal" else ""
        words = [tok(space + v, add_special_tokens=False)["input_ids"]
                 for v in task.spec.verbalizers_for(task.style)]
        return class_labels(rng, loaded.embed, model.vocab_size, length, words,
                                    skip=vocab_skip)
    if init == "text":
        return text(loaded.embed, tok(init_text, add_special_tokens=False)["input_ids"],
                            length)
    if init == "from_array":
        from prompt_jax.prompts.files import load_prompt_for

        loaded_prompt = load_prompt_for(model, init_prompt)
        return from_array(loaded_prompt.array, model.d_model, length, init_prompt,
                                  model.family)
    raise ValueError(f"unknown init {init!r}; use one of {INITS}")
