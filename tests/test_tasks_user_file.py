"""A task from one's own JSONL / CSV / TSV file: reading, checks, batches, the CLI flags; and the
CLI printing our lines only (no TensorFlow start-up lines)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prompt_jax.commands import cli
from prompt_jax.tasks import (
    batches,
    candidates,
    catalog,
    compile_layout,
    define_file_task,
    get_task,
    list_tasks,
    read_split,
    render,
)
from tests.task_tokenizers import llama_tokenizer

REPO = Path(__file__).resolve().parent.parent


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _reviews(n: int) -> list[dict]:
    """Sorted by label, like many real files: all "neg" rows first."""
    return ([{"review": f"an awful, dull film number {i}", "stars": "neg"} for i in range(n)]
            + [{"review": f"a great, moving film number {i}", "stars": "pos"} for i in range(n)])


def test_a_jsonl_task_reads_and_batches_like_a_built_in_one(tmp_path, caplog):
    train = _jsonl(tmp_path / "reviews.jsonl", _reviews(30))
    with caplog.at_level("INFO"):
        spec = define_file_task("my_reviews", train, text_fields=["review"],
                                label_field="stars", verbalizers="terrible,great",
                                template="Review: {review}\nSentiment:")
    assert "labels inferred from" in caplog.text and "neg, pos" in caplog.text
    assert spec.labels == ("neg", "pos") and spec.verbalizers == ("terrible", "great")
    assert get_task("my_reviews") == spec and "my_reviews" in list_tasks()
    assert spec.template("causal") == "Review: {text_a}\nSentiment:"
    train_rows, _ = read_split("my_reviews", "train")
    validation, report = read_split("my_reviews", "validation")  # carved: 10% of 60
    assert len(train_rows) == 54 and len(validation) == 6
    assert ("carved_from_train", 1) in report.notes
    assert {e.label for e in validation} == {0, 1}  # a seeded permutation, not the file's end

    tok = llama_tokenizer()
    got = list(batches("my_reviews", "train", tok, "causal", 32, max_length=64, shuffle=False))
    real = np.concatenate([b["label"][b["weight"] > 0] for b in got])
    assert real.tolist() == [e.label for e in train_rows]
    b = got[0]
    layout = compile_layout("my_reviews", tok, "causal")
    decoded = tok.decode(b["inputs"][0][b["input_mask"][0] == 1].tolist())
    assert decoded == render(layout, train_rows[0].text_a)
    assert decoded.endswith("Review: an awful, dull film number 0\nSentiment:")
    ids, mask = candidates("my_reviews", tok, "causal")
    assert tok.decode(ids[1][mask[1] == 1].tolist()) == " great"
    np.testing.assert_array_equal(b["targets"][0], ids[b["label"][0]])

    # Defining the name again replaces the task (same task_id), and the pipeline follows.
    again = define_file_task("my_reviews", train, text_fields=["review"], label_field="stars",
                             labels=["pos", "neg"])
    assert again.task_id == spec.task_id and again.labels == ("pos", "neg")
    assert read_split("my_reviews", "train")[0][0].label == 1  # "neg" is now class 1
    (b,) = batches("my_reviews", "validation", tok, "causal", 8, max_length=64, shuffle=False)
    assert b["label"][:6].tolist() == [1 - e.label for e in validation]


def test_a_csv_pair_task_and_a_tsv_task(tmp_path):
    (tmp_path / "pairs.csv").write_text(
        'premise,hypothesis,gold\n"A man, tired, sleeps.",A man rests.,1\n'
        "A dog runs.,A cat sleeps.,0\nKids play.,Children play.,1\n", encoding="utf-8")
    (tmp_path / "pairs_dev.tsv").write_text(
        "premise\thypothesis\tgold\nIt rains.\tIt is wet.\t1\nIt is dry.\tIt pours.\t0\n",
        encoding="utf-8")
    spec = define_file_task("pairs", tmp_path / "pairs.csv", tmp_path / "pairs_dev.tsv",
                            text_fields=("premise", "hypothesis"), label_field="gold",
                            labels="0,1", verbalizers=["no", "yes"])
    assert spec.pair
    assert spec.template("causal") == "Premise: {text_a}\nHypothesis: {text_b}\nAnswer:"
    train, _ = read_split("pairs", "train")
    assert [(e.text_a, e.text_b, e.label) for e in train] == [
        ("A man, tired, sleeps.", "A man rests.", 1), ("A dog runs.", "A cat sleeps.", 0),
        ("Kids play.", "Children play.", 1)]
    tok = llama_tokenizer()
    (b,) = batches("pairs", "validation", tok, "causal", 4, max_length=64, shuffle=False)
    assert b["label"].tolist()[:2] == [1, 0] and b["weight"].tolist() == [1, 1, 0, 0]
    decoded = tok.decode(b["inputs"][1][b["input_mask"][1] == 1].tolist())
    assert decoded.endswith("Premise: It is dry.\nHypothesis: It pours.\nAnswer:")


def test_bad_task_files_get_clear_errors(tmp_path):
    good = _jsonl(tmp_path / "good.jsonl", [{"text": "a", "label": "x"},
                                            {"text": "b", "label": "y"}])
    with pytest.raises(FileNotFoundError, match="task file not found: .*nope.jsonl"):
        define_file_task("t", tmp_path / "nope.jsonl")
    (tmp_path / "data.txt").write_text("text\n")
    with pytest.raises(ValueError, match=r"unknown extension '.txt'.*\.jsonl, \.csv, \.tsv"):
        define_file_task("t", tmp_path / "data.txt")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="empty.jsonl: the file is empty"):
        define_file_task("t", tmp_path / "empty.jsonl")
    _jsonl(tmp_path / "gap.jsonl", [{"text": "a", "label": "x"}, {"txt": "b", "label": "y"}])
    with pytest.raises(ValueError, match="gap.jsonl: line 2 has no field 'text'"):
        define_file_task("t", tmp_path / "gap.jsonl")
    (tmp_path / "gap.csv").write_text("text,label\na,x\n,y\n")
    with pytest.raises(ValueError, match="gap.csv: row 2 has an empty 'text'"):
        define_file_task("t", tmp_path / "gap.csv")
    (tmp_path / "cols.csv").write_text("sentence,label\na,x\n")
    with pytest.raises(ValueError, match="header \\['sentence', 'label'\\] has no column 'text'"):
        define_file_task("t", tmp_path / "cols.csv")
    with pytest.raises(ValueError, match="example 2 has the label 'y', not one of the labels"):
        define_file_task("t", good, labels="x,z")
    with pytest.raises(ValueError, match="3 verbalizers .* for 2 labels"):
        define_file_task("t", good, verbalizers="a,b,c")
    with pytest.raises(ValueError, match="names \\{review\\}; it may name only the text fields"):
        define_file_task("t", good, template="Review: {review}")
    with pytest.raises(ValueError, match="'sst2' is a built-in task"):
        define_file_task("sst2", good)
    one = _jsonl(tmp_path / "one.jsonl", [{"text": "a", "label": "x"}])
    with pytest.raises(ValueError, match="needs two or more distinct"):
        define_file_task("t", one)
    assert "t" not in list_tasks()


def test_cli_trains_and_evaluates_a_task_from_a_file(tiny_llama, tmp_path, capsys):
    train = _jsonl(tmp_path / "movie_stars.jsonl", _reviews(24))
    dev = _jsonl(tmp_path / "dev.jsonl", _reviews(6))
    flags = ["--gin_file", "test/tiny.gin", "--model", str(tiny_llama),
             "--task_file", str(train), "--task_eval_file", str(dev), "--text_field", "review",
             "--label_field", "stars", "--verbalizers", "bad,good",
             "--template", "Review: {review}\nSentiment:"]
    out = tmp_path / "run"
    cli.main(["train", *flags, "--output_dir", str(out)])
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 6 and {"accuracy", "macro_f1"} <= set(summary["final"])
    sidecar = json.loads((out / "prompt.json").read_text())
    assert sidecar["task"] == "movie_stars"  # the file's stem
    assert sidecar["template"] == "Review: {text_a}\nSentiment:"
    assert get_task("movie_stars").verbalizers == ("bad", "good")

    cli.main(["eval", *flags, "--prompt", str(out / "prompt.npy")])
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["task"] == "movie_stars"
    assert metrics["accuracy"] == pytest.approx(summary["final"]["accuracy"])

    with pytest.raises(SystemExit):
        cli.main(["eval", *flags[:4], "--task_file", str(tmp_path / "missing.jsonl")])
    assert "task file not found" in capsys.readouterr().err


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


TF_LINES = ("oneDNN", "cuInit", "TF_ENABLE", "tensorflow", "cuda drivers", "absl::")


@pytest.mark.subprocess
def test_the_cli_prints_our_lines_only():
    done = _cli("-m", "prompt_jax", "tasks")
    assert done.returncode == 0 and "sst2" in done.stdout
    assert not [x for x in done.stderr.splitlines() if any(t in x for t in TF_LINES)], done.stderr
    # A command that runs pipelines imports TensorFlow: quietly, and our error still shows.
    done = _cli("-m", "prompt_jax", "eval", "--task", "nope", "--model", "x")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "prompt-jax eval: error: \"unknown task 'nope'; known tasks: "
        + ", ".join(spec.name for spec in catalog.TASKS) + '"']
    # TensorFlow itself, imported the way the CLI does, then run: nothing on stderr.
    done = _cli("-c", "from prompt_jax.commands import cli; cli.import_tensorflow_quietly(); "
                      "import seqio, tensorflow as tf; print(int(tf.constant(1) + 1))")
    assert done.stdout.strip() == "2" and done.stderr.strip() == "", done.stderr
