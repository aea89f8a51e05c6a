"""Where the real released prompts are: $PROMPT_JAX_SHARED or ../shared from the repo root."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_prompts_dir() -> Path:
    """The `prompts/` folder of the shared data; a clear error (not a skip) when it is absent."""
    root = Path(os.environ.get("PROMPT_JAX_SHARED") or REPO.parent / "shared")
    prompts = root / "prompts"
    if not prompts.is_dir():
        raise FileNotFoundError(
            f"{prompts}: the released prompts are missing; set PROMPT_JAX_SHARED to the folder "
            "holding prompts/ (see ../shared/README.md)"
        )
    return prompts
