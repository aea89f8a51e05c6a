"""`TaskSpec`: what a task is (labels, verbalizers, templates, metrics, where its data lives),
the registry of specs, and reading a split from local files. No TensorFlow here."""

from __future__ import annotations

import dataclasses
import functools
import os
import string
from pathlib import Path

import numpy as np

from prompt_jax.tasks.readers import Example, ReadReport, data_root, read_file

STYLES = ("t5", "mlm", "causal")
FAMILY_STYLE = {"t5": "t5", "roberta": "mlm", "bert": "mlm", "llama": "causal", "gemma3": "causal"}
SPLITS = ("train", "validation", "test")

# A validation split carved from train: this share of the rows, at most this many, chosen by a
# permutation with this seed (files are often sorted by label, so no contiguous slice).
CARVE_FRACTION = 0.1
CARVE_MAX = 2000
CARVE_SEED = 20220101
CARVED = "carved from train"
# Where the rows come in groups (SQuAD's articles: questions on one paragraph share its text),
# a carved validation split takes whole groups: this share of them, by a seeded permutation.
GROUP_CARVE_FRACTION = 0.2

# The default seed of the sample a `limit` (an eval_limit) takes of a split.
LIMIT_SEED = 0


class TfdsUnavailableError(RuntimeError):
    """A TFDS dataset is not prepared locally and cannot be downloaded (offline)."""


