"""Soft prompts: initializers and placement (`initializers`, re-exported here), prompt files in
and out (`files`), their formats (`formats`), the released-prompt registry (`registry`) and the
safe readers of untrusted files (`torch_pickle`, `safetensors_file`)."""

from prompt_jax.prompts.initializers import (
    INITS,
    PLACEMENTS,
    EmbedFn,
    PromptSet,
    check_length,
    class_labels,
    from_array,
    insert_prompt,
    insertion_points,
    prompted_inputs,
    random_uniform,
    sampled_vocab,
    shift_positions,
    text,
)

__all__ = [
    "INITS", "PLACEMENTS", "EmbedFn", "PromptSet", "check_length", "class_labels", "from_array",
    "insert_prompt", "insertion_points", "prompted_inputs", "random_uniform", "sampled_vocab",
    "shift_positions", "text",
]
