"""Mixed-task classification over a prompt bank: one jitted forward, bucketed shapes.

A batch holds rows of any of the bank's tasks; each row is encoded through its own task's
template and scored with its own prompt and verbalizers (rank classification), exactly as it
would be alone. On decoder-only models the forward reads each prompt's keys and values from
the bank (computed once when the prompt was added) and gathers them per row, so a mixed batch
costs what a single-task batch of the same size costs. Batch size and input length are padded
to buckets, and the bank's shapes only change when it grows, so after `warm_up` traffic never
compiles; `MixedClassifier.compilations` counts the forward's compilations to prove it.

The forward is the loaded model's own eval step, through `LoadedModel.score` (the one scoring
entry point, which the evaluator also takes): a row scores here what it scores anywhere.

    bank = PromptBank(loaded); bank.load_dir("prompts/")
    classifier = MixedClassifier(bank)
    classifier.warm_up()
    classifier.classify([("sst2", "a witty film"), ("trec", "Who wrote Hamlet?")])
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from prompt_jax import partitioning, scoring
from prompt_jax.engine import OVERLONG, OverlongInput
from prompt_jax.serving.bank import BankArrays, BankEntry, PromptBank

__all__ = ["OVERLONG", "Buckets", "EncodedRow", "GeneratedText", "MixedClassifier", "OverlongInput",
           "Prediction", "PromptChanged", "infer_requests", "read_requests"]


class PromptChanged(RuntimeError):
    """A row's prompt was removed or replaced between encoding and scoring."""


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Shapes the forward is compiled for (each a multiple of the mesh's data axis for batch
    sizes).

    Attributes:
      batch_sizes: rows per forward, ascending; the largest is the most rows one forward takes.
      input_lengths: input tokens per row, ascending; the largest must hold the bank's
        `max_input_length`.
    """

    batch_sizes: tuple[int, ...] = (8, 16, 32)
    input_lengths: tuple[int, ...] = (32, 64, 128)

    def batch_size(self, n: int) -> int:
        return next(b for b in self.batch_sizes if b >= n)

    def input_length(self, n: int) -> int:
        return next(t for t in self.input_lengths if t >= n)


@dataclasses.dataclass(frozen=True)
class EncodedRow:
    """One request encoded through its task's template.

    Attributes:
      entry: the bank entry it is scored with (checked again at scoring time).
      ids: [T_row] int32 input ids (template and text).
      target_position: the predicted position (masked LMs).
      truncated: the text was cut to fit `max_input_length`.
      input_tokens: tokens before any cut.
    """

    entry: BankEntry
    ids: np.ndarray
    target_position: int
    truncated: bool
    input_tokens: int


@dataclasses.dataclass(frozen=True)
class Prediction:
    """A row's answer: the best label of its task and every label's log-likelihood."""

    name: str
    task: str
    label: str
    scores: dict[str, float]
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        out = {"task": self.name, "label": self.label, "scores": self.scores}
        if self.name != self.task:
            out["task_type"] = self.task
        if self.truncated:
            out["truncated"] = True
        return out


@dataclasses.dataclass(frozen=True)
class GeneratedText:
    """A generation row's answer: the text, why it ended, and its new tokens."""

    name: str
    task: str
    text: str
    finish: str  # decoding.FINISH_REASONS
    new_tokens: int
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        out = {"task": self.name, "text": self.text, "finish": self.finish,
               "new_tokens": self.new_tokens}
        if self.name != self.task:
            out["task_type"] = self.task
        if self.truncated:
            out["truncated"] = True
        return out


