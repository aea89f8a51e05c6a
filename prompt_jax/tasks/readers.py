"""Readers for the local copies of the datasets, in the formats their public releases use.

Pure Python (no TensorFlow): every reader yields raw records (dicts of strings) or `Problem`s
for lines it cannot parse. `read_file` turns raw records into labelled examples with a
`ReadReport` that counts each kind of malformed input, so nothing is silently dropped or mapped
to a wrong label.

A raw record has the keys `text_a`, `text_b` (may be empty), `label` (the label string as
written in the file, or None for generation tasks) and `references` (reference outputs of a
generation task; empty for classification).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import itertools
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

BOM = "\ufeff"

# Kinds of malformed input a reader counts (the keys of `ReadReport.problems`).
PROBLEM_KINDS = ("bad_utf8", "malformed", "missing_label", "unknown_label", "empty_text")


@dataclasses.dataclass(frozen=True)
class Problem:
    """A line (or record) that could not be read: `kind` is one of PROBLEM_KINDS."""

    kind: str
    where: str  # "path:line"


@dataclasses.dataclass(frozen=True)
class ReadReport:
    """What reading one split found: rows kept, problems by kind, and notes (e.g. a BOM)."""

    paths: tuple[str, ...]
    kept: int
    problems: tuple[tuple[str, int], ...] = ()
    notes: tuple[tuple[str, int], ...] = ()
    first_problems: tuple[str, ...] = ()  # up to 5 "path:line: kind" strings, for messages

    @property
    def problem_counts(self) -> dict[str, int]:
        return dict(self.problems)

    @property
    def dropped(self) -> int:
        return sum(n for _, n in self.problems)

    def summary(self) -> str:
        parts = [f"{self.kept} rows"]
        parts += [f"{n} {kind}" for kind, n in self.problems]
        parts += [f"note: {kind} x{n}" for kind, n in self.notes]
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class Example:
    """One labelled example: `label` is the class index (-1 for generation tasks)."""

    text_a: str
    text_b: str
    label: int
    references: tuple[str, ...] = ()
    group: str = ""  # rows of one group (a SQuAD article) stay on one side of a carved split

    @property
    def target(self) -> str:
        return self.references[0] if self.references else ""


def data_threads() -> int:
    """Threads TensorFlow may use for the data pipelines: one per 8 cores (at least one), so
    that they do not take the cores XLA's steps run on (the training loop runs the pipeline
    ahead of the step on a background thread, and it needs little once a split is
    tokenized)."""
    return max(1, len(os.sched_getaffinity(0)) // 8)


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The folder of local datasets.

    `explicit`, else $PROMPT_JAX_DATA, else `../shared/data` relative to the working directory,
    else `../shared/data` relative to the repository root (the first that exists).

    Raises:
      FileNotFoundError: naming every folder looked at.
    """
    if explicit is not None:
        looked = [Path(explicit)]
    elif os.environ.get("PROMPT_JAX_DATA"):
        looked = [Path(os.environ["PROMPT_JAX_DATA"])]
    else:
        looked = [Path.cwd().parent / "shared" / "data",
                  Path(__file__).resolve().parents[3] / "shared" / "data"]
    for folder in looked:
        if folder.is_dir():
            return folder
    raise FileNotFoundError("no data folder found; looked at " + ", ".join(map(str, looked))
                            + " (set PROMPT_JAX_DATA or pass --data)")


