"""Builds the tiny tokenizers kept beside this script, so that the task tests need no download
and train nothing. Run once, from the repository root, with ../shared beside it:

    .venv/bin/python tests/data/make_tokenizers.py

- `tiny-bpe/`: a byte-level BPE in SmolLM2-135M-Instruct's layout (no prefix space, no BOS
  added, `<|endoftext|>` 0 = unk, `<|im_start|>` 1 = bos, `<|im_end|>` 2 = eos and pad), the
  tokenizer of the `tiny_llama` test model and the "llama" backbone of the task tests.
- `tiny-wordpiece/`: an uncased BERT WordPiece in all-MiniLM-L6-v2's layout (`[PAD]` 0,
  `[UNK]` 100, `[CLS]` 101, `[SEP]` 102, `[MASK]` 103), the "bert" backbone of the task tests.
- `tiny-t5/spiece.model`: a sentencepiece unigram model (T5 style: pad 0, eos 1, unk 2, no
  bos), read through transformers' T5Tokenizer: the "t5" backbone.
- `tiny-roberta/`: a byte-level BPE's vocab.json and merges.txt (RoBERTa's special tokens),
  read through RobertaTokenizer: the "roberta" backbone.

No T5 or RoBERTa tokenizer files exist offline at all. All four are trained on every task's
templates and label words and the first rows of every local split in ../shared/data, so
templates and common words are whole tokens and rows stay short; anything else still
tokenizes (bytes for the BPEs, [UNK] for WordPiece, pieces for the unigram model). The real
SmolLM2 and MiniLM tokenizers stay covered by the `real_model` tier (tests/test_real_models.py
and the task tests' `REAL_BACKBONES`).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS = 500  # first rows of each local split (each text cut to 2,000 characters)
BPE_VOCAB = 2048
WORDPIECE_VOCAB = 2048
T5_VOCAB = ROBERTA_VOCAB = 2000
# Words the tests write themselves (tests/test_serving.py, tests/test_tasks_user_file.py, ...).
TEST_TEXTS = (
    "the film was a witty gorgeous mess of boring long scenes and great acting",
    "the film is long it is short hi there a dull , tedious film . a warm , witty film .",
    "Review: Sentiment: Question: Answer: Yes or no? How do I learn jax flax optax orbax",
    "What is the best way to learn",
)


def corpus() -> list[str]:
    from prompt_jax.tasks import get_task, list_tasks, read_split

    lines = list(TEST_TEXTS)
    for name in list_tasks():
        spec = get_task(name)
        lines += [t for _, t in spec.templates] + list(spec.verbalizers + spec.t5_verbalizers)
        # Label words as a real vocabulary holds them: SmolLM2 has " positive", " yes", ... as
        # one token each, which the serving bank's initial shape (one token per class) relies on.
        lines += [" ".join(" " + w for w in spec.verbalizers)] * 200
        for split in ("train", "validation", "test"):
            try:
                examples, _ = read_split(name, split)
            except (FileNotFoundError, KeyError):
                continue
            for e in examples[:ROWS]:
                lines += [e.text_a[:2000]] + ([e.text_b[:2000]] if e.text_b else [])
    return lines


def tiny_bpe(lines: list[str], out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1")
    tok.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=BPE_VOCAB, special_tokens=special, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
        unk_token="<|endoftext|>", pad_token="<|im_end|>", add_bos_token=False,
    ).save_pretrained(out)


def tiny_wordpiece(lines: list[str], out: Path) -> None:
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    # MiniLM's ids for the special tokens: [PAD] 0, [unusedN] 1-99, [UNK] 100, [CLS] 101, ...
    special = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]",
                                                                   "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(lines, trainers.WordPieceTrainer(
        vocab_size=WORDPIECE_VOCAB, special_tokens=special, show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
        cls_token="[CLS]", mask_token="[MASK]", do_lower_case=True,
    ).save_pretrained(out)


def tiny_t5(lines: list[str], out: Path) -> None:
    import sentencepiece as spm

    out.mkdir(exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(out / "spiece"), vocab_size=T5_VOCAB,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=1.0, minloglevel=2,
        normalization_rule_name="identity")  # NFKC's table alone would be 200 KB
    (out / "spiece.vocab").unlink()


def tiny_roberta(lines: list[str], out: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer

    out.mkdir(exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(lines, vocab_size=ROBERTA_VOCAB, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(out))


def main() -> None:
    lines = corpus()
    tiny_bpe(lines, HERE / "tiny-bpe")
    tiny_wordpiece(lines, HERE / "tiny-wordpiece")
    tiny_t5(lines, HERE / "tiny-t5")
    tiny_roberta(lines, HERE / "tiny-roberta")
    for folder in ("tiny-bpe", "tiny-wordpiece"):
        path = HERE / folder / "tokenizer.json"  # one line: a third of the pretty size
        path.write_text(json.dumps(json.loads(path.read_text()), ensure_ascii=False,
                                   separators=(",", ":")) + "\n", encoding="utf-8")
    for folder in ("tiny-bpe", "tiny-wordpiece", "tiny-t5", "tiny-roberta"):
        size = sum(p.stat().st_size for p in (HERE / folder).iterdir())
        print(f"{folder}: {size // 1024} KB")


if __name__ == "__main__":
    main()
