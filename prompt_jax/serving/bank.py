"""A prompt bank: many soft prompts for one loaded backbone, ready for mixed-task batches.

Each prompt sits in a slot of fixed-shape arrays (its vectors, its length, its task's
verbalizers and, on decoder-only models, every layer's keys and values of the prompt, computed
once when the prompt is added: they do not depend on the input). A request row only names a
slot, so adding, replacing and removing prompts while serving changes array contents, never
shapes, and the jitted forward that reads them does not recompile. Capacity grows in buckets
(slots double, prompt length and class count round up to powers of two); only a growth changes
shapes, and `PromptBank.generation` counts those.

    bank = PromptBank(loaded)
    bank.load_dir("prompts/")          # <name>.npy + <name>.json sidecars (task, template, model)
    bank.add("sst2-v2", prompt, "sst2")
    bank.remove("trec")
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from prompt_jax import engine, partitioning, prompts, scoring
from prompt_jax.scoring import bucket


@flax.struct.dataclass
class BankArrays:
    """The bank's device arrays (a pytree: jitted steps take it as an argument).

    Attributes:
      vectors: [N, P, H] float32 prompts, slot n's padding (from lengths[n] on) zero.
      lengths: [N] int32 real vectors of each slot's prompt (0: a free slot).
      candidate_ids: [N, C, K] int32 each slot's task's verbalizer token ids.
      candidate_mask: [N, C, K] int32; a padded class (all zero) scores -inf.
      keys, values: [L, N, P, KV, D] each slot's prompt's keys and values on decoder-only
        backbones (`Backbone.prefix_kv`), None on others.
    """

    vectors: jax.Array
    lengths: jax.Array
    candidate_ids: jax.Array
    candidate_mask: jax.Array
    keys: jax.Array | None
    values: jax.Array | None

    def scored_prompts(self) -> prompts.PromptSet | scoring.CachedPrompts:
        """The slots' prompts as `scoring.candidate_scores` takes them (row b picks slot
        `batch["prompt_index"][b]`): their keys and values where the bank keeps them."""
        if self.keys is not None:
            return scoring.CachedPrompts(self.keys, self.values, self.lengths)
        return prompts.PromptSet(self.vectors, self.lengths)


@dataclasses.dataclass(frozen=True)
class BankShape:
    """The capacity the arrays are allocated for (each a bucket).

    Attributes:
      slots: prompts the bank holds (N).
      prompt_length: vectors per prompt (P).
      classes: verbalizers per task (C).
      candidate_tokens: tokens per verbalizer (K).
    """

    slots: int
    prompt_length: int
    classes: int
    candidate_tokens: int


@dataclasses.dataclass(frozen=True)
class BankEntry:
    """One prompt of the bank.

    Attributes:
      name: what requests call it (by default its task's name).
      task: its task on the bank's model (template, verbalizers).
      prompt: [P, H] float32.
      slot: its row in the bank's arrays.
      source: the file it was read from ("" when given as an array).
      metadata: its sidecar (or what was given).
    """

    name: str
    task: engine.TaskHandle
    prompt: np.ndarray
    slot: int
    source: str = ""
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.prompt.shape[0])

    @property
    def labels(self) -> tuple[str, ...]:
        return self.task.labels

    @property
    def generates(self) -> bool:
        """Its task generates text (POST /generate) rather than picking a label."""
        return self.task.spec.is_generation

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (name, task, labels, length, template, slot, and the name of
        the file it was read from, never its folder)."""
        return {"name": self.name, "task": self.task.name, "labels": list(self.labels),
                "prompt_length": self.length, "template": self.task.template,
                "pair": bool(self.task.spec.pair), "slot": self.slot,
                "source": Path(self.source).name if self.source else ""}


@dataclasses.dataclass(frozen=True)
class PreparedPrompt:
    """A prompt checked for a bank, with its task made, but not in the bank yet
    (`PromptBank.prepare`, then `PromptBank.install`).

    Attributes: as `BankEntry`'s, without the slot.
    """

    name: str
    task: engine.TaskHandle
    prompt: np.ndarray
    source: str = ""
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def sidecar(self) -> dict[str, Any]:
        """What its sidecar says once written into a bank folder: its own fields, with the
        task it is served for and its template."""
        return {**self.metadata, "task": self.task.name, "template": self.task.template}


def _same_model(a: str, b: str) -> bool:
    """Two model names or paths that name the same checkpoint."""
    if a == b:
        return True
    if os.path.exists(a) and os.path.exists(b):
        return os.path.realpath(a) == os.path.realpath(b)
    return False


class PromptBank:
    """Prompts of many tasks for one loaded model, in slots of fixed-shape device arrays.

    Thread-safe: `add`, `remove` and `snapshot` take a lock; a snapshot's arrays are never
    changed afterwards (a write makes new arrays), so a batch in flight is unaffected by a
    prompt added or removed meanwhile.
    """

    def __init__(self, loaded: engine.LoadedModel, *, slots: int = 16, prompt_length: int = 32,
                 classes: int = 8, candidate_tokens: int = 1, max_input_length: int = 128,
                 data: str = ""):
        """An empty bank.

        Args:
          loaded: the model every prompt is for.
          slots, prompt_length, classes, candidate_tokens: the initial capacity (rounded up to
            powers of two); it grows when a prompt needs more.
          max_input_length: input tokens kept per request (the prompt not included).
          data: the data folder for the tasks ("" = the default).
        """
        self.loaded = loaded
        self.folder: Path | None = None  # set by `load_dir`
        self.max_input_length = max_input_length
        self.data = data
        model = loaded.model
        self.placement = model.default_placement
        self.keeps_kv = model.shares_prefix and self.placement == "prefix"
        self.shape = BankShape(bucket(slots), bucket(prompt_length, 8), bucket(classes, 2),
                               bucket(candidate_tokens))
        self.generation = 0  # shape changes (each one recompiles what reads the arrays)
        self.write_traces = 0  # traces of the jitted slot write (once per shape)
        self._lock = threading.Lock()
        self._entries: dict[str, BankEntry] = {}
        self._rep = partitioning.replicated(loaded.mesh)
        self._arrays = self._allocate(self.shape)
        self._write = jax.jit(self._write_slot, out_shardings=self._rep)

    # ----------------------------------------------------------------------------------------
    # Reading
    # ----------------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> BankEntry:
        """The entry called `name`.

        Raises:
          KeyError: naming it and the names the bank holds.
        """
        entry = self._entries.get(name)
        if entry is None:
            raise KeyError(f"unknown task {name!r}; the bank serves: {', '.join(self.names)}")
        return entry

    def snapshot(self) -> tuple[BankArrays, dict[str, BankEntry]]:
        """The current arrays and entries, consistent with each other."""
        with self._lock:
            return self._arrays, dict(self._entries)

    # ----------------------------------------------------------------------------------------
    # Changing
    # ----------------------------------------------------------------------------------------

    def prepare(self, name: str, prompt, task: str | engine.TaskHandle, *, template: str = "",
                source: str = "", metadata: Mapping[str, Any] | None = None) -> PreparedPrompt:
        """Checks a prompt for this bank and makes its task, changing nothing (`install` adds
        it; a server writes it to disk in between).

        Args:
          name: what requests will call it.
          prompt: [P, H] array.
          task: a registered task name (or a TaskHandle on this bank's model).
          template: the hand-written template it was trained with ("" = the task's own).
          source: the file it came from, for messages.
          metadata: its sidecar: a `model`, `backbone` or `placement` there that is not this
            bank's refuses the prompt.

        Raises:
          ValueError: the prompt is for another model, width or placement, or too long.
          KeyError: an unknown task.
        """
        metadata = dict(metadata or {})
        prompt = np.asarray(prompt, np.float32)
        self._check(prompt, metadata, source or f"prompt {name!r}")
        if not isinstance(task, engine.TaskHandle):
            task = self.loaded.task(task, template=template, max_input_length=self.max_input_length,
                                    data=self.data, pack=False)
        return PreparedPrompt(name=name, task=task, prompt=prompt, source=source,
                              metadata=metadata)

    def install(self, prepared: PreparedPrompt) -> BankEntry:
        """Adds a prepared prompt under its name, or replaces the one of that name (in its
        slot); grows the arrays when it needs more room."""
        prompt, task = prepared.prompt, prepared.task
        if task.candidates is None:  # a generation task: one masked class, never scored
            ids, mask = np.zeros((1, 1), np.int32), np.zeros((1, 1), np.int32)
        else:
            ids, mask = (np.asarray(x) for x in task.candidates)  # [C, K]
        with self._lock:
            old = self._entries.get(prepared.name)
            slot = old.slot if old else self._free_slot()
            need = BankShape(max(self.shape.slots, bucket(slot + 1)),  # slots double
                             max(self.shape.prompt_length, bucket(prompt.shape[0], 8)),
                             max(self.shape.classes, bucket(ids.shape[0], 2)),
                             max(self.shape.candidate_tokens, bucket(ids.shape[1])))
            if need != self.shape:
                self._grow(need)
            s = self.shape
            vectors = np.zeros((s.prompt_length, prompt.shape[1]), np.float32)
            vectors[:prompt.shape[0]] = prompt
            cand_ids, cand_mask = scoring.pad_candidates(ids, mask, s.classes,
                                                         s.candidate_tokens)  # [C, K]
            self._arrays = self._write(self._arrays, self.loaded.params, np.int32(slot), vectors,
                                       np.int32(prompt.shape[0]), cand_ids, cand_mask)
            entry = BankEntry(name=prepared.name, task=task, prompt=prompt, slot=slot,
                              source=prepared.source, metadata=prepared.metadata)
            self._entries[prepared.name] = entry
        return entry

    def add(self, name: str, prompt, task: str | engine.TaskHandle, *, template: str = "",
            source: str = "", metadata: Mapping[str, Any] | None = None) -> BankEntry:
        """Adds a prompt under `name`, or replaces the one of that name (in its slot): `prepare`
        (which says what it raises) then `install`."""
        return self.install(self.prepare(name, prompt, task, template=template, source=source,
                                         metadata=metadata))

    def prepare_loaded(self, loaded, *, name: str, task: str = "",
                       source: str = "") -> PreparedPrompt:
        """`prepare` for a prompt read from a file (`prompt_io.LoadedPrompt`), with its
        sidecar's task, template and model; `task` defaults to the sidecar's (or `name`, when
        that is a registered task)."""
        from prompt_jax import tasks
        from prompt_jax.tasks import task_spec

        metadata = dict(loaded.metadata)
        for field in ("task", "template", "model", "backbone", "placement"):
            if not isinstance(metadata.get(field, ""), str):
                raise ValueError(f"{source or name}: the sidecar's {field!r} is not a string")
        task_spec.define_from_metadata(metadata, where=source or name)  # a file task, again
        task = task or metadata.get("task") or (name if name in tasks.list_tasks() else "")
        if not task:
            raise ValueError(f"{source or name}: no task in its sidecar and its name is no "
                             f"registered task; give one")
        return self.prepare(name, loaded.array, task, template=metadata.get("template") or "",
                            source=source, metadata=metadata)

    def read_file(self, path: str | os.PathLike, *, name: str = "",
                  task: str = "") -> PreparedPrompt:
        """A saved prompt (any format `prompt_io` reads) prepared for the bank
        (`prepare_loaded`); `name` defaults to the file's stem."""
        from prompt_jax.prompts import files as prompt_io

        path = Path(path)
        return self.prepare_loaded(prompt_io.load_prompt(path), name=name or path.stem,
                                   task=task, source=str(path))

    def add_file(self, path: str | os.PathLike, *, name: str = "", task: str = "") -> BankEntry:
        """Adds a saved prompt (`read_file`, then `install`)."""
        return self.install(self.read_file(path, name=name, task=task))

    def load_dir(self, directory: str | os.PathLike) -> list[BankEntry]:
        """Adds every `<name>.npy` of a folder (with its `<name>.json` sidecar), after settling
        the writes a crash interrupted there (`store.recover`); the bank keeps the folder as
        `folder`, where a server writes the prompts it adds."""
        from prompt_jax.serving import store

        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: no such folder of prompts")
        store.recover(directory)
        files = store.prompt_files(directory)
        if not files:
            raise FileNotFoundError(f"{directory}: holds no <name>.npy prompts")
        entries = [self.add_file(f) for f in files]
        self.folder = directory
        return entries

    def remove(self, name: str) -> BankEntry:
        """Removes a prompt; its slot is reused by the next one added (no array changes).

        Raises:
          KeyError: no prompt of that name.
        """
        with self._lock:
            entry = self._entries.pop(name, None)
        if entry is None:
            raise KeyError(f"unknown task {name!r}; the bank serves: {', '.join(self.names)}")
        return entry

    # ----------------------------------------------------------------------------------------
    # Internals
    # ----------------------------------------------------------------------------------------

    def _check(self, prompt: np.ndarray, metadata: Mapping[str, Any], where: str) -> None:
        model, name = self.loaded.model, self.loaded.name
        wanted = metadata.get("model")
        if wanted and not _same_model(str(wanted), name):
            raise ValueError(f"{where}: the prompt is for model {wanted!r}, not {name!r}, "
                             f"which this bank serves")
        family = metadata.get("backbone")
        if family and family != model.family:
            raise ValueError(f"{where}: the prompt is for a {family} backbone, not the "
                             f"{model.family} backbone of {name!r}")
        if prompt.ndim != 2 or prompt.shape[0] < 1:
            raise ValueError(f"{where}: a prompt is [P, H], got shape {prompt.shape}")
        if prompt.shape[1] != model.d_model:
            raise ValueError(f"{where}: the prompt has width {prompt.shape[1]}, but {name!r} "
                             f"has width (d_model) {model.d_model}")
        room = model.max_length - self.max_input_length
        if prompt.shape[0] > room:
            raise ValueError(f"{where}: a prompt of {prompt.shape[0]} vectors and "
                             f"{self.max_input_length} input tokens exceed {name!r}'s maximum "
                             f"length {model.max_length}")
        placement = metadata.get("placement")
        if placement and placement != self.placement:
            raise ValueError(f"{where}: the prompt was trained at placement {placement!r}; "
                             f"this bank places prompts at {self.placement!r}")

    def _free_slot(self) -> int:
        used = {e.slot for e in self._entries.values()}
        return next(i for i in range(len(used) + 1) if i not in used)

    def _allocate(self, s: BankShape) -> BankArrays:
        model = self.loaded.model
        n, p = s.slots, s.prompt_length
        keys = values = None
        if self.keeps_kv:
            kv = jax.eval_shape(lambda params: model.prefix_kv(
                params, jnp.zeros((1, p, model.d_model), jnp.float32),
                jnp.ones((1,), jnp.int32)), self.loaded.params)[0]  # [L, 1, P, KV, D]
            shape = (kv.shape[0], n, *kv.shape[2:])
            keys, values = jnp.zeros(shape, kv.dtype), jnp.zeros(shape, kv.dtype)
        arrays = BankArrays(
            vectors=jnp.zeros((n, p, model.d_model), jnp.float32),
            lengths=jnp.zeros((n,), jnp.int32),
            candidate_ids=jnp.zeros((n, s.classes, s.candidate_tokens), jnp.int32),
            candidate_mask=jnp.zeros((n, s.classes, s.candidate_tokens), jnp.int32),
            keys=keys, values=values)
        return jax.device_put(arrays, self._rep)

    def _grow(self, need: BankShape) -> None:
        """Pads every array to `need` (zeros: free slots, masked prompt slots, -inf classes)."""
        old, a = self.shape, self._arrays
        dn, dp = need.slots - old.slots, need.prompt_length - old.prompt_length
        dc, dk = need.classes - old.classes, need.candidate_tokens - old.candidate_tokens
        cands = ((0, dn), (0, dc), (0, dk))
        kv = None if a.keys is None else tuple(
            jnp.pad(t, ((0, 0), (0, dn), (0, dp), (0, 0), (0, 0))) for t in (a.keys, a.values))
        grown = BankArrays(
            vectors=jnp.pad(a.vectors, ((0, dn), (0, dp), (0, 0))),
            lengths=jnp.pad(a.lengths, (0, dn)),
            candidate_ids=jnp.pad(a.candidate_ids, cands),
            candidate_mask=jnp.pad(a.candidate_mask, cands),
            keys=None if kv is None else kv[0], values=None if kv is None else kv[1])
        self._arrays = jax.device_put(grown, self._rep)
        self.shape = need
        self.generation += 1

    def _write_slot(self, arrays: BankArrays, params, slot, vectors, length, cand_ids,
                    cand_mask) -> BankArrays:
        """New arrays with slot `slot` holding a prompt (vectors [P, H] padded to the bank's P,
        `length` real), its keys and values, and its candidates [C, K]. Jitted: traced once
        per bank shape, whatever the slot or the prompt's length."""
        self.write_traces += 1  # runs at trace time only
        keys, values = arrays.keys, arrays.values
        if self.keeps_kv:
            model = self.loaded.model
            k, v = model.prefix_kv(params, vectors[None].astype(model.config.dtype),
                                   length[None])  # [L, 1, P, KV, D] each
            keys = keys.at[:, slot].set(k[:, 0].astype(keys.dtype))
            values = values.at[:, slot].set(v[:, 0].astype(values.dtype))
        return BankArrays(vectors=arrays.vectors.at[slot].set(vectors),
                          lengths=arrays.lengths.at[slot].set(length),
                          candidate_ids=arrays.candidate_ids.at[slot].set(cand_ids),
                          candidate_mask=arrays.candidate_mask.at[slot].set(cand_mask),
                          keys=keys, values=values)
