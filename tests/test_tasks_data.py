"""The task registry and the local readers, on the real files in ../shared/data (no TensorFlow)."""

from __future__ import annotations

import collections
import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prompt_jax.tasks import (
    FAMILY_STYLE,
    data_root,
    get_task,
    list_tasks,
    local_paths,
    read_split,
    style_for_family,
)
from prompt_jax.tasks.registry import CARVE_MAX, CARVED, carve_indices

DATA = data_root()

# The classification tasks of Prompt-Transferability that can be trained here (locally, or
# from TFDS); its generation tasks and TweetEval emoji (emoji labels) are not registered.
PAPER_TASKS = {"imdb", "sst2", "laptop", "restaurant", "movie_rationales", "mnli", "qnli",
               "snli", "qqp", "mrpc", "ethics_deontology", "ethics_justice", "squad", "nq_open",
               "samsum"}  # all 17 but Multi-News (not available offline)
UNREGISTERED = {"tweet_emoji", "deontology", "justice", "multi_news"}
# Tasks without local train files: they train from TFDS only.
TFDS_TRAIN = {"movie_rationales", "mnli", "qnli", "snli", "qqp", "ag_news"}
EXTRA_TASKS = {"rotten_tomatoes", "rte", "cb", "ag_news", "trec"}
TWEET_TASKS = {"tweet_sentiment", "tweet_emotion", "tweet_hate", "tweet_irony",
               "tweet_offensive", *(f"tweet_stance_{t}" for t in
                                    ("abortion", "atheism", "climate", "feminist", "hillary"))}
LOCAL_EVAL_ONLY = {"tweet_sentiment"}  # no train text in ../shared/data, no TFDS builder

# Label counts of every file split in ../shared/data, counted independently below and checked
# against the numbers in ../shared/README.md.
FILE_SPLITS = {
    ("sst2", "validation"): {"negative": 428, "positive": 444},
    ("sst2", "train"): {"negative": 29780, "positive": 37569},
    ("imdb", "test"): {"negative": 12500, "positive": 12500},
    ("laptop", "test"): {"negative": 128, "neutral": 169, "positive": 341},
    ("restaurant", "test"): {"negative": 196, "neutral": 196, "positive": 728},
    ("mnli", "validation"): {"entailment": 3479, "neutral": 3123, "contradiction": 3213},
    ("snli", "validation"): {"entailment": 3329, "neutral": 3235, "contradiction": 3278},
    ("qnli", "validation"): {"entailment": 2702, "not_entailment": 2761},
    ("mrpc", "test"): {"not_equivalent": 578, "equivalent": 1147},
    ("rotten_tomatoes", "test"): {"negative": 533, "positive": 533},
    ("rte", "train"): {"entailment": 1249, "not_entailment": 1241},
    ("rte", "validation"): {"entailment": 146, "not_entailment": 131},
    ("cb", "train"): {"entailment": 115, "neutral": 16, "contradiction": 119},
    ("cb", "validation"): {"entailment": 23, "neutral": 5, "contradiction": 28},
    ("ag_news", "test"): {"World": 1900, "Sports": 1900, "Business": 1900, "Sci/Tech": 1900},
    ("trec", "test"): {"ABBR": 9, "DESC": 138, "ENTY": 94, "HUM": 65, "LOC": 81, "NUM": 113},
    ("tweet_irony", "validation"): {"non_irony": 499, "irony": 456},
    ("tweet_stance_climate", "train"): {"none": 151, "against": 13, "favor": 191},
    ("ethics_deontology", "train"): {"unacceptable": 8374, "acceptable": 9790},
    ("ethics_deontology", "validation"): {"unacceptable": 1810, "acceptable": 1786},
    ("ethics_deontology", "test"): {"unacceptable": 1773, "acceptable": 1763},
    ("ethics_justice", "train"): {"unacceptable": 9961, "acceptable": 11830},
    ("ethics_justice", "validation"): {"unacceptable": 1350, "acceptable": 1354},
    ("ethics_justice", "test"): {"unacceptable": 1002, "acceptable": 1050},
}
# Tasks whose validation split is carved from a train file in shared/: (task, train rows).
CARVED_TASKS = {"imdb": 25000, "laptop": 2328, "restaurant": 3608, "mrpc": 4076,
                "rotten_tomatoes": 8530, "trec": 5452}