class MixedClassifier:
    """Rank classification of rows from any of a bank's tasks in one jitted forward.

    Not thread-safe by itself (one thread runs forwards; the bank may change meanwhile).

    Attributes:
      compilations: compilations of the forward so far by this classifier (one per
        batch/length bucket and bank shape; the model's eval step counts them).
      warm_compilations: `compilations` when `warm_up` last finished.
    """

    def __init__(self, bank: PromptBank, buckets: Buckets = Buckets(), *,
                 overlong: str = "truncate"):
        if overlong not in OVERLONG:
            raise ValueError(f"overlong must be one of {OVERLONG}, got {overlong!r}")
        if buckets.input_lengths[-1] < bank.max_input_length:
            raise ValueError(f"the longest input bucket ({buckets.input_lengths[-1]}) is shorter "
                             f"than the bank's max_input_length ({bank.max_input_length})")
        for b in buckets.batch_sizes:
            partitioning.check_batch_size(b, bank.loaded.mesh)
        self.bank = bank
        self.buckets = buckets
        self.overlong = overlong
        self.compilations = 0
        self.warm_compilations = 0
        self._warm_generation = -1
        from prompt_jax.tasks.vocabulary import pad_id

        self._pad = pad_id(bank.loaded.tokenizer)

    @property
    def max_batch(self) -> int:
        return self.buckets.batch_sizes[-1]

    @property
    def compilations_since_warm_up(self) -> int:
        return self.compilations - self.warm_compilations

    # ----------------------------------------------------------------------------------------
    # Encoding
    # ----------------------------------------------------------------------------------------

    def encode(self, name: str, text: str, text_b: str | None = None, *,
               overlong: str | None = None) -> EncodedRow:
        """Encodes one request through its task's template.

        Args:
          name: the bank entry (by default a task's name).
          text: the input; a pair task takes `text_b` too, or "text_a<TAB>text_b" in `text`.
          overlong: "truncate" or "reject" an input over `max_input_length` tokens (default:
            the classifier's).

        Raises:
          KeyError: unknown name. ValueError: empty text, a pair task without its second
          text. OverlongInput: too long, with overlong="reject".
        """
        entry = self.bank.get(name)
        if text_b is None and entry.task.spec.pair and "\t" in text:
            text, text_b = text.split("\t", 1)
        if not text.strip() or (text_b is not None and not text_b.strip()):
            raise ValueError(f"empty text for task {name!r}")
        [encoded] = entry.task.encode([text], [text_b], max_length=self.bank.max_input_length,
                                      overlong=overlong or self.overlong)
        return EncodedRow(entry=entry, ids=encoded.ids, target_position=encoded.target_position,
                          truncated=encoded.truncated, input_tokens=encoded.input_tokens)

    # ----------------------------------------------------------------------------------------
    # Scoring
    # ----------------------------------------------------------------------------------------

    def run(self, rows: Sequence[EncodedRow]) -> list[Prediction | Exception]:
        """Scores encoded rows, at most `max_batch` per forward. A row whose prompt was removed
        or replaced since it was encoded gets a `PromptChanged` instead of a prediction; the
        other rows are unaffected."""
        out: list[Prediction | Exception] = []
        for start in range(0, len(rows), self.max_batch):
            out.extend(self._run_batch(rows[start:start + self.max_batch]))
        return out

    def generate(self, rows: Sequence[EncodedRow], max_new_tokens: Sequence[int]
                 ) -> list[GeneratedText | Exception]:
        """Greedy generations of encoded rows of generation tasks, any mix of the bank's
        prompts in one decode (`decoding.greedy` over the bank's arrays: each row reads its
        slot's prompt, its keys and values on decoder-only models); each row stops at EOS, its
        own maximum of new tokens or its task's stop string. Classification rows are scored
        apart (`run`): the two kinds never share a batch. A row whose prompt changed since it
        was encoded gets a `PromptChanged`.

        Raises:
          ValueError: a row of a classification task, or a maximum beyond its task's.
        """
        from prompt_jax import decoding, generation

        for row, limit in zip(rows, max_new_tokens, strict=True):
            spec = row.entry.task.spec
            if not spec.is_generation:
                raise ValueError(f"task {row.entry.name!r} picks a label: classify it")
            if not 1 <= limit <= spec.max_new_tokens:
                raise ValueError(f"max_new_tokens for task {row.entry.name!r} must be in "
                                 f"1..{spec.max_new_tokens}, got {limit}")
        arrays, live = self._live(rows)
        good = [(r, n) for r, n, ok in zip(rows, max_new_tokens, live, strict=True) if ok]
        out: list[GeneratedText | Exception] = []
        if not rows:
            return out
        cfg = self.bank.loaded.model.config
        options = generation.decode_options(rows[0].entry.task, self.bank.loaded.tokenizer)
        eos = options["eos_ids"]
        eos = np.atleast_1d(np.asarray(
            eos if eos is not None else cfg.eos_token_id if cfg.eos_token_id is not None else -1,
            np.int32))
        if good:
            batch = scoring.pad_rows([(r.ids, 0) for r, _ in good], self._pad,
                                     columns={"prompt_index": [r.entry.slot for r, _ in good]})
            before = sum(decoding.TRACES.values())
            tokens = decoding.greedy(
                self.bank.loaded.model, self.bank.loaded.params, arrays.scored_prompts(),
                batch["inputs"], batch["input_mask"], max_new_tokens=max(n for _, n in good),
                eos_ids=eos, pad_id=self._pad,
                prompt_index=batch["prompt_index"]).token_ids
            self.compilations += sum(decoding.TRACES.values()) - before
        i = 0
        for row, ok in zip(rows, live, strict=True):
            if not ok:
                out.append(_changed(row))
                continue
            limit, spec = good[i][1], row.entry.task.spec
            done = decoding.finish_rows(tokens[i:i + 1, :limit], eos, self._pad,
                                        spec.stop or None, options["decode"])
            i += 1
            out.append(GeneratedText(name=row.entry.name, task=row.entry.task.name,
                                     text=done.texts[0].strip(), finish=done.finish[0],
                                     new_tokens=int(done.lengths[0]), truncated=row.truncated))
        return out

    def classify(self, requests: Iterable[tuple[str, str]]) -> list[Prediction]:
        """(name, text) pairs -> predictions (raising on a bad request)."""
        results = self.run([self.encode(name, text) for name, text in requests])
        for r in results:
            if isinstance(r, Exception):
                raise r
        return results

    def _live(self, rows: Sequence[EncodedRow]) -> tuple[BankArrays, list[bool]]:
        """The bank's arrays now, and whether each row's prompt is still the one it was
        encoded for."""
        arrays, entries = self.bank.snapshot()
        return arrays, [entries.get(r.entry.name) is r.entry for r in rows]

    def _run_batch(self, rows: Sequence[EncodedRow]) -> list[Prediction | Exception]:
        arrays, live = self._live(rows)
        good = [r for r, ok in zip(rows, live, strict=True) if ok]
        scores = self._score_rows(arrays, good) if good else np.zeros((0, 0))
        out: list[Prediction | Exception] = []
        i = 0
        for row, ok in zip(rows, live, strict=True):
            if not ok:
                out.append(_changed(row))
                continue
            if row.entry.generates:  # never scored: its answer is generated (`generate`)
                out.append(ValueError(f"task {row.entry.name!r} generates text: generate it"))
                i += 1
                continue
            labels = row.entry.labels
            row_scores = scores[i, :len(labels)]
            i += 1
            out.append(Prediction(
                name=row.entry.name, task=row.entry.task.name,
                label=labels[int(row_scores.argmax())],
                scores={label: float(s) for label, s in zip(labels, row_scores, strict=True)},
                truncated=row.truncated))
        return out

    def _score_rows(self, arrays: BankArrays, rows: Sequence[EncodedRow]) -> np.ndarray:
        """Scores [n, C] of rows padded to their batch and length buckets (`scoring.pad_rows`),
        row b reading bank slot b's prompt and candidates, by the model's eval step."""
        n = len(rows)
        slots = [r.entry.slot for r in rows]
        batch = scoring.pad_rows(
            [(r.ids, r.target_position) for r in rows], self._pad,
            rows=self.buckets.batch_size(n),
            width=self.buckets.input_length(max(len(r.ids) for r in rows)),
            columns={"prompt_index": slots, "candidate_index": slots})
        loaded = self.bank.loaded
        step = loaded.eval_step(self.bank.placement)
        before = step._cache_size()
        scores = loaded.score(arrays.scored_prompts(), batch,
                              (arrays.candidate_ids, arrays.candidate_mask),  # [N, C, K]
                              placement=self.bank.placement)
        self.compilations += step._cache_size() - before
        return scores[:n]

    # ----------------------------------------------------------------------------------------
    # Warm-up and the bank
    # ----------------------------------------------------------------------------------------

    def warm_up(self) -> int:
        """Compiles the forward for every batch and length bucket at the bank's current shape
        (the bank needs one prompt). Returns the compilations it took."""
        arrays, entries = self.bank.snapshot()
        if not entries:
            raise ValueError("warm up needs at least one prompt in the bank")
        before = self.compilations
        entry = next(iter(entries.values()))
        for b in self.buckets.batch_sizes:
            for t in self.buckets.input_lengths:
                row = EncodedRow(entry=entry, ids=np.full((t,), self._pad, np.int32),
                                 target_position=0, truncated=False, input_tokens=t)
                self._score_rows(arrays, [row] * b)
        self.warm_compilations = self.compilations
        self._warm_generation = self.bank.generation
        return self.compilations - before

    @property
    def warm(self) -> bool:
        return self._warm_generation == self.bank.generation

    def add_prompt(self, add: Callable[[], BankEntry]) -> tuple[BankEntry, int]:
        """Runs a bank change (e.g. `lambda: bank.add_file(path)`); if it grew the bank, warms
        up again so that traffic still never compiles. Returns (entry, compilations taken)."""
        was_warm = self.warm
        entry = add()
        compiled = self.warm_up() if was_warm and not self.warm else 0
        return entry, compiled


