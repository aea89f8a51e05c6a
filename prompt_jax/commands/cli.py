"""`prompt-jax` command line: thin wrappers over the library.

Each `*_commands` module owns its subcommands: `add_parser(sub)` adds them (each sets
`func=<module>.main`), and `main(args)` runs one. This module only assembles the parser and
turns the library's errors into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from prompt_jax.commands import (
    model_commands,
    projector_commands,
    prompts_commands,
    run_commands,
    serve_commands,
    transfer_commands,
)
from prompt_jax.commands.common import COMPILING, import_tensorflow_quietly, use_compilation_cache

__all__ = ["build_parser", "import_tensorflow_quietly", "main"]

# In the order `prompt-jax --help` lists them.
COMMAND_MODULES = (model_commands, run_commands, serve_commands, prompts_commands,
                   transfer_commands, projector_commands)


def build_parser() -> argparse.ArgumentParser:
    """The `prompt-jax` argument parser (every subcommand and flag)."""
    parser = argparse.ArgumentParser(prog="prompt-jax", description=__doc__.splitlines()[0])
    parser.add_argument("--no_compilation_cache", action="store_true",
                        help="do not keep compiled programs on disk (by default JAX's persistent "
                             "compilation cache is on, in $PROMPT_JAX_CACHE/jax, so a second run "
                             "of the same shapes does not compile again)")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parses `argv` (default: the command line) and runs the subcommand."""
    args = build_parser().parse_args(argv)
    if args.command in COMPILING:
        use_compilation_cache(not args.no_compilation_cache)
    try:
        args.func(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError, FloatingPointError) as e:
        print(f"prompt-jax {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