# Splits the registry knows but shared/ lacks: the error must name this file.
ABSENT = {("mnli", "train"): "mnli/train.jsonl", ("qnli", "train"): "glue_qnli/train.tsv",
          ("snli", "train"): "snli/train.jsonl", ("ag_news", "train"): "ag_news/train.csv",
          ("ag_news", "validation"): "ag_news/train.csv",
          ("qqp", "validation"): "glue_qqp/dev.tsv",
          ("movie_rationales", "validation"): "movies/val.jsonl"}


def label_counts(task, split):
    spec = get_task(task)
    examples, report = read_split(task, split)
    assert report.kept == len(examples)
    return {spec.labels[k]: v for k, v in collections.Counter(e.label for e in examples).items()}


def test_registry_has_the_paper_tasks_and_the_extras():
    assert set(list_tasks()) == PAPER_TASKS | EXTRA_TASKS | TWEET_TASKS
    assert not UNREGISTERED & set(list_tasks())
    assert [get_task(n).task_id for n in list_tasks()] == list(range(len(list_tasks())))
    with pytest.raises(KeyError, match="unknown task 'sst5'.*sst2.*trec"):
        get_task("sst5")
    assert {f: style_for_family(f) for f in FAMILY_STYLE} == {
        "t5": "t5", "roberta": "mlm", "bert": "mlm", "llama": "causal", "gemma3": "causal"}
    for name in list_tasks():
        spec = get_task(name)
        assert len(spec.verbalizers) == len(spec.labels) == len(spec.t5_verbalizers)
        assert len(set(spec.verbalizers)) == len(spec.verbalizers), name
        assert spec.seqio_names == tuple(f"prompt_jax_{name}_{s}" for s in spec.styles)
    assert get_task("mrpc").metric_names == ("accuracy", "f1")
    generation = {n for n in list_tasks() if not get_task(n).labels}
    assert generation == {"squad", "nq_open", "samsum"}
    assert all(get_task(n).scorer and get_task(n).max_new_tokens > 0 for n in generation)


@pytest.mark.parametrize("task", sorted(PAPER_TASKS | EXTRA_TASKS | TWEET_TASKS))
def test_every_task_reads_train_and_validation_locally_or_says_it_is_tfds_only(task):
    """No registered task fails at load with a confusing error: train and validation examples
    come from ../shared/data, or the task has a TFDS builder and the error says to use it."""
    spec = get_task(task)
    for split in ("train", "validation"):
        try:
            examples, _ = read_split(task, split)
        except FileNotFoundError as e:
            if task in LOCAL_EVAL_ONLY and split == "train":
                assert "train_text.txt" in str(e)
                continue
            assert task in TFDS_TRAIN and spec.tfds is not None, (task, split, str(e))
            assert f"on TFDS as '{spec.tfds.name}': set PROMPT_JAX_SOURCE=tfds" in str(e)
            continue
        assert task not in TFDS_TRAIN or split == "validation", (task, split)
        assert len(examples) > 0
        if spec.labels:
            assert len({e.label for e in examples}) == len(spec.labels)
        else:  # a generation task: every row has its gold texts
            assert all(e.references and all(e.references) for e in examples)


@pytest.mark.parametrize(("task", "split"), sorted(FILE_SPLITS))
def test_label_counts_match_the_files(task, split):
    assert label_counts(task, split) == FILE_SPLITS[(task, split)]