@dataclasses.dataclass(frozen=True)
class LocalSource:
    """Where a task's splits live under the data root, and how to read them.

    `splits` maps a split name to its file(s) relative to the data root; CARVED for a
    validation split taken from train. `options` are the reader's keyword arguments.
    """

    fmt: str
    splits: tuple[tuple[str, tuple[str, ...] | str], ...]
    options: tuple[tuple[str, str], ...] = ()

    def files(self, split: str) -> tuple[str, ...] | str:
        for name, files in self.splits:
            if name == split:
                return files
        raise KeyError(f"no local {split!r} split; local splits: {[s for s, _ in self.splits]}")


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """A TensorFlow Datasets builder and how its features map onto the task's fields.

    `splits` maps our split names to TFDS split strings (slices allowed); `label_names` are the
    builder's ClassLabel names in index order (each must be a key of the task's label aliases).
    """

    name: str
    splits: tuple[tuple[str, str], ...]
    text_a: str
    text_b: str | None = None
    label: str | None = None
    label_names: tuple[str, ...] = ()
    references: str | None = None


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One registered task.

    Attributes:
      name: registry name (e.g. "sst2").
      family: "sentiment", "nli", "ethics", "paraphrase", "qa", "summarization", "topic" or
        "question".
      labels: class names in index order; empty for generation tasks.
      verbalizers: one word (or words) per label, scored by the mlm and causal styles.
      t5_verbalizers: the label words of the t5 text-to-text format (T5's GLUE names).
      metric_names: what `metrics.compute` reports for this task.
      templates: (style, format string over {text_a} / {text_b}); mlm uses the tokenizer's own
        `<cls> <mask> text_a <sep> [text_b <sep>]` layout and has no entry.
      pair: whether examples have a second text (text_b).
      label_aliases: label strings as written in the files (and TFDS names) -> class index.
      local: the local files; tfds: the TFDS builder (None where TFDS has none).
      task_id: a stable integer (registry order), carried by every example of the task.
      description: one line on the data and its splits.
      scorer: a generation task's metric (a key of `metrics.GENERATION_METRICS`: "squad",
        "nq_open", "rouge"); "" for classification.
      max_new_tokens: a generation task's most new tokens, decoded and trained on.
      stop: a generation task's stop string (the causal style ends an answer at it); "" = none.
    """

    name: str
    family: str
    labels: tuple[str, ...]
    verbalizers: tuple[str, ...]
    t5_verbalizers: tuple[str, ...]
    metric_names: tuple[str, ...]
    templates: tuple[tuple[str, str], ...]
    pair: bool
    label_aliases: tuple[tuple[str, int], ...]
    local: LocalSource
    tfds: TfdsSource | None
    task_id: int = -1
    description: str = ""
    scorer: str = ""
    max_new_tokens: int = 0
    stop: str = ""

    @property
    def is_generation(self) -> bool:
        return not self.labels

    @property
    def primary_metric(self) -> str:
        """The metric a run keeps its best checkpoint by and a transfer cell reports: the first
        of `metric_names` (accuracy for classification, F1 for SQuAD, EM for NQ-Open,
        ROUGE-L for SAMSum)."""
        return self.metric_names[0]

    @property
    def styles(self) -> tuple[str, ...]:
        return ("t5", "causal") if self.is_generation else STYLES

    @property
    def seqio_names(self) -> tuple[str, ...]:
        """Base seqio task names, one per supported style; the registered name appends
        `:<source>:<vocabulary>` (see `prompt_jax.tasks.pipeline.seqio_task`)."""
        return tuple(self.seqio_name(s) for s in self.styles)

    def seqio_name(self, style: str) -> str:
        self.check_style(style)
        return f"prompt_jax_{self.name}_{style}"

    def check_style(self, style: str) -> None:
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; styles: {STYLES} "
                             f"(model family -> style: {FAMILY_STYLE})")
        if style not in self.styles:
            raise ValueError(f"task {self.name!r} is a generation task; style {style!r} "
                             f"supports classification tasks only (use one of {self.styles})")

    def verbalizers_for(self, style: str) -> tuple[str, ...]:
        self.check_style(style)
        return self.t5_verbalizers if style == "t5" else self.verbalizers

    def template(self, style: str) -> str | None:
        self.check_style(style)
        return dict(self.templates).get(style)

    @property
    def aliases(self) -> dict[str, int]:
        return dict(self.label_aliases)

    def __post_init__(self):
        if len(self.verbalizers) != len(self.labels) or len(self.t5_verbalizers) != len(
                self.labels):
            raise ValueError(f"{self.name}: {len(self.labels)} labels but verbalizers "
                             f"{self.verbalizers} / {self.t5_verbalizers}")
        if self.labels and set(self.aliases.values()) != set(range(len(self.labels))):
            raise ValueError(f"{self.name}: label aliases {self.aliases} do not cover "
                             f"{len(self.labels)} classes")
        if not self.labels and (not self.scorer or self.max_new_tokens <= 0):
            raise ValueError(f"{self.name}: a generation task (no labels) needs a scorer and "
                             f"a positive max_new_tokens")


_REGISTRY: dict[str, TaskSpec] = {}


def register(spec: TaskSpec, replace: bool = False) -> TaskSpec:
    """Adds a spec (its task_id becomes its registry position).

    Args:
      spec: the task.
      replace: replace a registered task of the same name (keeping its task_id) rather than
        fail.

    Raises:
      ValueError: the name is taken and `replace` is False.
    """
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"task {spec.name!r} is already registered")
    task_id = _REGISTRY[spec.name].task_id if spec.name in _REGISTRY else len(_REGISTRY)
    spec = dataclasses.replace(spec, task_id=task_id)
    _REGISTRY[spec.name] = spec
    return spec


def list_tasks() -> tuple[str, ...]:
    """Names of all registered tasks, in task_id order."""
    return tuple(_REGISTRY)


def get_task(task: str | TaskSpec) -> TaskSpec:
    """The spec of a registered task (a TaskSpec passes through).

    Raises:
      KeyError: the name is not registered (the message lists the known names).
    """
    if isinstance(task, TaskSpec):
        return task
    try:
        return _REGISTRY[task]
    except KeyError:
        raise KeyError(f"unknown task {task!r}; known tasks: {', '.join(_REGISTRY)}") from None


def with_template(task: str | TaskSpec, style: str, template: str) -> TaskSpec:
    """The task with its `style` template replaced (a hand-written prompt of one's own).

    Raises:
      ValueError: the template lacks a field the task needs, names an unknown one, or the style
        takes no template (mlm uses the tokenizer's own layout).
    """
    spec = get_task(task)
    spec.check_style(style)
    if style == "mlm":
        raise ValueError("the mlm style has no template (it is the tokenizer's own layout)")
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    needed = {"text_a", "text_b"} if spec.pair else {"text_a"}
    if fields != needed:
        raise ValueError(f"template {template!r} of task {spec.name!r} must use exactly the "
                         f"fields {sorted(needed)}, got {sorted(fields)}")
    others = tuple((s, t) for s, t in spec.templates if s != style)
    return dataclasses.replace(spec, templates=others + ((style, template),))


def task_by_id(task_id: int) -> TaskSpec:
    return get_task(list_tasks()[task_id])


def style_for_family(family: str) -> str:
    """The template style of a backbone family (t5 -> t5, roberta/bert -> mlm, llama and
    gemma3 -> causal)."""
    try:
        return FAMILY_STYLE[family]
    except KeyError:
        raise KeyError(f"unknown model family {family!r}; known: {sorted(FAMILY_STYLE)}") from None


def local_splits(task: str | TaskSpec) -> tuple[str, ...]:
    return tuple(s for s, _ in get_task(task).local.splits)


def local_paths(task: str | TaskSpec, split: str, root: str | os.PathLike | None = None
                ) -> tuple[Path, ...]:
    """The files a local split is read from (for a carved validation split: the train files)."""
    spec = get_task(task)
    files = spec.local.files(split)
    if files == CARVED:
        files = spec.local.files("train")
    if all(Path(f).is_absolute() for f in files):  # a file task's own files
        return tuple(Path(f) for f in files)
    base = data_root(root)
    return tuple(base / f for f in files)


def carve_indices(n: int) -> np.ndarray:
    """Row indices (of n train rows) that form a carved validation split, in the order the
    split lists them: a seeded permutation's, so that any prefix of the split (an `eval_limit`)
    is a random sample too, not the start of a file sorted by label."""
    size = min(round(n * CARVE_FRACTION), CARVE_MAX)
    return np.random.default_rng(CARVE_SEED).permutation(n)[:size]


def group_carve_indices(groups: list[str]) -> np.ndarray:
    """Row indices that form a carved validation split of grouped rows: every row of a seeded
    `GROUP_CARVE_FRACTION` of the groups (at least one), in file order, so that no group (a
    SQuAD article) has rows on both sides."""
    names = list(dict.fromkeys(groups))
    size = max(1, round(len(names) * GROUP_CARVE_FRACTION))
    chosen = {names[i] for i in np.random.default_rng(CARVE_SEED).permutation(len(names))[:size]}
    return np.asarray([i for i, g in enumerate(groups) if g in chosen], np.int64)


def sample_rows(n: int, limit: int | None, seed: int = LIMIT_SEED) -> np.ndarray | None:
    """The rows (of n) that `limit` keeps: a seeded random sample, not the file's first rows.

    Files are often sorted by label (the first 500 reviews of a sentiment file can all be
    negative), so a limit takes the first `limit` rows of a permutation of all n drawn from
    `seed`, returned in file order (ascending). The same (n, limit, seed) always gives the
    same rows.

    Returns:
      Ascending row indices, or None when there is no limit or it covers every row.

    Raises:
      ValueError: limit is not positive.
    """
    if limit is None or limit >= n:
        return None
    if limit <= 0:
        raise ValueError(f"limit must be positive (None for every row), got {limit}")
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def read_split(task: str | TaskSpec, split: str, root: str | os.PathLike | None = None
               ) -> tuple[list[Example], ReadReport]:
    """All examples of a local split and the report of what was dropped and why.

    A validation split marked CARVED is a fixed pseudo-random share of the train file, in
    pseudo-random order; the train split of such a task is the rest, in file order.

    Raises:
      KeyError: the task has no such split locally.
      FileNotFoundError: a file is absent (the message names the path looked at).
    """
    spec = get_task(task)
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r}; splits: {SPLITS}")
    paths = local_paths(spec, split, root)
    stamp = tuple(p.stat().st_mtime_ns if p.exists() else None for p in paths)
    try:
        examples, report = _read_cached(spec.local.fmt, paths, stamp,
                                        spec.label_aliases if spec.labels else None,
                                        spec.local.options)
    except FileNotFoundError as e:
        carved = " (validation is carved from train)" if spec.local.files(split) == CARVED else ""
        tfds = (f"; the task is also on TFDS as {spec.tfds.name!r}: set PROMPT_JAX_SOURCE=tfds "
                f"to read it from there (downloads it once; needs the network)"
                if spec.tfds else "")
        raise FileNotFoundError(
            f"task {spec.name!r} split {split!r}{carved}: {e}; expected the "
            f"{spec.description} release in {spec.local.fmt!r} format{tfds}") from None
    carved = dict(spec.local.splits).get("validation") == CARVED
    if carved and split in ("train", "validation"):
        carve = (group_carve_indices([e.group for e in examples]) if examples and
                 examples[0].group else carve_indices(len(examples)))
        if split == "validation":
            examples = [examples[i] for i in carve]
        else:
            keep = np.ones(len(examples), bool)
            keep[carve] = False
            examples = [e for e, k in zip(examples, keep, strict=True) if k]
        report = dataclasses.replace(report, kept=len(examples),
                                     notes=report.notes + (("carved_from_train", 1),))
    if spec.is_generation and split == "train" and "validation" in dict(spec.local.splits):
        examples, report = _without_scored_inputs(spec, examples, report, root)
    return list(examples), report


def _input_key(example: Example) -> str:
    """An input's text compared case-, punctuation- and spacing-blind."""
    text = f"{example.text_a} {example.text_b}".lower()
    return " ".join("".join(c for c in text if c.isalnum() or c.isspace()).split())


def _without_scored_inputs(spec: TaskSpec, examples, report: ReadReport, root
                           ) -> tuple[list[Example], ReadReport]:
    """A generation task's train rows minus those whose input is also a validation row's (the
    releases it is split from repeat a few: an NQ-Open question, 4 SAMSum dialogues), so that
    it never trains on what it scores; the report notes how many went."""
    scored = {_input_key(e) for e in read_split(spec, "validation", root)[0]}
    kept = [e for e in examples if _input_key(e) not in scored]
    if len(kept) == len(examples):
        return list(examples), report
    return kept, dataclasses.replace(report, kept=len(kept), notes=report.notes + (
        ("dropped_as_in_validation", len(examples) - len(kept)),))


@functools.lru_cache(maxsize=64)
def _read_cached(fmt: str, paths: tuple[Path, ...], stamp: tuple,
                 aliases: tuple[tuple[str, int], ...] | None, options: tuple
                 ) -> tuple[tuple[Example, ...], ReadReport]:
    """Reads once per (format, files, modification times, labels, reader options)."""
    examples, report = read_file(fmt, paths, None if aliases is None else dict(aliases),
                                 dict(options))
    return tuple(examples), report