def _changed(row: EncodedRow) -> PromptChanged:
    return PromptChanged(f"the prompt {row.entry.name!r} was removed or replaced while the "
                         f"request waited; send it again")


def read_requests(lines: Iterable[str], source: str = "input") -> list[dict[str, Any]]:
    """JSON lines of {"task", "text"[, "text_b", "id"]} (blank lines skipped), checked.

    Raises:
      ValueError: naming the line that is not such an object.
    """
    requests = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"{source}:{number}: not JSON: {e}") from None
        if not isinstance(request, dict) or not isinstance(request.get("task"), str) or \
                not isinstance(request.get("text"), str):
            raise ValueError(f"{source}:{number}: expected {{\"task\": ..., \"text\": ...}}, "
                             f"got {line.strip()[:80]}")
        request["_line"] = number
        requests.append(request)
    return requests


def infer_requests(classifier: MixedClassifier, requests: Sequence[dict[str, Any]], *,
                   source: str = "input",
                   progress: Callable[[int], None] | None = None) -> Iterable[dict[str, Any]]:
    """Offline batch inference: every request encoded (all checked before any is scored),
    then scored in mixed batches of `max_batch`. Yields one JSON-able answer per request, in
    order: task, label, scores (and id, truncated when given or set); a generation task's row
    (its optional "max_new_tokens" at most the task's) is generated instead: task, text,
    finish, new_tokens.

    Raises:
      ValueError: naming the line of an unknown task, an empty or over-long text.
    """
    rows = []
    for request in requests:
        try:
            rows.append(classifier.encode(request["task"], request["text"],
                                          request.get("text_b")))
        except KeyError as e:
            raise ValueError(f"{source}:{request['_line']}: {e.args[0]}") from None
        except ValueError as e:
            raise ValueError(f"{source}:{request['_line']}: {e}") from None
    for start in range(0, len(rows), classifier.max_batch):
        chunk = rows[start:start + classifier.max_batch]
        asked = requests[start:start + len(chunk)]
        for request, result in zip(asked, _answers(classifier, chunk, asked), strict=True):
            if isinstance(result, Exception):
                raise result
            answer = result.to_json()
            if "id" in request:
                answer = {"id": request["id"], **answer}
            yield answer
        if progress is not None:
            progress(len(chunk))


def _answers(classifier: MixedClassifier, rows: Sequence[EncodedRow],
             requests: Sequence[dict[str, Any]]) -> list[Prediction | GeneratedText | Exception]:
    """A chunk's answers in order: classification rows scored together, generation rows
    decoded together (`MixedClassifier.generate`)."""
    kinds = [r.entry.generates for r in rows]
    scored = iter(classifier.run([r for r, g in zip(rows, kinds, strict=True) if not g]))
    wanted = [(r, int(q.get("max_new_tokens") or r.entry.task.spec.max_new_tokens))
              for r, q, g in zip(rows, requests, kinds, strict=True) if g]
    generated = iter(classifier.generate([r for r, _ in wanted], [n for _, n in wanted]))
    return [next(generated) if g else next(scored) for g in kinds]
