"""`prompt-jax train|eval|infer`: one run from gin files and plain flags.

The one place a command resolves its `RunConfig` (`resolve_config`: gin files, `--gin_param`
bindings, then the plain flags, which win) and says what is written beside the run's outputs
(`config_files`: the gin config). The run itself claims its output folder once and writes
them there (`run.train_trainable`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence

from prompt_jax.commands import serve_commands
from prompt_jax.commands.common import import_tensorflow_quietly, print_once

RUN_FLAGS = (  # plain flags for the common things; everything else through gin
    ("--model", str, "REAL_MODELS name, local directory or file, or hub id"),
    ("--task", str, "registered task name (see `prompt-jax tasks`)"),
    ("--template", str, "your own hand-written template, e.g. 'Review: {text_a}\\nSentiment:'"),
    ("--prompt_length", int, "number of soft-prompt vectors"),
    ("--init", str, "prompt init: random_uniform, sampled_vocab, class_labels, text, from_array"),
    ("--init_prompt", str, "--init from_array: the prompt file to start from (e.g. the "
                           "start.npy of `transfer suggest`)"),
    ("--tune", str, "what is trained: prompt (default) or model (every weight, no prompt)"),
    ("--steps", int, "training steps"),
    ("--batch_size", int, "training batch size"),
    ("--learning_rate", float, "learning rate"),
    ("--output_dir", str, "where checkpoints, metrics and prompts go"),
    ("--eval_limit", int, "evaluate on a random sample of N examples of the split (seeded: "
                          "the same N rows every run; 0 = all)"),
)


def resolve_config(gin_files: Sequence[str], gin_params: Sequence[str],
                   overrides: Mapping[str, object]):
    """The `RunConfig` of gin files, bindings, then plain flags (None values ignored)."""
    from prompt_jax.commands import gin_config

    return gin_config.resolve(gin_files, gin_params, dict(overrides))


def config_files() -> dict[str, str]:
    """Files the run writes beside its `config.json` once its folder is claimed: the gin
    config just resolved (`config.gin`)."""
    from prompt_jax.commands import gin_config

    return {"config.gin": gin_config.operative_config()}


def add_task_file_flags(p) -> None:
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
    g.add_argument("--task_spec", help="a file task made again from its stored definition: a "
                                       "run's task_spec.json or a prompt's .json sidecar (a "
                                       "prompt given by --prompt brings its own)")


def define_task_from_flags(args) -> None:
    """Registers the `--task_file` task (if any) under `--task` or the file's stem, or the
    `--task_spec` one, before the run config is resolved; `--template` becomes a file task's
    template (naming its text fields)."""
    files = (args.task_file, args.task_eval_file, args.task_test_file)
    if getattr(args, "task_spec", None):
        from prompt_jax.tasks import task_spec

        if any(files):
            raise ValueError("give --task_spec (a stored task) or --task_file (a new one), "
                             "not both")
        name = task_spec.define_from_file(args.task_spec)
        if args.task not in (None, name):
            raise ValueError(f"--task {args.task!r} but --task_spec {args.task_spec} defines "
                             f"task {name!r}")
        args.task = name
        return
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


def add_distributed_flags(p) -> None:
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


def start_distributed(args) -> None:
    """Joins the multi-process job the flags (or the environment) name, before any device is
    touched; a single-process job when none is named."""
    from prompt_jax import distributed

    distributed.initialize(distributed.DistributedConfig(
        coordinator_address=args.coordinator_address, num_processes=args.num_processes,
        process_id=args.process_id, auto=args.distributed,
        initialization_timeout=args.init_timeout, heartbeat_timeout=args.heartbeat_timeout,
        shutdown_timeout=args.init_timeout))


def add_run_flags(p) -> None:
    p.add_argument("--gin_file", action="append", default=[],
                   help="gin config file (repeatable; also looked up in gin_configs/)")
    p.add_argument("--gin_param", action="append", default=[],
                   help="gin binding, e.g. RunConfig.steps=100 (repeatable)")
    for flag, kind, text in RUN_FLAGS:
        p.add_argument(flag, type=kind, help=text)
    add_task_file_flags(p)
    add_distributed_flags(p)


def run_config(args):
    """The run's `RunConfig` from the command's gin files and plain flags; for `eval` and
    `infer --prompt`, the prompt's own task and model where neither flags nor gin name them
    (`from_prompt`)."""
    define_task_from_flags(args)
    config = resolve_config(args.gin_file, args.gin_param,
                            {flag[2:]: getattr(args, flag[2:]) for flag, _, _ in RUN_FLAGS})
    return from_prompt(args, config)


def from_prompt(args, config):
    """`config` with a saved prompt's task and model (`--prompt`'s sidecar), so that the
    prompt file alone evaluates or infers in a new process: a file task is made again from
    its stored definition (a changed file is reported), and the task and model fill in what
    neither a flag nor gin set (gin's values equal to the defaults count as unset)."""
    import dataclasses

    from prompt_jax.tasks import task_spec
    from prompt_jax.training.run import RunConfig

    prompt = getattr(args, "prompt", None)
    if not prompt or args.task_file or args.task_eval_file or args.task_test_file \
            or args.task_spec:
        return config
    metadata = task_spec.prompt_metadata(prompt)
    defaults, changes = RunConfig(), {}
    task = metadata.get("task")
    unset = args.task is None and config.task == defaults.task
    if task and (unset or config.task == task):
        changes["task"] = task_spec.define_from_metadata(metadata, where=prompt) or task
    if args.model is None and config.model == defaults.model and metadata.get("model"):
        changes["model"] = metadata["model"]
    return dataclasses.replace(config, **changes)


def _train(args) -> None:
    from prompt_jax.training import run

    config = run_config(args)
    files = config_files()
    start_distributed(args)
    summary = run.train_prompt(config, resume=args.resume, overwrite=args.overwrite,
                               config_files=files)
    print_once(json.dumps(summary, indent=2))


def _eval(args) -> None:
    from prompt_jax.training import run

    config = run_config(args)
    start_distributed(args)
    metrics = run.evaluate_prompt(config, args.prompt, args.split)
    print_once(json.dumps({"task": config.task, "template": config.template or None,
                           "prompt": args.prompt, **metrics}, indent=2))


def _infer(args) -> None:
    from prompt_jax.training import run

    config = run_config(args)
    start_distributed(args)
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
        print_once(f"{label}\t{text}")


COMMANDS = {"train": _train, "eval": _eval, "infer": _infer}


def main(args) -> None:
    """Runs `train`, `eval` or `infer`."""
    import_tensorflow_quietly()  # seqio inside
    COMMANDS[args.command](args)


def add_parser(sub) -> None:
    """Adds `train`, `eval` and `infer` to the `prompt-jax` subparsers."""
    p = sub.add_parser("train", help="train a soft prompt on a task")
    add_run_flags(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in --output_dir")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an --output_dir that holds a previous run (its "
                        "checkpoints and metrics are deleted)")
    p.set_defaults(func=main)
    p = sub.add_parser("eval", help="evaluate a saved prompt (or the template alone) on a task")
    add_run_flags(p)
    p.add_argument("--prompt", help="prompt file (any format prompts ls reads); without it, "
                                    "the hand-written template alone (zero-shot)")
    p.add_argument("--split", help="split to evaluate (default: RunConfig.eval_split)")
    p.set_defaults(func=main)
    p = sub.add_parser("infer", help="classify texts with a saved prompt, or JSON lines of "
                                     "many tasks with a bank of prompts (--bank)")
    add_run_flags(p)
    p.add_argument("--prompt", help="prompt file (any format prompts ls reads)")
    p.add_argument("--text", action="append", help="input text (repeatable; default: stdin)")
    serve_commands.add_bank_flags(p)
    p.add_argument("--input", help="with --bank: JSON lines {\"task\", \"text\"[, \"text_b\", "
                                   "\"id\"]} (default: stdin)")
    p.add_argument("--output", help="with --bank: where the answers go, one JSON line each "
                                    "(default: stdout)")
    p.set_defaults(func=main)
