"""A classification task from one's own JSONL, CSV or TSV file, without code.

`define_file_task` reads and checks the files, then registers a `TaskSpec` that the rest of the
library uses like a built-in task (`batches`, `candidates`, `run`, the CLI's `--task_file`).
No TensorFlow here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import string
from collections.abc import Sequence
from pathlib import Path

from prompt_jax.tasks import catalog
from prompt_jax.tasks.readers import BOM, READERS, read_csv, read_jsonl, read_tsv
from prompt_jax.tasks.registry import CARVED, LocalSource, TaskSpec, register

log = logging.getLogger(__name__)

FAMILY = "file"
FILE_READER = "file"  # the LocalSource format of a file task
FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv"}
BUILT_IN = frozenset(spec.name for spec in catalog.TASKS)
# name -> the definition of each file task defined in this process, as `task_spec` stores it
DEFINITIONS: dict[str, dict] = {}


def sha256(path: str | Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_format(path: str | Path) -> str:
    """The reader of a file, from its extension: "jsonl", "csv" or "tsv".

    Raises:
      ValueError: any other extension.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unknown extension {suffix!r}; a task file is one of "
                         f"{', '.join(FORMATS)}")
    return FORMATS[suffix]


def read_rows(path: str | Path, fields: Sequence[str]) -> list[dict[str, str]]:
    """Every row of a task file, as {field: text} for `fields`, strictly checked.

    JSONL: one object per line (blank lines skipped); CSV: a header row, quoted fields; TSV: a
    header row, tab-separated, never quoted. Non-string JSON values (e.g. integer labels) are
    turned into strings.

    Raises:
      FileNotFoundError: no such file.
      ValueError: unknown extension, an empty file, a row that cannot be parsed, a missing
        field or an empty value (each naming the file and row: the line for JSONL, the data row
        after the header for CSV and TSV).
    """
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file not found: {path}")
    text = path.read_text(encoding="utf-8").removeprefix(BOM)
    if not text.strip():
        raise ValueError(f"{path}: the file is empty")
    if fmt == "jsonl":
        numbered = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {lineno} is not JSON ({e.msg})") from None
            except RecursionError:
                raise ValueError(f"{path}: line {lineno} is JSON nested too deep") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}: line {lineno} is not a JSON object")
            numbered.append((f"line {lineno}", row))
    else:
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if fmt == "tsv" else ",",
                                quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL)
        numbered = []
        try:
            header = reader.fieldnames or []
            missing = [f for f in fields if f not in header]
            if missing:
                raise ValueError(f"{path}: the header {header} has no column {missing[0]!r}")
            for i, row in enumerate(reader, 1):
                if None in row or None in row.values():
                    raise ValueError(f"{path}: row {i} has "
                                     f"{len(row) + len(row.get(None, [])) - 1} columns where "
                                     f"the header has {len(header)}")
                numbered.append((f"row {i}", row))
        except csv.Error as e:  # e.g. a field over csv's size limit
            raise ValueError(f"{path}: after {len(numbered)} rows: not readable as "
                             f"{fmt.upper()}: {e}") from None
    if not numbered:
        raise ValueError(f"{path}: the file has no rows")
    rows = []
    for where, row in numbered:
        out = {}
        for field in fields:
            if field not in row or row[field] is None:
                raise ValueError(f"{path}: {where} has no field {field!r} "
                                 f"(it has {sorted(row)})")
            value = str(row[field])  # as the registry's readers write JSON numbers
            if not value.strip():
                raise ValueError(f"{path}: {where} has an empty {field!r}")
            out[field] = value.strip()
        rows.append(out)
    return rows


def _template(template: str, text_fields: Sequence[str]) -> str:
    """The template with the text fields' own names ({review}) written as {text_a} / {text_b}.

    Raises:
      ValueError: it names a field that is not a text field.
    """
    names = {name: slot for name, slot in zip(text_fields, ("text_a", "text_b"), strict=False)}
    names.update({slot: slot for slot in names.values()})
    out = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if field is None:
            continue
        if field not in names or spec or conversion:
            raise ValueError(f"template {template!r} names {{{field}}}; it may name only the "
                             f"text fields {list(text_fields)} (or text_a / text_b)")
        out.append("{" + names[field] + "}")
    return "".join(out)


def default_template(text_fields: Sequence[str]) -> str:
    """`Text: {text_a}\\nAnswer:`, with each text field's name as its heading."""
    lines = [f"{field.replace('_', ' ').capitalize()}: {{{slot}}}"
             for field, slot in zip(text_fields, ("text_a", "text_b"), strict=False)]
    return "\n".join(lines) + "\nAnswer:"


def _split_list(value: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(v).strip() for v in items)


