"""BERT / RoBERTa / XLM-R checkpoints (Hugging Face) -> `Roberta`: the key table, and the
config a checkpoint gives.

The encoder's keys sit under "", "bert." or "roberta." (whichever the checkpoint uses); the
masked-LM head (RoBERTa's `lm_head.*`, BERT's `cls.predictions.*`) is loaded when present,
and a checkpoint without one loads as the encoder only.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from prompt_jax.models.assemble import CheckpointError, Entry, Tensor, resolve_tying
from prompt_jax.models.roberta import RobertaConfig

log = logging.getLogger(__name__)


def roberta_from_hf(hf: dict[str, Any], tensors: dict[str, Tensor], config_file: Path,
                    dtype: str, param_dtype: str
                    ) -> tuple[RobertaConfig, tuple[list[Entry], list[str]]]:
    """(config, key table) of a Hugging Face BERT / RoBERTa checkpoint (`hf`: its
    config.json): with the masked-LM head if the weights hold one, untied where they say so
    (see `resolve_tying`)."""
    del config_file  # (for the families whose config errors name it)
    prefixes = [p for p in ("", "bert.", "roberta.") if p + "embeddings.word_embeddings.weight"
                in tensors]
    if not prefixes:
        files = sorted({str(t.file) for t in tensors.values()})
        raise CheckpointError(f"{', '.join(files)}: missing weights: no "
                              "embeddings.word_embeddings.weight under any known prefix")
    config = RobertaConfig.from_hf(hf, dtype=dtype, param_dtype=param_dtype)
    head = _mlm_head_keys(config.variant)
    has_head = any(k.startswith((head["dense"], head["norm"], head["bias"])) for k in tensors)
    if not has_head:
        log.info("no masked-LM head in the checkpoint: loading the encoder only")
    config = dataclasses.replace(config, mlm_head=has_head)
    if has_head:
        config = resolve_tying(config, tensors, head["decoder"] + ".weight",
                               prefixes[0] + "embeddings.word_embeddings.weight")
    return config, roberta_table(config, prefixes[0])


def roberta_table(cfg: RobertaConfig, prefix: str) -> tuple[list[Entry], list[str]]:
    """(entries, ignored key patterns) for Hugging Face BERT / RoBERTa checkpoints."""
    p, lay = prefix, prefix + "encoder.layer.{i}."

    def linear(path, key, kind="linear1"):
        return [Entry(path + ("kernel",), key + ".weight", kind),
                Entry(path + ("bias",), key + ".bias", "reshape" if kind == "linear1" else "copy")]

    def norm(path, key):
        return [Entry(path + ("scale",), key + ".weight"), Entry(path + ("bias",), key + ".bias")]

    e = [
        Entry(("word_embeddings", "embedding"), p + "embeddings.word_embeddings.weight"),
        Entry(("position_embeddings", "embedding"), p + "embeddings.position_embeddings.weight"),
        Entry(("token_type_embeddings", "embedding"),
              p + "embeddings.token_type_embeddings.weight"),
        *norm(("embed_norm",), p + "embeddings.LayerNorm"),
        *linear(("layers", "q"), lay + "attention.self.query"),
        *linear(("layers", "k"), lay + "attention.self.key"),
        *linear(("layers", "v"), lay + "attention.self.value"),
        Entry(("layers", "o", "kernel"), lay + "attention.output.dense.weight", "linear2"),
        Entry(("layers", "o", "bias"), lay + "attention.output.dense.bias"),
        *norm(("layers", "attn_norm"), lay + "attention.output.LayerNorm"),
        Entry(("layers", "wi", "kernel"), lay + "intermediate.dense.weight", "linear1"),
        Entry(("layers", "wi", "bias"), lay + "intermediate.dense.bias"),
        Entry(("layers", "wo", "kernel"), lay + "output.dense.weight", "linear1"),
        Entry(("layers", "wo", "bias"), lay + "output.dense.bias"),
        *norm(("layers", "mlp_norm"), lay + "output.LayerNorm"),
    ]
    # Buffers and heads prompt tuning never uses: the pooler and BERT's next-sentence head.
    ignored = [p + "embeddings.position_ids", p + "embeddings.token_type_ids",
               p + "pooler.dense.weight", p + "pooler.dense.bias",
               "cls.seq_relationship.weight", "cls.seq_relationship.bias"]
    if cfg.mlm_head:
        head = _mlm_head_keys(cfg.variant)
        e += [
            Entry(("mlm_dense", "kernel"), head["dense"] + ".weight", "linear1"),
            Entry(("mlm_dense", "bias"), head["dense"] + ".bias"),
            *norm(("mlm_norm",), head["norm"]),
        ]
        if cfg.tie_word_embeddings:
            e.append(Entry(("mlm_bias",), head["bias"], aliases=(head["decoder"] + ".bias",)))
            # Checked equal to the word embeddings by `resolve_tying`.
            ignored.append(head["decoder"] + ".weight")
        else:
            # transformers 5 ties the decoder bias to the head's `bias` only when the head is
            # tied; an untied head computes `decoder(x)` with its own bias and never reads
            # `bias` (transformers 4 checkpoints hold the two equal).
            e += [Entry(("mlm_decoder", "kernel"), head["decoder"] + ".weight", "linear1"),
                  Entry(("mlm_bias",), head["decoder"] + ".bias")]
            ignored.append(head["bias"])
    return e, ignored


def _mlm_head_keys(variant: str) -> dict[str, str]:
    """The key prefixes of the masked-LM head's parts in a `variant` checkpoint."""
    if variant == "roberta":
        return {"dense": "lm_head.dense", "norm": "lm_head.layer_norm", "bias": "lm_head.bias",
                "decoder": "lm_head.decoder"}
    return {"dense": "cls.predictions.transform.dense",
            "norm": "cls.predictions.transform.LayerNorm", "bias": "cls.predictions.bias",
            "decoder": "cls.predictions.decoder"}
