"""Soft prompts: initializers and placement (`initializers`, whose names are re-exported here),
prompt files in and out (`files`), their formats (`formats`), the released-prompt registry
(`registry`) and the safe readers of untrusted files (`torch_pickle`, `safetensors_file`).

The initializer names load on first use, so that reading a prompt file
(`prompt_jax.prompts.files`) imports neither JAX nor the models.
"""

from __future__ import annotations

import importlib

__all__ = [
    "INITS", "PLACEMENTS", "EmbedFn", "PromptSet", "check_length", "class_labels", "from_array",
    "initial_prompt", "insert_prompt", "insertion_points", "prompted_inputs", "random_uniform",
    "sampled_vocab", "shift_positions", "text",
]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("prompt_jax.prompts.initializers"), name)
    raise AttributeError(f"module 'prompt_jax.prompts' has no attribute {name!r}")
