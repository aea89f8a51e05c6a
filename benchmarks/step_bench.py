"""The training step against its peer and against the machine: prompt_jax vs Hugging Face PEFT
on the same model, batches, sequence lengths and prompt length.

Shapes (`--shapes`): smollm2-135m and gemma3-270m (the real weights with `--real`, else random
weights of their shape), t5-small, t5-base and roberta-base (random weights). Random weights
come from one Hugging Face model built from the shape's config (seed 0) and saved once, which
both sides load: the same numbers on both sides. Batches are SST-2's (`--real`, decoder-only
shapes) or random tokens of random lengths (synthetic: no data files, no TensorFlow), so the
same script runs on a GPU (`JAX_PLATFORMS=cuda ... --dtype bfloat16`).

Sides, each in its own process (its peak memory its own):
  ours       the library's jitted step (shared prefix keys and values, the head at the one
             position it needs, packed rows for decoder-only models unless `--no-pack`).
  peft       PEFT prompt tuning as users write it: exact dynamic padding (each batch as wide as
             its longest row) and `labels=` (decoder-only: the verbalizer appended, logits at
             every position; RoBERTa: the MLM head at every position, one picked).
  peft-best  the peer at its best: the head only where the loss needs it (decoder-only:
             `logits_to_keep` = the rows' last positions, right padding; RoBERTa: the encoder
             through PEFT and the MLM head at the mask only). T5's `labels=` already computes
             only the target positions, so T5 has no separate best variant.
  peft-compiled, peft-bf16   peft-best with torch.compile, or under bf16 autocast (run only
             where the CPU has bf16 matmuls); the peer "at its best" in the ratios is the
             fastest of the three run. One PEFT setup for every benchmark: peft_side.py; on a
             GPU the peer runs on it.
  model      model tuning (every weight, AdamW) in our framework, for memory only.
  ours-unrolled   ours with the layer loop unrolled (`unroll_layers`, decoder-only shapes).
  ours-per-layer  ours with each layer's params apart (`scan_layers=False`, decoder-only
             shapes): which of the three layouts is fastest on a backend decides its default
             there.

Correctness first: the first step's loss must agree between the sides (same batch, prompt,
weights) before any timing is reported; the script exits otherwise. PEFT with left padding and
`logits_to_keep=1` is not offered: PEFT drops `position_ids` for prompt tuning, so left-padded
rows get shifted positions and another loss.

Reported per shape and side: examples/s and real tokens/s from the median step (first step
excluded), total training time with compilation, the ratios, time to the first step, compiles
of the step against distinct batch shapes, whole-process peak RSS and the training phase's own
peak (RSS high-water mark reset after loading), XLA's compiled memory analysis, the FLOPs a step
needs (by hand: forward and backward to the activations over real tokens, no weight gradients)
beside XLA's count of the compiled program, and utilization: needed FLOP/s over the matmul
peak measured in the same run (`peak`: JAX and torch, float32 and bfloat16).

    python benchmarks/step_bench.py --quick                      # make bench (synthetic)
    python benchmarks/step_bench.py --real --shapes smollm2-135m gemma3-270m --steps 40
    python benchmarks/step_bench.py --shapes t5-small t5-base roberta-base --steps 30
    python benchmarks/step_bench.py --profile --shapes smollm2-135m --real   # where time goes
    JAX_PLATFORMS=cuda python benchmarks/step_bench.py --dtype bfloat16 --shapes t5-base

Writes `benchmarks/results/step_bench[_<label>].json`; `--docs` puts the table into the
`step_bench[_<label>]` block of docs/results.md, and `--peers --docs` the ratios against PEFT
of every stored result into its `step_bench_peers` block.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from prompt_jax.provenance import write_result

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = Path(os.environ.get("PROMPT_JAX_BENCH_CACHE", "/tmp/prompt_jax_bench"))
SIDES = ("ours", "ours-unrolled", "ours-per-layer", "peft", "peft-best", "peft-compiled",
         "peft-bf16", "model")
# Our other layer layouts (decoder-only shapes): engine.load_model's options.
LAYOUTS = {"ours-unrolled": {"unroll_layers": True}, "ours-per-layer": {"scan_layers": False}}
DEFAULT_SIDES = ("ours", "peft", "peft-best", "model")
LR, WEIGHT_DECAY = 3e-2, 0.01


# -- shapes ----------------------------------------------------------------------------------

def hf_config(shape: str):
    """The Hugging Face config of a named shape (dropout off: both sides deterministic)."""
    import transformers

    if shape == "smollm2-135m":
        return transformers.LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
            rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
            bos_token_id=1, eos_token_id=2)
    if shape == "gemma3-270m":
        return transformers.Gemma3TextConfig(
            vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
            num_attention_heads=4, num_key_value_heads=1, head_dim=256,
            max_position_embeddings=32768, query_pre_attn_scalar=256, sliding_window=512,
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                             "sliding_attention": {"rope_type": "default",
                                                   "rope_theta": 10000.0}},
            tie_word_embeddings=True, attn_implementation="eager")
    if shape in ("t5-small", "t5-base"):
        small = shape == "t5-small"
        return transformers.T5Config(
            vocab_size=32128, d_model=512 if small else 768, d_kv=64,
            d_ff=2048 if small else 3072, num_layers=6 if small else 12,
            num_heads=8 if small else 12, feed_forward_proj="relu", dropout_rate=0.0,
            decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    if shape == "roberta-base":
        return transformers.RobertaConfig(
            vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)
    raise ValueError(f"unknown shape {shape!r}")


SHAPES = ("smollm2-135m", "gemma3-270m", "t5-small", "t5-base", "roberta-base")
REAL = {"smollm2-135m": "smollm2-135m-instruct", "gemma3-270m": "gemma3-270m"}
FAMILY = {"smollm2-135m": "causal", "gemma3-270m": "causal", "t5-small": "t5",
          "t5-base": "t5", "roberta-base": "mlm"}
MASK_ID = 50264  # RoBERTa's <mask>


def hf_class(shape: str):
    import transformers

    return {"causal": transformers.AutoModelForCausalLM,
            "t5": transformers.T5ForConditionalGeneration,
            "mlm": transformers.RobertaForMaskedLM}[FAMILY[shape]]


def model_source(shape: str, real: bool) -> Path:
    """The checkpoint both sides load: the real GGUF, or the shape's random weights saved once
    (seed 0, Hugging Face's own initialization)."""
    if real:
        from prompt_jax.models import fetch

        return Path(fetch(REAL[shape]))
    directory = CACHE / shape
    if not (directory / "config.json").exists():
        import torch

        torch.manual_seed(0)
        config = hf_config(shape)
        cls = hf_class(shape)
        model = (cls.from_config(config) if hasattr(cls, "from_config") else cls(config))
        model.save_pretrained(directory)
    return directory


# -- batches ---------------------------------------------------------------------------------

def batches(shape: str, args, vocab: int) -> list[dict]:
    """`args.steps` batches in the library's format: right-padded rows, widths rounded up to
    16 tokens (the library's buckets). Synthetic: random tokens, lengths uniform in
    [seq_len / 4, seq_len]; `--real`: SST-2's seed-0 training batches."""
    if args.real:
        from prompt_jax import tasks
        from prompt_jax.models import load_tokenizer

        tok = load_tokenizer(model_source(shape, True))
        it = tasks.batches(tasks.get_task("sst2"), "train", tok, "causal", args.batch_size,
                           max_length=args.seq_len, seed=0, shuffle=True, repeat=True)
        return [next(it) for _ in range(args.steps)]
    rng = np.random.default_rng(0)
    b, family, out = args.batch_size, FAMILY[shape], []
    for _ in range(args.steps):
        lengths = rng.integers(max(args.seq_len // 4, 2), args.seq_len + 1, size=b)
        width = -(-int(lengths.max()) // 16) * 16
        mask = (np.arange(width)[None] < lengths[:, None]).astype(np.int32)
        inputs = np.where(mask > 0, rng.integers(3, min(vocab, 32000), size=(b, width)),
                          1 if family == "mlm" else 0).astype(np.int32)
        position = np.zeros(b, np.int32)
        if family == "mlm":  # <s> ... <mask> ... </s>: the mask somewhere inside
            inputs[:, 0] = 0
            inputs[np.arange(b), lengths - 1] = 2
            position = rng.integers(1, lengths - 1).astype(np.int32)
            inputs[np.arange(b), position] = MASK_ID
        k = 2 if family == "t5" else 1
        targets = rng.integers(3, min(vocab, 32000), size=(b, k)).astype(np.int32)
        if family == "t5":
            targets[:, -1] = 1  # EOS
        out.append({"inputs": inputs, "input_mask": mask, "targets": targets,
                    "target_mask": np.ones((b, k), np.int32), "label": np.zeros(b, np.int32),
                    "target_position": position, "weight": np.ones(b, np.float32)})
    return out


def init_ids(args) -> np.ndarray:
    """The token ids whose embeddings start the prompt on both sides (a text-like init)."""
    return np.random.default_rng(1).integers(3, 1000, size=args.prompt_length)


# -- FLOPs -----------------------------------------------------------------------------------

def needed_flops(model, batch: dict, prompt_length: int) -> float:
    """FLOPs a prompt-tuning step needs, by hand: forward plus backward to the activations
    (matmuls twice, attention scores and mixing three times), no weight gradients, over real
    tokens only; the prompt once per batch for decoder-only models (its keys and values are
    shared), once per example otherwise; the head at the positions the loss reads. The first
    layer's input projections need no gradient for the text's own tokens (the frozen
    embeddings are not differentiated)."""
    cfg, family = model.config, model.family
    lengths = np.asarray(batch["input_mask"]).sum(1)
    if "segment_ids" in batch:
        seg = np.asarray(batch["segment_ids"])
        lengths = np.array([(seg == s).sum() for s in range(1, seg.max() + 1)])
    p, b = prompt_length, len(np.asarray(batch["weight"]))
    if family in ("llama", "gemma3"):
        h, f, n_layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
        q, kv = (cfg.num_attention_heads * cfg.kv_dim, cfg.num_key_value_heads * cfg.kv_dim)
        weights = 2 * (2 * h * q + 2 * h * kv + 3 * h * f)  # per token per layer, forward
        tokens = p + lengths.sum()
        keys = p * (p + 1) / 2 + sum(n * p + n * (n + 1) / 2 for n in lengths)  # causal
        attention = 4 * q * keys
        head = 2 * h * cfg.vocab_size * b
        unneeded = 2 * (h * q + 2 * h * kv) * lengths.sum()
        return float(2 * n_layers * weights * tokens + 3 * n_layers * attention + 2 * head
                     - unneeded)
    if family == "t5":
        h, f, inner = cfg.d_model, cfg.d_ff, cfg.num_heads * cfg.d_kv
        ffn = 3 if cfg.is_gated else 2
        k = np.asarray(batch["targets"]).shape[1]
        enc_tokens = (lengths + p).sum()
        enc = cfg.num_layers * (2 * (4 * h * inner + ffn * h * f) * enc_tokens
                                + 3 * 4 * inner * ((lengths + p) ** 2).sum())
        dec_layers = cfg.num_decoder_layers
        dec = dec_layers * (2 * (6 * h * inner + ffn * h * f) * b * k
                            + 2 * 2 * h * inner * enc_tokens  # cross-attention keys, values
                            + 3 * 4 * inner * (b * k * (k + 1) / 2 + k * (lengths + p).sum()))
        head = 2 * h * cfg.vocab_size * b * k
        unneeded = 2 * 3 * h * inner * (lengths.sum() + b * k)
        return float(2 * enc + 2 * dec + 2 * head - unneeded)
    if family in ("roberta", "bert"):
        h, f = cfg.hidden_size, cfg.intermediate_size
        n = lengths + p
        layer = 2 * (4 * h * h + 2 * h * f) * n.sum() + 3 * 4 * h * (n ** 2).sum()
        head = 2 * (h * h + h * cfg.vocab_size) * b
        unneeded = 2 * 3 * h * h * lengths.sum()
        return float(2 * cfg.num_hidden_layers * layer + 2 * head - unneeded)
    raise ValueError(family)


def real_tokens(batch: dict) -> int:
    return int((np.asarray(batch["input_mask"]) > 0).sum())


# -- memory ----------------------------------------------------------------------------------

def _status(field: str) -> float:
    """A /proc/self/status field (VmRSS, VmHWM) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> bool:
    """Resets this process's RSS high-water mark (Linux), so that VmHWM measures what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_after_loading() -> dict:
    return {"rss_loaded_mb": _status("VmRSS"), "hwm_reset": reset_peak()}


def memory_after_training(before: dict) -> dict:
    return {**before, "train_peak_rss_mb": _status("VmHWM"),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# -- sides -----------------------------------------------------------------------------------

def _timed(step, batches_: list, start: float) -> dict:
    """Runs `step(batch) -> loss` over the batches: per-step seconds, losses, time to the first
    step (from the process's start and from the first call)."""
    times, losses = [], []
    for batch in batches_:
        t0 = time.perf_counter()
        losses.append(float(step(batch)))
        times.append(time.perf_counter() - t0)
        if len(times) == 1:
            first_from_start = time.perf_counter() - start
    return {"step_seconds": times, "losses": losses, "first_step_seconds": times[0],
            "first_step_from_start_seconds": first_from_start}


def run_ours(shape: str, args, start: float, tune_model: bool = False,
             layout: dict | None = None) -> dict:
    import jax

    from prompt_jax import partitioning
    from prompt_jax.models import layers, load_pretrained
    from prompt_jax.models.base import with_options
    from prompt_jax.training import packing, train

    pre = load_pretrained(model_source(shape, args.real), dtype=args.dtype,
                          param_dtype=args.dtype)
    mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
    # The same weights; `layout` (engine.load_model's unroll_layers / scan_layers) changes the
    # compiled program, and with scan_layers=False how the layers' params are held.
    model, params = with_options(pre.model, partitioning.shard_params(pre.params, pre.model, mesh),
                                 mesh, **(layout or {}))
    data = batches(shape, args, model.vocab_size)
    prompt_length = 0 if tune_model else args.prompt_length
    if model.packs and not args.no_pack:
        packer = packing.Packer(rows=1, prefix_length=prompt_length,
                                keys_per_token=model.pack_keys_per_token())
        data = [packer(b) for b in data]
    opt = train.make_optimizer(train.OptimizerConfig(name="adamw", learning_rate=LR,
                                                     weight_decay=WEIGHT_DECAY))
    trainable = train.MODEL if tune_model else train.PROMPT
    make_step = lambda: train.make_train_step(model, opt, trainable=trainable)  # noqa: E731
    step = train.jit_train_step(make_step(), model, mesh, trainable)
    if tune_model:
        state, frozen = train.init_state(params, opt), None
    else:
        prompt = model.embed(params, jax.numpy.asarray(init_ids(args))).astype("float32")
        state, frozen = train.init_state(prompt, opt), params
    state = train.place_state(state, mesh)
    memory = memory_after_loading()
    holder = {"state": state}

    def one(batch):
        holder["state"], metrics = step(holder["state"], frozen, batch)
        return metrics["loss"]

    out = _timed(one, data, start)
    out["memory"] = memory_after_training(memory)
    out["compiles"] = step._cache_size()
    if args.profile:
        out["profile"] = profile_ours(step, holder["state"], frozen, data[-1])
    out["shape_buckets"] = len({tuple(np.asarray(b["inputs"]).shape) for b in data})
    out["real_tokens"] = [real_tokens(b) for b in data]
    out["needed_flops"] = [needed_flops(model, b, prompt_length) for b in data]
    out["threads"] = {"cores": len(os.sched_getaffinity(0)),
                      "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
    if not args.no_analysis:
        first = data[0]
        compiled = step.lower(holder["state"], frozen, first).compile()
        mem = compiled.memory_analysis()
        out["memory_analysis"] = {k: getattr(mem, k) for k in (
            "argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
            "alias_size_in_bytes", "generated_code_size_in_bytes")} if mem else None
        with layers.unrolled_scans():  # XLA counts a loop body once: count it unrolled
            fresh = train.jit_train_step(make_step(), model, mesh, trainable)
            cost = fresh.lower(holder["state"], frozen, first).cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        out["xla_flops_first"] = float(cost.get("flops", float("nan")))
        out["needed_flops_first"] = out["needed_flops"][0]
    return out


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


# The peer's variants: PEFT as users write it, and at its best (the head only where the loss
# reads) eager, compiled (torch.compile) and under bf16 autocast (where the CPU has bf16
# matmuls; a looser loss check); "PEFT at its best" in the tables is the fastest of those run.
PEER_VARIANTS = {"peft": {"best": False}, "peft-best": {"best": True},
                 "peft-compiled": {"best": True, "compile": True},
                 "peft-bf16": {"best": True, "bf16": True}}
BEST_PEERS = ("peft-best", "peft-compiled", "peft-bf16")


def peer_speedups(side: str):
    """The `peft_side.Speedups` of a peer variant on this machine (the GPU when there is one)."""
    import dataclasses

    from peft_side import Speedups

    found = Speedups.detect()
    variant = PEER_VARIANTS[side]
    return dataclasses.replace(found, compile=variant.get("compile", False),
                               bf16_autocast=variant.get("bf16", False))


def run_peft(shape: str, args, start: float, side: str = "peft") -> dict:
    import peft_side
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    source = model_source(shape, args.real)
    dtype = _torch_dtype(args.dtype)
    family = FAMILY[shape]
    if args.real:
        base = hf_class(shape).from_pretrained(source.parent, gguf_file=source.name, dtype=dtype)
    else:
        base = hf_class(shape).from_pretrained(source, dtype=dtype)
    data = batches(shape, args, base.config.vocab_size)
    best, speedups = PEER_VARIANTS[side]["best"], peer_speedups(side)
    with torch.no_grad():  # the same init as ours: the embedding module's output
        prompt = base.get_input_embeddings()(torch.tensor(init_ids(args)))
    model, weight = peft_side.wrap(base, family, args.prompt_length, prompt, best=best,
                                   speedups=speedups)
    one = peft_side.trainer(model, base, weight, family, args.prompt_length, best=best, lr=LR,
                            weight_decay=WEIGHT_DECAY, speedups=speedups)
    memory = memory_after_loading()
    out = _timed(one, data, start)
    out["memory"] = memory_after_training(memory)
    if args.profile:
        out["profile"] = profile_peft(one, data[-1])
    out["threads"] = {"torch": torch.get_num_threads(),
                      "torch_interop": torch.get_num_interop_threads(),
                      "cores": len(os.sched_getaffinity(0))}
    out["speedups"] = speedups.label()
    out["padded_tokens"] = [int(np.asarray(peft_side.exact(b)["inputs"]).size) for b in data]
    return out


def run_peak(args) -> dict:
    """Matmul peak FLOP/s of JAX and torch on this machine: the best of square products
    (1024, 2048, 4096 on a GPU too) in float32 and bfloat16, median of repeats."""
    import jax
    import jax.numpy as jnp
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    sizes = (1024, 2048) if jax.default_backend() == "cpu" else (2048, 4096, 8192)
    out = {}
    for dtype in ("float32", "bfloat16"):
        best_jax = best_torch = 0.0
        for n in sizes:
            a = jnp.asarray(np.random.default_rng(0).random((n, n)), dtype)
            f = jax.jit(lambda x, y: x @ y)
            f(a, a).block_until_ready()
            times = []
            for _ in range(args.peak_repeats):
                t0 = time.perf_counter()
                f(a, a).block_until_ready()
                times.append(time.perf_counter() - t0)
            best_jax = max(best_jax, 2 * n**3 / statistics.median(times))
            if jax.default_backend() == "cpu":
                t = torch.rand(n, n, dtype=_torch_dtype(dtype))
                t @ t
                times = []
                for _ in range(args.peak_repeats):
                    t0 = time.perf_counter()
                    t @ t
                    times.append(time.perf_counter() - t0)
                best_torch = max(best_torch, 2 * n**3 / statistics.median(times))
        out[dtype] = {"jax": best_jax, "torch": best_torch or None}
    out["torch_blas"] = "mkl" if torch.backends.mkl.is_available() else "other"
    return out



# -- where the time goes --------------------------------------------------------------------

def _category(op_name: str) -> str:
    """An XLA op's part of the step, from the JAX source path in its metadata."""
    import re

    bwd = "transpose(" in op_name
    matmul = "dot_general" in op_name
    if re.search(r"/(mlp|wi|wo|gate|up|down)/", op_name):
        part = "FFN matmuls" if matmul else "FFN elementwise"
    elif re.search(r"/(q|k|v|o)/dot_general", op_name):
        part = "attention projections"
    elif re.search(r"/(attn|self_attn|cross_attn|relpos_bias)/", op_name) or (
            "softmax" in op_name and "log_softmax" not in op_name):
        part = "attention scores and mixing"
    elif re.search(r"head|attend|mlm_logits|log_softmax", op_name):
        part = "head"
    elif "norm" in op_name:
        part = "norms"
    elif "jvp(" not in op_name and "transpose(" not in op_name:
        part = "optimizer and glue"
    else:
        part = "other (layer loop copies, embeddings, gathers)"
    return f"{part}, {'backward' if bwd else 'forward'}"


def profile_ours(step, state, frozen, batch, repeats: int = 3) -> dict:
    """Seconds per step by part (a jax.profiler trace of `repeats` steps on one batch, each
    XLA op mapped to its source through the compiled HLO's metadata), and the host's share:
    wall time not spent in XLA ops."""
    import gzip
    import re
    import tempfile

    import jax

    compiled = step.lower(state, frozen, batch).compile().as_text()
    source = {m.group(1): m.group(2) for m in re.finditer(
        r"%([\w.\-]+) = .*?op_name=\"([^\"]*)\"", compiled)}
    untraced = []
    for _ in range(2 + repeats):
        t0 = time.perf_counter()
        state, metrics = step(state, frozen, batch)
        float(metrics["loss"])
        untraced.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as directory:
        t0 = time.perf_counter()
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            for _ in range(repeats):
                state, metrics = step(state, frozen, batch)
                float(metrics["loss"])
        wall = (time.perf_counter() - t0) / repeats
        trace = next(Path(directory).rglob("*.trace.json.gz"))
        events = json.load(gzip.open(trace))
    events = events["traceEvents"] if isinstance(events, dict) else events
    parts: dict[str, float] = {}
    ops: dict[str, float] = {}
    for e in events:
        if e.get("ph") == "X" and e.get("name") in source:
            key = _category(source[e["name"]])
            parts[key] = parts.get(key, 0.0) + e["dur"] / 1e6 / repeats
            op = e["name"].rstrip("0123456789.") + " " + source[e["name"]].split("/", 1)[-1]
            ops[op] = ops.get(op, 0.0) + e["dur"] / 1e6 / repeats
    device = sum(parts.values())
    # The profiler slows the step (its own events, thread switches): the traced wall time
    # less the XLA ops' time is that overhead plus dispatch and gaps, not host time alone.
    parts["no XLA op running while traced (dispatch, gaps, profiler overhead)"] = max(
        wall - device, 0.0)
    return {"step_seconds_traced": wall,
            "step_seconds_untraced": statistics.median(untraced[2:]),
            "parts": dict(sorted(parts.items(), key=lambda x: -x[1])),
            "top_ops": dict(sorted(ops.items(), key=lambda x: -x[1])[:15])}


def profile_peft(one, batch, repeats: int = 3) -> dict:
    """Self CPU seconds per step of PEFT's top torch ops (torch.profiler)."""
    import torch

    for _ in range(2):
        one(batch)
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            one(batch)
    wall = (time.perf_counter() - t0) / repeats
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
    return {"step_seconds_traced": wall,
            "parts": {e.key: e.self_cpu_time_total / 1e6 / repeats for e in ops}}


# -- the parent ------------------------------------------------------------------------------

def child(args, side: str, shape: str = "") -> dict:
    """Runs one side (or the peak) in a subprocess and returns its RESULT."""
    cmd = [sys.executable, __file__, *sys.argv[1:], "--only", side]
    if shape:
        cmd += ["--shape", shape]
    out = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        sys.exit(f"{side} {shape} failed:\n{out.stderr[-4000:]}")
    return json.loads(line[len("RESULT "):])


def summarize(r: dict, batch_size: int, peak: float) -> dict:
    """Medians and totals of one side's run (first step excluded from the medians)."""
    times = r["step_seconds"]
    later = times[1:] or times
    median = statistics.median(later)
    s = {"examples_per_second": batch_size / median, "median_step_seconds": median,
         "total_seconds": sum(times), "first_step_seconds": r["first_step_seconds"],
         "first_loss": r["losses"][0]}
    if "real_tokens" in r:
        tokens = r["real_tokens"][1:] or r["real_tokens"]
        s["tokens_per_second"] = statistics.median(tokens) / median
    if "needed_flops" in r:
        flops = sum(r["needed_flops"][1:] or r["needed_flops"])
        s["needed_flop_per_second"] = flops / sum(later)
        s["utilization"] = s["needed_flop_per_second"] / peak
    return s


def compare(shape: str, rows: dict, args, peak: dict) -> dict:
    """Checks the first step's loss across sides, then the summary of each side."""
    ref = rows["ours"]["losses"][0]
    for side, r in rows.items():
        if side == "model":
            continue
        tol = 2e-2 if args.dtype == "bfloat16" or side == "peft-bf16" else 2e-4
        if abs(r["losses"][0] - ref) > tol * max(1.0, abs(ref)):
            sys.exit(f"{shape}: first-step loss differs, ours {ref:.6f} vs {side} "
                     f"{r['losses'][0]:.6f}: not timing a different computation")
    machine_peak = max(v for v in peak[args.dtype].values() if v)
    ours = rows["ours"]
    out = {"sides": {}}
    for side, r in rows.items():
        if side != "ours" and "needed_flops" not in r:  # the same FLOPs on both sides
            r = {**r, "needed_flops": ours["needed_flops"], "real_tokens": ours["real_tokens"]}
        out["sides"][side] = summarize(r, args.batch_size, machine_peak) | {
            "memory": r["memory"], "threads": r.get("threads")}
        if "speedups" in r:
            out["sides"][side]["speedups"] = r["speedups"]
        if "profile" in r:
            out["sides"][side]["profile"] = r["profile"]
    for key in ("compiles", "shape_buckets", "memory_analysis", "xla_flops_first",
                "needed_flops_first"):
        out[key] = ours.get(key)
    if "model" in rows:
        out["model_tuning"] = {"compiles": rows["model"].get("compiles"),
                               "memory_analysis": rows["model"].get("memory_analysis")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(DEFAULT_SIDES),
                        help="peft-compiled (torch.compile) and peft-bf16 (bf16 autocast, where "
                        "the CPU has it) are PEFT at its best with more switched on")
    parser.add_argument("--real", action="store_true",
                        help="real weights and SST-2 batches (decoder-only shapes)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128,
                        help="longest input (synthetic lengths are uniform in [1/4, 1] of it)")
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--no-pack", action="store_true", help="ours without packing")
    parser.add_argument("--no-analysis", action="store_true",
                        help="skip XLA's memory and cost analyses (two more compilations)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one step of each side (on the last batch)")
    parser.add_argument("--peak-repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true",
                        help="make bench: synthetic smollm2-135m, t5-small, roberta-base, "
                        "12 steps, 64-token inputs")
    parser.add_argument("--label", default="", help="results file suffix")
    parser.add_argument("--output", help="the JSON's path ('' = none)")
    parser.add_argument("--docs", "--readme", dest="readme", action="store_true",
                        help="write the block into docs/results.md")
    parser.add_argument("--from-json", metavar="PATH",
                        help="print the tables of a stored result (with --docs: write its "
                        "docs block) without running anything")
    parser.add_argument("--peers", action="store_true",
                        help="print the ratios against PEFT of every stored result (with "
                        "--docs: write its docs block) without running anything")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peers:
        block = peers_block()
        print(block)
        if args.readme:
            sys.path.insert(0, str(HERE))
            from readme_block import write_block

            write_block("step_bench_peers", block)
        return
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
        print(table(result))
        if args.readme:
            sys.path.insert(0, str(HERE))
            from readme_block import write_block

            write_block(readme_name(args.from_json), readme_block(result, args.from_json))
        return
    if args.quick:
        args.shapes = [s for s in args.shapes if s in ("smollm2-135m", "t5-small",
                                                         "roberta-base")] if (
            args.shapes != list(SHAPES)) else ["smollm2-135m", "t5-small", "roberta-base"]
        args.steps, args.seq_len = min(args.steps, 12), min(args.seq_len, 64)
        args.label = args.label or "quick"
    if args.real and any(s not in REAL for s in args.shapes):
        sys.exit(f"--real takes the decoder-only shapes only: {sorted(REAL)}")
    if args.only:
        sys.path.insert(0, str(HERE))
        start = time.perf_counter()
        if args.only == "peak":
            result = run_peak(args)
        elif args.only == "ours":
            result = run_ours(args.shape, args, start)
        elif args.only in LAYOUTS:
            result = run_ours(args.shape, args, start, layout=LAYOUTS[args.only])
        elif args.only == "model":
            result = run_ours(args.shape, args, start, tune_model=True)
        else:
            result = run_peft(args.shape, args, start, side=args.only)
        print("RESULT " + json.dumps(result))
        return
    sys.path.insert(0, str(HERE))
    import machine
    from peft_side import Speedups

    for shape in args.shapes:  # build the random checkpoints before any timing
        model_source(shape, args.real)
    result = {"machine": machine.describe(), "command": " ".join(sys.argv[1:]),
              "recipe": {k: getattr(args, k) for k in (
                  "real", "steps", "batch_size", "seq_len", "prompt_length", "dtype",
                  "no_pack")}, "peak": child(args, "peak"), "shapes": {}}
    output = args.output if args.output is not None else str(
        RESULTS / f"step_bench{'_' + args.label if args.label else ''}.json")
    for shape in args.shapes:
        sides = [s for s in args.sides if not (s == "peft-best" and FAMILY[shape] == "t5")
                 and not (s in LAYOUTS and FAMILY[shape] != "causal")
                 and not (s == "peft-bf16" and not Speedups.detect().bf16_autocast)]
        rows = {side: child(args, side, shape) for side in sides}
        result["shapes"][shape] = compare(shape, rows, args, result["peak"])
        if output:
            write_result(output, result, indent=1)
        print(table(result), flush=True)
    if args.readme:
        from readme_block import write_block

        write_block(readme_name(output), readme_block(result, output))


# -- tables ----------------------------------------------------------------------------------

def _gb(mb: float) -> str:
    return f"{mb / 1024:.2f} GB"


def table(result: dict) -> str:
    """The summary: one row per shape and side, ratios against ours."""
    peak, dtype = result["peak"], result["recipe"]["dtype"]
    lines = [f"Matmul peak ({dtype}): JAX {peak[dtype]['jax'] / 1e9:.0f} GFLOP/s"
             + (f", torch {peak[dtype]['torch'] / 1e9:.0f} GFLOP/s" if peak[dtype]["torch"]
                else ""), "",
             "| shape | side | examples/s | ours / side | tokens/s | total time | ours / side "
             "(total) | first step | needed GFLOP/s | of peak | peak RSS | training peak RSS |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for shape, s in result["shapes"].items():
        ours = s["sides"]["ours"]
        for side, r in s["sides"].items():
            speed = (f"{ours['examples_per_second'] / r['examples_per_second']:.2f}x"
                     if side not in ("ours", "model") else "")
            total = (f"{r['total_seconds'] / ours['total_seconds']:.2f}x"
                     if side not in ("ours", "model") else "")
            lines.append(
                f"| {shape} | {side} | {r['examples_per_second']:.2f} | {speed} | "
                f"{r.get('tokens_per_second', 0):.0f} | {r['total_seconds']:.1f} s | {total} | "
                f"{r['first_step_seconds']:.1f} s | "
                f"{r.get('needed_flop_per_second', 0) / 1e9:.1f} | "
                f"{r.get('utilization', 0):.1%} | {_gb(r['memory']['max_rss_mb'])} | "
                f"{_gb(r['memory']['train_peak_rss_mb'])} |")
    lines += [f"\n{x}" for x in (layout_reading(shape, s["sides"], result["recipe"]["steps"])
                                  for shape, s in result["shapes"].items()) if x]
    lines += ["", "| shape | step compiles / shape buckets | XLA GFLOP (first batch) | needed "
              "GFLOP | XLA temp memory, prompt / model tuning | training peak RSS, prompt / "
              "model tuning |", "|---|---|---|---|---|---|"]
    for shape, s in result["shapes"].items():
        ma, mt = s.get("memory_analysis") or {}, (s.get("model_tuning") or {}).get(
            "memory_analysis") or {}
        sides = s["sides"]
        rss = ""
        if "model" in sides:
            a, b = sides["ours"]["memory"], sides["model"]["memory"]
            rss = (f"{_gb(a['train_peak_rss_mb'])} / {_gb(b['train_peak_rss_mb'])} "
                   f"({a['train_peak_rss_mb'] / b['train_peak_rss_mb']:.2f}x)")
        temp = (f"{ma.get('temp_size_in_bytes', 0) / 2**20:.0f} / "
                f"{mt.get('temp_size_in_bytes', 0) / 2**20:.0f} MB" if ma and mt else "")
        xla = s.get("xla_flops_first")
        lines.append(f"| {shape} | {s.get('compiles')} / {s.get('shape_buckets')} | "
                     f"{xla / 1e9:.1f} | {s.get('needed_flops_first', 0) / 1e9:.1f} | {temp} | "
                     f"{rss} |" if xla else f"| {shape} | {s.get('compiles')} / "
                     f"{s.get('shape_buckets')} | | | {temp} | {rss} |")
    for shape, s in result["shapes"].items():
        for side, r in s["sides"].items():
            if "profile" in r:
                prof = r["profile"]
                total = prof["step_seconds_traced"]
                plain = prof.get("step_seconds_untraced")
                plain = f"; {plain:.3f} s untraced" if plain else ""
                lines += ["", f"Where the time goes: {shape}, {side} (one step of the last batch, "
                          f"{total:.3f} s traced{plain})", "", "| part | seconds | share |",
                          "|---|---|---|"]
                lines += [f"| {k} | {v:.3f} | {v / total:.0%} |"
                          for k, v in prof["parts"].items() if v / total >= 0.005]
    return "\n".join(lines)


LAYOUT_NAMES = {"ours": "stacked layers scanned (`scan_layers=True`, the default)",
                "ours-unrolled": "the scan unrolled (`unroll_layers=True`)",
                "ours-per-layer": "each layer's params apart (`scan_layers=False`)"}


def layout_reading(shape: str, sides: dict, steps: int, run_steps: int = 320) -> str:
    """Which layer layout a backend should default to, read from one shape's timed sides: the
    fastest per step, and the fastest over a cold run of `run_steps` steps (the demo's): each
    layout's timed total over `steps` (compiles included) plus its median step for the rest."""
    found = {k: sides[k] for k in LAYOUT_NAMES if k in sides}
    if len(found) < 2 or "ours" not in found:
        return ""
    step = {k: r["median_step_seconds"] for k, r in found.items()}
    whole = {k: r["total_seconds"] + (run_steps - steps) * step[k] for k, r in found.items()}
    fast, best = min(step, key=step.get), min(whole, key=whole.get)
    text = (f"Layer layout, {shape}: the fastest step is `{fast}`'s, {LAYOUT_NAMES[fast]} "
            f"({step['ours'] / step[fast]:.2f}x the default's speed); over a cold "
            f"{run_steps}-step run (the timed total, compiles included, plus "
            f"{run_steps - steps} median steps) the fastest is `{best}`, {LAYOUT_NAMES[best]}: "
            + ", ".join(f"`{k}` {whole[k]:.0f} s" for k in whole) + ".")
    if fast != "ours" and best == "ours":
        extra = found[fast]["total_seconds"] - found["ours"]["total_seconds"]
        text += (f" `{fast}` repays its longer compile after about "
                 f"{steps + extra / (step['ours'] - step[fast]):.0f} steps, or from the first "
                 "step when the persistent compilation cache is warm.")
    return text


PEER_RESULTS = ("step_bench_quick", "step_bench_real_smollm2", "step_bench_real_gemma3",
                "step_bench_t5_base")


def peers_block(names: tuple[str, ...] = PEER_RESULTS) -> str:
    """Ours against PEFT as users write it and at its best, per step and on total time, for
    every shape of the stored results `names` (under benchmarks/results/), with a computed
    reading: where we are slower on total time is said, not left out."""
    lines = ["| result | shape | data | ours / PEFT as written, per step | total time | "
             "ours / PEFT at its best, per step | total time |", "|---|---|---|---|---|---|---|"]
    rows = {"peft": [], "peft-best": []}  # (shape (result), per step, total)
    for name in names:
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        data = "SST-2, real weights" if result["recipe"]["real"] else "random weights"
        for shape, s in result["shapes"].items():
            ours = s["sides"]["ours"]
            cells = []
            for side in ("peft", "peft-best"):
                r = s["sides"].get(side) if side == "peft" else best_peer(s["sides"])
                if r is None:
                    cells += ["-", "-"]
                    continue
                step = ours["examples_per_second"] / r["examples_per_second"]
                total = r["total_seconds"] / ours["total_seconds"]
                cells += [f"{step:.2f}x", f"{total:.2f}x"]
                rows[side].append((f"{shape} ({name})", step, total))
            lines.append(f"| `{name}.json` | {shape} | {data} | " + " | ".join(cells) + " |")

    def reading(side: str, label: str) -> str:
        found = rows[side]
        slower = [f"{n} {t:.2f}x" for n, _, t in found if round(t, 2) < 1]
        level = [n for n, _, t in found if round(t, 2) == 1]
        return (f"Against PEFT {label}, prompt_jax is faster per step on "
                f"{sum(step > 1 for _, step, _ in found)} of {len(found)} shapes; on total time "
                "it is slower on " + (f"{len(slower)} ({'; '.join(slower)})" if slower else "none")
                + (f" and level on {len(level)} ({'; '.join(level)})" if level else "") + ".")

    return "\n".join(lines + [
        "", "Ratios above 1x: prompt_jax is faster. Per step is the median step (first "
        "excluded); total time is every step with compilation included, which short runs like "
        "these weigh heavily (XLA compiles once per shape bucket, PyTorch runs eagerly).", "",
        reading("peft-best", "at its best (the comparison to read first)"), "",
        reading("peft", "as users write it"), "",
        "T5 has no PEFT-at-its-best row: its `labels=` loss already computes only the target "
        "positions."])


def best_peer(sides: dict) -> dict | None:
    """PEFT at its best among a shape's sides: the fastest median step of `BEST_PEERS` run."""
    found = [sides[k] for k in BEST_PEERS if k in sides]
    return max(found, key=lambda r: r["examples_per_second"]) if found else None


def readme_name(output: str) -> str:
    """The docs block of a result file: its name without `.json`."""
    return Path(output).stem


def readme_block(result: dict, output: str) -> str:
    sys.path.insert(0, str(HERE))
    import machine

    r = result["recipe"]
    data = "SST-2 batches, real weights" if r["real"] else (
        f"random weights and token batches, inputs of {r['seq_len'] // 4}-{r['seq_len']} tokens")
    return "\n".join([
        machine.measured(result, "step_bench.py", (
            f"{data}; batch {r['batch_size']}, {r['prompt_length']} prompt vectors, "
            f"{r['steps']} steps, AdamW, {r['dtype']}"),
            Path(output).resolve().relative_to(HERE.parent) if output else "-") + " "
        "examples/s from the median step (first excluded); total time includes every "
        "compilation; the loss of the first step is equal on every side before anything is "
        "timed.", "", table(result)])


if __name__ == "__main__":
    main()