def test_independent_counts_of_the_raw_files():
    """The FILE_SPLITS table itself, recounted from the raw files without the readers."""
    with open(DATA / "glue_sst2/validation.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert (len(rows), sum(r["label"] == "1" for r in rows)) == (872, 444)
    with open(DATA / "msr_paraphrase/msr_paraphrase_test.txt", encoding="utf-8-sig") as f:
        assert collections.Counter(line.split("\t")[0] for line in f) == {"1": 1147, "0": 578}
    with open(DATA / "mnli/dev.jsonl", encoding="utf-8") as f:
        assert collections.Counter(json.loads(x)["label"] for x in f)["entailment"] == 3479
    with open(DATA / "ethics/justice/justice_test_hard.csv", encoding="utf-8") as f:
        assert collections.Counter(r["label"] for r in csv.DictReader(f)) == {"0": 1002,
                                                                              "1": 1050}
    with open(DATA / "ethics/deontology/deontology_train.csv", encoding="utf-8") as f:
        assert collections.Counter(r["label"] for r in csv.DictReader(f)) == {"0": 8374,
                                                                              "1": 9790}
    with gzip.open(DATA / "imdb/train.jsonl.gz", "rt", encoding="utf-8") as f:
        assert collections.Counter(json.loads(x)["label"] for x in f) == {0: 12500, 1: 12500}
    lines = (DATA / "semeval14_absa/Laptops_Train.xml.seg").read_text().splitlines()
    assert len(lines) // 3 == CARVED_TASKS["laptop"]


@pytest.mark.parametrize("task", sorted(CARVED_TASKS))
def test_carved_validation_is_deterministic_disjoint_and_complete(task):
    assert dict(get_task(task).local.splits)["validation"] == CARVED
    train, _ = read_split(task, "train")
    validation, report = read_split(task, "validation")
    n = CARVED_TASKS[task]
    assert len(train) + len(validation) == n
    assert len(validation) == min(round(n / 10), CARVE_MAX)
    assert ("carved_from_train", 1) in report.notes
    counts = collections.Counter((e.text_a, e.text_b) for e in train + validation)
    shared = {(e.text_a, e.text_b) for e in validation} & {(e.text_a, e.text_b) for e in train}
    assert all(counts[t] >= 2 for t in shared)  # only rows the file itself repeats
    np.testing.assert_array_equal(carve_indices(n), carve_indices(n))
    again, _ = read_split(task, "validation")
    assert again == validation
    # not a contiguous slice: IMDB's train file is sorted by label, the carved split is not,
    # and neither is its start (an eval_limit keeps the first rows).
    if task == "imdb":
        assert 900 < sum(e.label for e in validation) < 1100
        assert 200 < sum(e.label for e in validation[:500]) < 300


@pytest.mark.parametrize(("task", "split"), sorted(ABSENT))
def test_an_absent_file_names_the_path_looked_at(task, split):
    expected = DATA / ABSENT[(task, split)]
    assert local_paths(task, split)[0] == expected
    with pytest.raises(FileNotFoundError, match=f"task '{task}' split '{split}'.*{expected}"):
        read_split(task, split)


def test_data_root_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPT_JAX_DATA", str(tmp_path))
    assert data_root() == tmp_path
    with pytest.raises(FileNotFoundError, match="task 'sst2' split 'validation'.*"
                       + str(tmp_path / "glue_sst2" / "validation.tsv")):
        read_split("sst2", "validation")
    monkeypatch.setenv("PROMPT_JAX_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="looked at .*nowhere"):
        data_root()
    monkeypatch.delenv("PROMPT_JAX_DATA")
    monkeypatch.chdir(tmp_path)  # no ../shared/data from here: found beside the repository
    assert data_root() == Path(__file__).resolve().parents[2] / "shared" / "data"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_malformed_input_is_counted_per_split_never_mapped(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPT_JAX_DATA", str(tmp_path))
    _write(tmp_path / "glue_sst2/validation.tsv", b"sentence\tlabel\n"
           b"good one\t1\n"
           b"no label here\t\n"  # missing label
           b"a label that does not exist\t2\n"  # unknown label
           b" \t0\n"  # empty text
           b"bad \xff\xfe bytes\t1\n"  # bad UTF-8
           b"too\tmany\tcolumns\n"  # malformed
           b"fine again\t0\n")
    examples, report = read_split("sst2", "validation")
    assert [(e.text_a, e.label) for e in examples] == [("good one", 1), ("fine again", 0)]
    assert report.problem_counts == {"missing_label": 1, "unknown_label": 1, "empty_text": 1,
                                     "bad_utf8": 1, "malformed": 1}
    assert report.dropped == 5 and report.kept == 2
    assert report.summary().startswith("2 rows") and "1 unknown_label" in report.summary()
    assert any("validation.tsv:6: bad_utf8" in p for p in report.first_problems)

    # The MSR release: a BOM on the first line is removed and noted, not a problem.
    _write(tmp_path / "msr_paraphrase/msr_paraphrase_test.txt",
           "\ufeff1\t1\t2\tA man runs.\tA man is running.\n".encode()
           + b"0\t3\t4\tonly four columns\n"
           + b"x\t5\t6\tA.\tB.\n")
    examples, report = read_split("mrpc", "test")
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [
        ("A man runs.", "A man is running.", 1)]
    assert report.notes == (("bom", 1),)
    assert report.problem_counts == {"malformed": 1, "unknown_label": 1}

    _write(tmp_path / "superglue_cb/val.jsonl",
           b'{"premise": "p", "hypothesis": "h", "label": "neutral"}\n'
           b'{"premise": "p", "hypothesis": "h", "label": "Neutral"}\n'
           b'{"premise": "p", "hypothesis": "h"}\n'
           b'{"premise": "p", "hypoth\n'
           b'{"premise": "", "hypothesis": "h", "label": "entailment"}\n')
    examples, report = read_split("cb", "validation")
    assert [e.label for e in examples] == [1]
    assert report.problem_counts == {"unknown_label": 1, "missing_label": 1, "malformed": 1,
                                     "empty_text": 1}

    _write(tmp_path / "trec/test.txt", b"NUM:date When was it ?\nno colon here\nXYZ:foo Why ?\n")
    examples, report = read_split("trec", "test")
    assert [(e.text_a, e.label) for e in examples] == [("When was it ?", 5)]
    assert report.problem_counts == {"malformed": 1, "unknown_label": 1}

    _write(tmp_path / "semeval14_absa/Laptops_Test_Gold.xml.seg",
           b"the $T$ is great\nscreen\n1\nno placeholder\nkeys\n-1\nthe $T$ broke\nfan\n")
    examples, report = read_split("laptop", "test")
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [
        ("the screen is great", "screen", 2)]
    assert report.problem_counts == {"malformed": 2}



def test_the_eraser_release_format(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPT_JAX_DATA", str(tmp_path))
    _write(tmp_path / "movies/val.jsonl",
           b'{"annotation_id": "negR_000.txt", "classification": "NEG", "evidences": []}\n')
    _write(tmp_path / "movies/docs/negR_000.txt", b"a dull film .\n")
    (example,), _ = read_split("movie_rationales", "validation")
    assert (example.text_a, example.label) == ("a dull film .", 0)


def test_cli_lists_tasks_with_labels_sizes_and_offline_availability(capsys, tmp_path,
                                                                    monkeypatch):
    from prompt_jax.commands.cli import main

    main(["tasks"])
    out = capsys.readouterr().out
    table = {line.split()[0]: line.split() for line in out.splitlines()[3:] if line.strip()}
    assert set(list_tasks()) <= set(table)
    assert table["sst2"][2:5] == ["67349/872/-", "yes", "glue/sst2"]
    assert table["mnli"][2:5] == ["missing/9815/-", "eval", "only"]
    assert table["qqp"][2:4] == ["missing/missing/-", "no"]
    assert "PROMPT_JAX_SOURCE=tfds" in out
    assert "entailment->yes, neutral->maybe, contradiction->no" in out
    main(["tasks", "--json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["mrpc"]["local"] == {"train": 3668, "validation": 408, "test": 1725}
    assert rows["qqp"]["missing"]["train"] == [str(DATA / "glue_qqp/train.tsv")]
    # Malformed rows show up per split.
    (tmp_path / "superglue_cb").mkdir()
    (tmp_path / "superglue_cb/val.jsonl").write_bytes(
        b'{"premise": "p", "hypothesis": "h", "label": "neutral"}\n{"premise": "p"\n')
    monkeypatch.setenv("PROMPT_JAX_DATA", str(tmp_path))
    main(["tasks"])
    out = capsys.readouterr().out
    assert "dropped in validation: {'malformed': 1}" in out and "missing/1/-" in out


@pytest.mark.subprocess
def test_importing_the_tasks_package_imports_no_tensorflow_and_no_model_side():
    """The data side stands alone: no TensorFlow until a pipeline runs, and never flax, jax or
    the model side (prompt_jax.models, prompt_jax.scoring)."""
    code = ("import sys, prompt_jax.tasks as t; t.read_split('cb', 'validation'); "
            "t.get_task('sst2'); from prompt_jax.tasks import encoding, metrics, report; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'flax', 'jax', 'jaxlib') or m.startswith(('prompt_jax.models', "
            "'prompt_jax.scoring'))))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "[]", out
