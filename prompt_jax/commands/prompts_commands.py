"""`prompt-jax prompts ls|convert`: the prompts a folder holds, and prompts between formats."""

from __future__ import annotations


def _ls(args) -> None:
    from prompt_jax.prompts.registry import format_listing, list_prompts

    print(format_listing(list_prompts(args.path)))


def _convert(args) -> None:
    from prompt_jax.prompts import files as prompt_io
    from prompt_jax.prompts.formats import PEFT_TASK_TYPES
    from prompt_jax.prompts.registry import BACKBONES, identify

    prompt = prompt_io.load_prompt(args.src)
    known = identify(prompt_io.split_spec(args.src)[0], prompt.array.shape)
    backbone = BACKBONES[known.backbone] if known else None
    metadata = {}
    if args.to == "peft":
        task_type = args.task_type or prompt.metadata.get("task_type") or (
            PEFT_TASK_TYPES.get(backbone.family) if backbone else None)
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


def main(args) -> None:
    """Runs `prompts ls` or `prompts convert`."""
    {"ls": _ls, "convert": _convert}[args.prompts_command](args)


def add_parser(sub) -> None:
    """Adds `prompts` (with `ls` and `convert`) to the `prompt-jax` subparsers."""
    group = sub.add_parser("prompts", help="list and convert released soft prompts")
    group.set_defaults(func=main)
    prompts_sub = group.add_subparsers(dest="prompts_command", required=True)
    p = prompts_sub.add_parser("ls", help="table of the prompts a folder holds")
    p.add_argument("path", help="folder (or one prompt file / adapter folder)")
    p = prompts_sub.add_parser("convert", help="convert a prompt between formats")
    p.add_argument("src", help="prompt file or folder; PATH::KEY picks a tensor in a container")
    p.add_argument("dst", help="output file (for peft: the adapter folder)")
    p.add_argument("--to", required=True, choices=["peft", "npy", "torch", "prompt_jax"])
    p.add_argument("--task-type", help="PEFT task_type (default: from the backbone if known)")
    p.add_argument("--base-model", help="PEFT base_model_name_or_path (default: from the "
                                        "backbone if known)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