def define_file_task(name: str, train: str | Path | None = None,
                     validation: str | Path | None = None, test: str | Path | None = None, *,
                     text_fields: Sequence[str] = ("text",), label_field: str = "label",
                     labels: Sequence[str] | str | None = None,
                     verbalizers: Sequence[str] | str | None = None,
                     template: str | None = None, register_task: bool = True) -> TaskSpec:
    """A classification task from JSONL / CSV / TSV files, registered under `name`.

    Labels are the label field's values as written in the files (JSON numbers as their text,
    e.g. "0"); class i is `labels[i]`. Without `labels`, they are the train file's distinct
    values, sorted (said in a log line). Without a validation file, validation is carved from
    train (a seeded 10% share, as for the built-in tasks). Defining a name again replaces the
    earlier file task of that name.

    Args:
      name: the task name (must not be a built-in task's).
      train: the train file (may be None when `labels` are given: an eval/infer-only task).
      validation: the validation file; None: carved from train.
      test: a test file, optional.
      text_fields: one text field, or two for a pair task (premise / hypothesis).
      label_field: the field holding each row's label.
      labels: the label values in class order (a list or "a,b"); None: inferred from train.
      verbalizers: the word(s) the model scores for each label; default the labels themselves.
      template: the prompt for t5 and causal models, over the text fields by name (e.g.
        "Review: {review}\\nSentiment:") or as {text_a} / {text_b}; default
        `default_template(text_fields)`. Masked LMs use their tokenizer's own layout.
      register_task: add it to the registry (False: only return the spec).

    Returns:
      The registered TaskSpec (family "file").

    Raises:
      FileNotFoundError: a file is absent.
      ValueError: unknown extension, an empty file, a row lacking a field, a label not in
        `labels`, fewer than two labels, verbalizers that do not match the labels, a bad
        template, or `name` is a built-in task.
    """
    if name in BUILT_IN:
        raise ValueError(f"task {name!r} is a built-in task; give the file task another name")
    text_fields = tuple(text_fields)
    if len(text_fields) not in (1, 2) or len(set(text_fields)) != len(text_fields):
        raise ValueError(f"give one text field, or two for a pair task; got {list(text_fields)}")
    if label_field in text_fields:
        raise ValueError(f"the label field {label_field!r} is also a text field")
    files = {split: Path(path).resolve() for split, path in
             (("train", train), ("validation", validation), ("test", test)) if path}
    labels = _split_list(labels)
    if not files or (labels is None and "train" not in files):
        raise ValueError("a file task needs a train file, or its labels and an evaluation file")
    fields = (*text_fields, label_field)
    rows = {split: read_rows(path, fields) for split, path in files.items()}
    if labels is None:
        labels = tuple(sorted({row[label_field] for row in rows["train"]}))
        log.info("task %r: labels inferred from %s: %s", name, files["train"], ", ".join(labels))
    if len(labels) < 2 or len(set(labels)) != len(labels) or not all(labels):
        raise ValueError(f"task {name!r} needs two or more distinct, non-empty labels; got "
                         f"{list(labels)}")
    for split, split_rows in rows.items():
        for i, row in enumerate(split_rows, 1):
            if row[label_field] not in labels:
                raise ValueError(f"{files[split]}: example {i} has the label "
                                 f"{row[label_field]!r}, not one of the labels {list(labels)}")
    verbalizers = _split_list(verbalizers) or labels
    if len(verbalizers) != len(labels):
        raise ValueError(f"{len(verbalizers)} verbalizers {list(verbalizers)} for "
                         f"{len(labels)} labels {list(labels)}")
    template = _template(template, text_fields) if template else default_template(text_fields)
    splits = [(split, (str(path),)) for split, path in files.items()]
    if "train" in files and "validation" not in files:
        splits.insert(1, ("validation", CARVED))
    options = (("text_a", text_fields[0]), ("label", label_field))
    if len(text_fields) == 2:
        options += (("text_b", text_fields[1]),)
    spec = TaskSpec(
        name=name, family=FAMILY, labels=labels, verbalizers=verbalizers,
        t5_verbalizers=verbalizers, metric_names=("accuracy",),
        templates=(("t5", template), ("causal", template)), pair=len(text_fields) == 2,
        label_aliases=tuple((label, i) for i, label in enumerate(labels)),
        local=LocalSource(FILE_READER, tuple(splits), options), tfds=None,
        description=f"file task ({', '.join(map(str, files.values()))})")
    if not register_task:
        return spec
    DEFINITIONS[name] = {
        "name": name, "files": {split: {"path": str(path), "sha256": sha256(path)}
                                for split, path in files.items()},
        "text_fields": list(text_fields), "label_field": label_field, "labels": list(labels),
        "verbalizers": list(verbalizers), "template": template}
    return register(spec, replace=True)


def read_task_file(path: Path, notes, *, text_a: str, label: str, text_b: str | None = None):
    """The registry's reader of a file task's split: by extension (`readers.READERS` entry)."""
    reader = {"jsonl": read_jsonl, "csv": read_csv, "tsv": read_tsv}[file_format(path)]
    yield from reader(path, notes, text_a=text_a, text_b=text_b, label=label)


READERS[FILE_READER] = read_task_file
