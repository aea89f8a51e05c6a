"""Cross-task prompt transfer (Su et al. 2022) on one loaded model.

Everything here stands on `prompt_jax.engine`: the model loads once, and only [P, H] prompts
move between tasks. Each piece of work writes one JSON file when it finishes (a source prompt's
run, a matrix cell, a transfer-initialized run) and skips the work whose file exists, so a
killed command continues where it stopped. One module per concept:

- `runs`: `train_sources`, one soft prompt per source task by one recipe (`SourceRecipe`),
  resumable at the level of whole runs (`train_run`), and the atomic JSON files;
- `matrix`: `zero_shot_matrix`, every source prompt, plus the controls "no prompt" and "a
  random prompt of the sources' norm", on every target task, each target with its own
  template and verbalizers; `matrix_arrays` divides by the target's own prompt's score (the
  paper's relative measure);
- `report`: `write_matrix` (the CSV, the markdown tables and the heatmap PNG) and
  `plot_init_curves`;
- `init`: `init_runs`, a target prompt trained from a source prompt, from a SPoT-style mix of
  the top-k sources ranked by an indicator (`spot_mix`), or from the recipe's own init, with
  the steps it takes to reach 90% of the baseline's final gain over zero-shot
  (`steps_to_fraction`, `init_summary`; `stored_init_runs` reads back every stored run);
- `indicators`: the indicators of `prompt_jax.indicators` for every pair of prompts (ON in the
  paper's mode and on real target inputs), and their rank correlation with transfer;
- `tuned`: `domain_shift`, a prompt and a tuned model of one task, zero-shot on other tasks
  (Lester et al. 2021: the prompt is more robust), and `restore_tuned_params`.

The public names of every module are re-exported here (`transfer.train_sources`, ...); the
`prompt-jax transfer` command is `prompt_jax.commands.transfer_commands`.
"""

from prompt_jax.transfer.indicators import (
    EMBEDDING_INDICATORS,
    ON_MODES,
    correlations,
    embedding_indicators,
    label_positions,
    neuron_overlaps,
    neuron_overlaps_by_layers,
    per_target_correlations,
    similarity_to,
)
from prompt_jax.transfer.init import (
    BASELINE,
    init_run_name,
    init_run_path,
    init_runs,
    init_summary,
    speedup_text,
    spot_mix,
    steps_to_fraction,
    stored_init_runs,
)
from prompt_jax.transfer.matrix import (
    CONTROLS,
    NO_PROMPT,
    RANDOM_PROMPT,
    SHARED_TEXT,
    matrix_arrays,
    ordered_cells,
    random_control,
    scored_split,
    shares_text,
    zero_shot_matrix,
)
from prompt_jax.transfer.report import markdown_table, plot_init_curves, write_matrix
from prompt_jax.transfer.runs import (
    SourceRecipe,
    load_prompts,
    read_json,
    train_run,
    train_sources,
    write_json,
)
from prompt_jax.transfer.tuned import domain_shift, restore_tuned_params

__all__ = [
    "BASELINE", "CONTROLS", "EMBEDDING_INDICATORS", "NO_PROMPT", "ON_MODES", "RANDOM_PROMPT",
    "SHARED_TEXT", "SourceRecipe", "correlations", "domain_shift", "embedding_indicators",
    "init_run_name", "init_run_path", "init_runs", "init_summary", "label_positions",
    "load_prompts", "markdown_table", "matrix_arrays", "neuron_overlaps",
    "neuron_overlaps_by_layers", "ordered_cells", "per_target_correlations",
    "plot_init_curves", "random_control", "read_json", "restore_tuned_params", "scored_split",
    "shares_text", "similarity_to", "speedup_text", "spot_mix", "steps_to_fraction",
    "stored_init_runs", "train_run", "train_sources", "write_json", "write_matrix",
    "zero_shot_matrix",
]
