"""Real tokenizers of the four backbone kinds for the task tests, built once per process.

SmolLM2 (byte-level BPE, from its GGUF) and all-MiniLM-L6-v2 (BERT WordPiece) are real released
tokenizers. No T5 or RoBERTa tokenizer files exist offline, so a small sentencepiece unigram
model (T5 style) and a byte-level BPE (RoBERTa style) are trained here on text from
../shared/data and loaded through transformers' own T5Tokenizer / RobertaTokenizer classes.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from prompt_jax.models import fetch, load_tokenizer
from prompt_jax.tasks import get_task, list_tasks, read_split


@functools.cache
def corpus() -> tuple[str, ...]:
    """Texts of every local task, plus the templates and label words (as a real vocabulary
    would cover them)."""
    lines: list[str] = []
    for name in list_tasks():
        spec = get_task(name)
        lines += [t for _, t in spec.templates] + list(spec.verbalizers + spec.t5_verbalizers)
        for split in ("train", "validation", "test"):
            try:
                examples, _ = read_split(name, split)
            except (FileNotFoundError, KeyError):
                continue
            for e in examples[:500]:
                lines += [e.text_a[:2000], e.text_b[:2000]] if e.text_b else [e.text_a[:2000]]
    return tuple(lines)


@functools.cache
def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="pj_task_tokenizers_"))


@functools.cache
def t5_tokenizer():
    """A T5Tokenizer over a sentencepiece unigram model trained on the shared data."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    folder = _workdir() / "t5"
    folder.mkdir()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()), model_prefix=str(folder / "spiece"), vocab_size=2000,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=1.0, minloglevel=2)
    return T5Tokenizer.from_pretrained(str(folder), extra_ids=0)


@functools.cache
def roberta_tokenizer():
    """A RobertaTokenizer over a byte-level BPE trained on the shared data."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    folder = _workdir() / "roberta"
    folder.mkdir()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus(), vocab_size=2000, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    return RobertaTokenizer.from_pretrained(str(folder))


@functools.cache
def smollm2_tokenizer():
    return load_tokenizer(fetch("smollm2-135m-instruct"))


@functools.cache
def bert_tokenizer():
    return load_tokenizer(fetch("all-minilm-l6-v2"))


# (style, tokenizer factory) for every backbone kind.
BACKBONES = {
    "t5": ("t5", t5_tokenizer),
    "roberta": ("mlm", roberta_tokenizer),
    "bert": ("mlm", bert_tokenizer),
    "llama": ("causal", smollm2_tokenizer),
}
