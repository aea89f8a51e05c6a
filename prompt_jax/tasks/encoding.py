"""From an example to token ids with the backbone's own (Hugging Face) tokenizer. No TensorFlow.

A template is compiled once per (task, style, tokenizer) into a `Layout`: fixed token ids
(literal template text, the tokenizer's special tokens, the mask) and fields (the example's
texts). Each field is tokenized on its own, with the whitespace that precedes it in the template,
so the ids equal those of the filled template and decode back to it. When the result is longer
than `max_length`, only the fields are shortened (their ends are cut, longest first), so the
template's end (the question the model answers, or T5's EOS) always survives.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence

import numpy as np

from prompt_jax.tasks.registry import TaskSpec, get_task


@dataclasses.dataclass(frozen=True)
class Part:
    """A piece of a compiled template: fixed `ids` (rendered as `text`), or a `field`."""

    ids: tuple[int, ...] = ()
    text: str = ""
    field: str = ""  # "text_a" / "text_b" for a field part
    prefix: str = ""  # whitespace put before the field's text when tokenizing it
    is_mask: bool = False


@dataclasses.dataclass(frozen=True)
class Layout:
    """A compiled template."""

    task: str
    style: str
    parts: tuple[Part, ...]
    target_suffix: tuple[int, ...]  # ends a generation target (EOS, where the tokenizer has one)
    target_prefix: str  # put before the target text (causal: " ")

    @property
    def fixed_length(self) -> int:
        return sum(len(p.ids) for p in self.parts)


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of `text` without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _find(seq: list[int], sub: list[int], start: int = 0) -> int:
    for i in range(start, len(seq) - len(sub) + 1):
        if seq[i:i + len(sub)] == sub:
            return i
    raise ValueError(f"could not locate {sub} in {seq}")


def special_layout(tokenizer, pair: bool) -> tuple[list[int], ...]:
    """The special tokens the tokenizer itself puts around one text or a pair of texts:
    (prefix, suffix) or (prefix, middle, suffix), e.g. BERT ([CLS]), ([SEP]), ([SEP]) and
    RoBERTa (<s>), (</s></s>), (</s>)."""
    a, b = encode_text(tokenizer, "a"), encode_text(tokenizer, "b")
    if not pair:
        full = list(tokenizer("a")["input_ids"])
        i = _find(full, a)
        return full[:i], full[i + len(a):]
    full = list(tokenizer("a", "b")["input_ids"])
    i = _find(full, a)
    j = _find(full, b, i + len(a))
    return full[:i], full[i + len(a):j], full[j + len(b):]


def _special(tokenizer, ids: Sequence[int]) -> Part:
    return Part(tuple(ids), "".join(tokenizer.convert_ids_to_tokens(list(ids))))


def _template_parts(tokenizer, template: str) -> list[Part]:
    parts: list[Part] = []
    for literal, field, _, _ in string.Formatter().parse(template):
        body = literal.rstrip() if field else literal
        if body:
            parts.append(Part(tuple(encode_text(tokenizer, body)), body))
        if field:
            if field not in ("text_a", "text_b"):
                raise ValueError(f"template {template!r} names unknown field {field!r}")
            parts.append(Part(field=field, prefix=literal[len(body):]))
    return parts


def compile_layout(task: str | TaskSpec, tokenizer, style: str) -> Layout:
    """The compiled template of `task` in `style` for `tokenizer`.

    t5: the task's text-to-text template + EOS, targets end with EOS. causal: the tokenizer's
    own leading special tokens (if any, e.g. BOS) + the template; targets start with a space
    (generation targets end with EOS, so that decoding learns to stop).
    mlm: `<cls> <mask> text_a <sep> [text_b <sep>]` with the tokenizer's own special tokens.

    Raises:
      ValueError: the style does not fit the task or the tokenizer lacks a token it needs.
    """
    spec = get_task(task)
    spec.check_style(style)
    if style == "t5":
        if tokenizer.eos_token_id is None:
            raise ValueError(f"style 't5' needs an EOS token; {type(tokenizer).__name__} has none")
        eos = (tokenizer.eos_token_id,)
        parts = _template_parts(tokenizer, spec.template("t5")) + [_special(tokenizer, eos)]
        return Layout(spec.name, style, tuple(parts), eos, "")
    if style == "causal":
        prefix = special_layout(tokenizer, pair=False)[0]
        parts = ([_special(tokenizer, prefix)] if prefix else []) + _template_parts(
            tokenizer, spec.template("causal"))
        eos = () if tokenizer.eos_token_id is None else (tokenizer.eos_token_id,)
        return Layout(spec.name, style, tuple(parts), eos, " ")
    if tokenizer.mask_token_id is None:
        raise ValueError(f"style 'mlm' needs a mask token; {type(tokenizer).__name__} has none")
    specials = special_layout(tokenizer, pair=spec.pair)
    mask = Part((tokenizer.mask_token_id,), tokenizer.mask_token, is_mask=True)
    parts = [_special(tokenizer, specials[0]), mask, Part(field="text_a", prefix=" "),
             _special(tokenizer, specials[1])]
    if spec.pair:
        parts += [Part(field="text_b"), _special(tokenizer, specials[2])]
    return Layout(spec.name, style, tuple(p for p in parts if p.ids or p.field), (), "")


def _field_caps(lengths: list[int], budget: int) -> list[int]:
    """Largest per-field lengths with sum <= budget, cutting the longest fields first."""
    if sum(lengths) <= budget:
        return lengths
    lo, hi = 0, max(lengths)
    while lo < hi:  # the largest cap c with sum(min(l, c)) <= budget
        mid = (lo + hi + 1) // 2
        if sum(min(n, mid) for n in lengths) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return [min(n, lo) for n in lengths]


def encode_inputs(layout: Layout, tokenizer, text_a: str, text_b: str = "",
                  max_length: int | None = None) -> tuple[list[int], int]:
    """(input ids, index of the mask token or 0) of one example, fields cut to fit max_length.

    Raises:
      ValueError: the template alone is longer than max_length.
    """
    return encode_inputs_batch(layout, tokenizer, [text_a], [text_b], max_length)[0]


def encode_inputs_batch(layout: Layout, tokenizer, texts_a: Sequence[str],
                        texts_b: Sequence[str], max_length: int | None = None
                        ) -> list[tuple[list[int], int]]:
    """`encode_inputs` of many examples, each field tokenized in one batched call."""
    texts = {"text_a": texts_a, "text_b": texts_b}
    fields = [None if not p.field else
              tokenizer([p.prefix + t for t in texts[p.field]], add_special_tokens=False)[
                  "input_ids"] if texts[p.field] else []
              for p in layout.parts]
    budget = None
    if max_length is not None:
        budget = max_length - layout.fixed_length
        if budget < 0:
            raise ValueError(f"max_length {max_length} is shorter than the {layout.style} "
                             f"template of {layout.task!r} itself ({layout.fixed_length} tokens)")
    out = []
    for i in range(len(texts_a)):
        pieces = [None if f is None else list(f[i]) for f in fields]
        if budget is not None:
            caps = iter(_field_caps([len(f) for f in pieces if f is not None], budget))
            pieces = [f[:next(caps)] if f is not None else None for f in pieces]
        ids: list[int] = []
        position = 0
        for part, piece in zip(layout.parts, pieces, strict=True):
            if part.is_mask:
                position = len(ids)
            ids.extend(part.ids if piece is None else piece)
        out.append((ids, position))
    return out


def encode_target(layout: Layout, tokenizer, text: str, max_length: int | None = None
                  ) -> list[int]:
    """Target ids of a generation task's reference: prefix + text + suffix; the text's end is
    cut to fit max_length, the suffix (T5: EOS) is kept."""
    ids = encode_text(tokenizer, layout.target_prefix + text)
    if max_length is not None:
        ids = ids[:max(0, max_length - len(layout.target_suffix))]
    return ids + list(layout.target_suffix)


def verbalizer_ids(task: str | TaskSpec, tokenizer, style: str) -> list[list[int]]:
    """Token ids of each verbalizer as the style scores it (t5: + EOS; causal: leading space,
    no BOS; mlm: word pieces, no special tokens)."""
    spec = get_task(task)
    if spec.is_generation:
        raise ValueError(f"task {spec.name!r} is a generation task: it has no verbalizers")
    words = spec.verbalizers_for(style)
    if style == "t5":
        return [encode_text(tokenizer, w) + [tokenizer.eos_token_id] for w in words]
    if style == "causal":
        return [encode_text(tokenizer, " " + w) for w in words]
    return [encode_text(tokenizer, w) for w in words]


def pad_candidates(token_ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Tokenized verbalizers -> ([C, K] ids, [C, K] mask), right-padded with 0.

    Raises:
      ValueError: a verbalizer is empty, or two verbalizers tokenize identically (they could
        never be told apart).
    """
    if any(len(t) == 0 for t in token_ids):
        raise ValueError(f"a verbalizer tokenizes to no tokens: {list(token_ids)}")
    if len({tuple(t) for t in token_ids}) != len(token_ids):
        raise ValueError(f"verbalizers are not distinct after tokenization: {list(token_ids)}")
    k = max(len(t) for t in token_ids)
    ids = np.zeros((len(token_ids), k), np.int32)
    mask = np.zeros((len(token_ids), k), np.int32)
    for i, t in enumerate(token_ids):
        ids[i, : len(t)] = t
        mask[i, : len(t)] = 1
    return ids, mask


def candidates(task: str | TaskSpec, tokenizer, style: str) -> tuple[np.ndarray, np.ndarray]:
    """Tokenized verbalizers: (ids int32 [C, K], mask int32 [C, K]), right-padded with 0.

    Raises:
      ValueError: two verbalizers tokenize identically, or one to nothing.
    """
    spec = get_task(task)
    try:
        return pad_candidates(verbalizer_ids(spec, tokenizer, style))
    except ValueError as e:
        raise ValueError(f"task {spec.name!r}, style {style!r}: {e}") from None


def render(layout: Layout, text_a: str, text_b: str = "") -> str:
    """The filled template as text, special tokens written as the tokenizer spells them."""
    texts = {"text_a": text_a, "text_b": text_b}
    return "".join(p.prefix + texts[p.field] if p.field else p.text for p in layout.parts)