def _lines(path: Path, notes: Counter) -> Iterator[tuple[int, str | Problem]]:
    """(line number, decoded line or Problem) for each line; a leading BOM is removed and noted."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for lineno, line in enumerate(lines, 1):
        try:
            text = line.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            yield lineno, Problem("bad_utf8", f"{path}:{lineno}")
            continue
        if lineno == 1 and text.startswith(BOM):
            notes["bom"] += 1
            text = text[len(BOM):]
        yield lineno, text


def _record(text_a: str, text_b: str = "", label: str | None = None,
            references: tuple[str, ...] = (), group: str = "") -> dict:
    return {"text_a": text_a.strip(), "text_b": text_b.strip(), "label": label,
            "references": tuple(r.strip() for r in references), "group": group}


RawRows = Iterator["dict | Problem"]


def read_tsv(path: Path, notes: Counter, *, text_a: str, text_b: str | None = None,
             label: str | None = None) -> RawRows:
    """A tab-separated file with a header row (GLUE); fields are never quoted."""
    header = None
    for lineno, line in _lines(path, notes):
        if isinstance(line, Problem):
            yield line
            continue
        cols = line.split("\t")
        if header is None:
            header = cols
            missing = [c for c in (text_a, text_b, label) if c and c not in header]
            if missing:
                raise ValueError(f"{path}: header {header} lacks columns {missing}")
            continue
        if len(cols) != len(header):
            yield Problem("malformed", f"{path}:{lineno}")
            continue
        row = dict(zip(header, cols, strict=True))
        yield _record(row[text_a], row[text_b] if text_b else "", row[label] if label else None)


def read_msr(path: Path, notes: Counter) -> RawRows:
    """The MSR paraphrase release: `quality, id1, id2, string1, string2`, no header."""
    for lineno, line in _lines(path, notes):
        if isinstance(line, Problem):
            yield line
            continue
        cols = line.split("\t")
        if len(cols) != 5:
            yield Problem("malformed", f"{path}:{lineno}")
            continue
        yield _record(cols[3], cols[4], cols[0])


def read_jsonl(path: Path, notes: Counter, *, text_a: str, text_b: str | None = None,
               label: str | None = None, references: str | None = None) -> RawRows:
    """One JSON object per line; `references` names a string or list-of-strings field."""
    for lineno, line in _lines(path, notes):
        if isinstance(line, Problem):
            yield line
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            yield Problem("malformed", f"{path}:{lineno}")
            continue
        if not isinstance(row, dict) or not isinstance(row.get(text_a), str):
            yield Problem("malformed", f"{path}:{lineno}")
            continue
        value = row.get(label) if label else None
        refs = row.get(references, ()) if references else ()
        refs = (refs,) if isinstance(refs, str) else tuple(str(r) for r in refs)
        yield _record(row[text_a], str(row.get(text_b) or "") if text_b else "",
                      None if value is None else str(value), refs)


def read_csv(path: Path, notes: Counter, *, text_a: str, text_b: str | None = None,
             label: str | None = None, references: str | None = None) -> RawRows:
    """A comma-separated file with a header row and quoted fields (AG News, ETHICS; SAMSum,
    whose `references` column is the summary and whose fields hold line breaks)."""
    good: list[str] = []
    for _, line in _lines(path, notes):
        if isinstance(line, Problem):
            yield line
        else:
            good.append(line)
    reader = csv.DictReader(line + "\n" for line in good)  # a quoted field keeps its breaks
    missing = [c for c in (text_a, text_b, label, references)
               if c and c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: header {reader.fieldnames} lacks columns {missing}")
    for row in reader:
        if None in row or any(v is None for v in row.values()):
            yield Problem("malformed", f"{path}:{reader.line_num}")
            continue
        yield _record(row[text_a], row[text_b] if text_b else "", row[label] if label else None,
                      (row[references],) if references else ())


def read_squad(path: Path, notes: Counter) -> RawRows:
    """SQuAD v1.1's official nested JSON (articles -> paragraphs -> qas): the context as
    text_a, the question as text_b, every gold answer's text as a reference, the article's
    title as the group."""
    try:
        articles = json.loads(path.read_bytes().decode("utf-8").removeprefix(BOM))["data"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not SQuAD's JSON layout ({type(e).__name__}: {e})") from None
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article.get("paragraphs", ())):
            for q, qa in enumerate(paragraph.get("qas", ())):
                answers = tuple(x.get("text", "") for x in qa.get("answers", ())
                                if isinstance(x, dict))
                if not isinstance(paragraph.get("context"), str) or not isinstance(
                        qa.get("question"), str):
                    yield Problem("malformed", f"{path}:article {a} paragraph {p} qa {q}")
                    continue
                yield _record(paragraph["context"], qa["question"], None, answers,
                              str(article.get("title", a)))


def read_prefixed(path: Path, notes: Counter, *, sep: str) -> RawRows:
    """`LABEL<sep>text` per line: TREC (`DESC:manner How ...`, coarse label kept) and the
    SST-2 sentence files (`1 text`)."""
    for lineno, line in _lines(path, notes):
        if isinstance(line, Problem):
            yield line
            continue
        head, found, rest = line.partition(sep)
        if not found:
            yield Problem("malformed", f"{path}:{lineno}")
            continue
        if sep == ":":  # TREC: "COARSE:fine question"
            _, _, rest = rest.partition(" ")
        yield _record(rest, "", head.strip())


def read_absa(path: Path, notes: Counter) -> RawRows:
    """SemEval-2014 `.xml.seg`: sentence with `$T$`, aspect term, polarity (-1/0/1)."""
    lines = list(_lines(path, notes))
    for start in range(0, len(lines), 3):
        group = lines[start:start + 3]
        where = f"{path}:{group[0][0]}"
        if any(isinstance(text, Problem) for _, text in group):
            yield Problem("bad_utf8", where)
            continue
        if len(group) != 3 or "$T$" not in group[0][1]:
            yield Problem("malformed", where)
            continue
        (_, sentence), (_, aspect), (_, polarity) = group
        yield _record(sentence.replace("$T$", aspect.strip()), aspect, polarity.strip())


def read_eraser(path: Path, notes: Counter) -> RawRows:
    """ERASER movie rationales: `<split>.jsonl` rows name a document in `docs/`."""
    docs = path.parent / "docs"
    for row in read_jsonl(path, notes, text_a="annotation_id", label="classification"):
        if isinstance(row, Problem):
            yield row
            continue
        doc = docs / row["text_a"]
        if not doc.is_file():
            raise FileNotFoundError(f"movie rationales document not found: {doc} (named in {path})")
        yield _record(doc.read_text(encoding="utf-8"), "", row["label"])


def read_lines(text_path: Path, labels_path: Path, notes: Counter) -> RawRows:
    """Two line-aligned files, one text and one label per line (TweetEval's
    `<split>_text.txt` and `<split>_labels.txt`)."""
    texts, labels = list(_lines(text_path, notes)), list(_lines(labels_path, notes))
    if len(texts) != len(labels):
        raise ValueError(f"{text_path} has {len(texts)} lines but {labels_path} has "
                         f"{len(labels)}: the two files must be line-aligned")
    for (lineno, text), (_, label) in zip(texts, labels, strict=True):
        if isinstance(text, Problem) or isinstance(label, Problem):
            yield Problem("bad_utf8", f"{text_path}:{lineno}")
            continue
        yield _record(text, "", label.strip())


READERS: dict[str, Callable[..., RawRows]] = {
    "tsv": read_tsv, "msr": read_msr, "jsonl": read_jsonl, "csv": read_csv,
    "prefixed": read_prefixed, "absa": read_absa, "eraser": read_eraser, "lines": read_lines,
    "squad": read_squad,
}
# Readers of one file each: a split listing several such files reads them in order.
ONE_FILE_EACH = frozenset({"tsv", "jsonl", "csv", "squad"})


def read_file(fmt: str, paths: tuple[Path, ...], label_aliases: Mapping[str, int] | None,
              options: Mapping[str, object] | None = None) -> tuple[list[Example], ReadReport]:
    """Reads one split into examples, counting every row that cannot be used.

    Args:
      fmt: a key of READERS.
      paths: the file(s) the reader takes.
      label_aliases: label string as written -> class index; None for generation tasks.
      options: keyword arguments of the reader (column names).

    Raises:
      FileNotFoundError: a file is absent (the message names its path).
    """
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"data file not found: {p}")
    notes: Counter = Counter()
    problems: Counter = Counter()
    first: list[str] = []
    examples: list[Example] = []

    def bad(kind: str, where: str) -> None:
        problems[kind] += 1
        if len(first) < 5:
            first.append(f"{where}: {kind}")

    rows = (itertools.chain.from_iterable(READERS[fmt](p, notes, **(options or {}))
                                          for p in paths)
            if fmt in ONE_FILE_EACH else READERS[fmt](*paths, notes, **(options or {})))
    for row in rows:
        if isinstance(row, Problem):
            bad(row.kind, row.where)
            continue
        where = f"{paths[0]}:row {len(examples) + sum(problems.values()) + 1}"
        if not row["text_a"] or (label_aliases is None and not any(row["references"])):
            bad("empty_text", where)
            continue
        if label_aliases is None:
            examples.append(Example(row["text_a"], row["text_b"], -1, row["references"],
                                    row.get("group", "")))
            continue
        if row["label"] is None or row["label"].strip() == "":
            bad("missing_label", where)
            continue
        if row["label"].strip() not in label_aliases:
            bad("unknown_label", where)
            continue
        examples.append(Example(row["text_a"], row["text_b"], label_aliases[row["label"].strip()]))
    report = ReadReport(tuple(map(str, paths)), len(examples), tuple(sorted(problems.items())),
                        tuple(sorted(notes.items())), tuple(first))
    return examples, report
