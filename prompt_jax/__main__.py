"""`python -m prompt_jax ...` is the `prompt-jax` command."""

from prompt_jax.commands.cli import main

if __name__ == "__main__":
    main()
