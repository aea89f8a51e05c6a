"""The main job: prompt tuning a real frozen model (SmolLM2-135M-Instruct) on a real task
(SST-2), against the hand-written prompt it starts from."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from prompt_jax.training import run
from prompt_jax.training.train import OptimizerConfig

INIT_TEXT = "Classify if the sentiment of each movie review is positive or negative."
# Other hand-written templates the demo also scores zero-shot (benchmarks/results.py's), so
# that the soft prompt is read against the best of them, not only the task's own.
OTHER_TEMPLATES = {"sst2": ("{text_a}\nIs this review positive or negative? Answer:",
                            "Movie review: {text_a}\nThe sentiment of this review is")}

# About 7 minutes on 2 CPU cores: 20 prompt vectors initialized from a task description,
# AdamW at 3e-2, batch 8 (the recipe of the PEFT comparison in benchmarks/).
DEMO = run.RunConfig(
    model="smollm2-135m-instruct",
    task="sst2",
    output_dir="runs/demo",
    prompt_length=20,
    init="text",
    init_text=INIT_TEXT,
    optimizer=OptimizerConfig(name="adamw", learning_rate=3e-2, weight_decay=0.01),
    steps=320,
    batch_size=8,
    max_input_length=128,
    eval_every=0,  # evaluate once, at the end
    checkpoint_every=80,
    mesh_data=1,
)


def main(config: run.RunConfig = DEMO) -> dict:
    """Zero-shot baseline, then prompt tuning; prints the comparison and where the prompt is.

    The demo starts over in its output folder each time (a previous demo run there is
    replaced)."""
    loaded, task = run.load(config)
    n_frozen = loaded.num_params
    template = task.template.replace("\n", "\\n")
    print(f"\n[1/2] zero-shot: the hand-written template `{template}` alone")
    t0 = time.perf_counter()
    zero = run.evaluator(loaded, task, config)(None)
    zero_seconds = time.perf_counter() - t0
    print(f"      accuracy {zero['accuracy']:.1%} ({zero_seconds:.0f} s)")
    best_template, best = template, zero
    for other in OTHER_TEMPLATES.get(config.task, ()):
        templated = dataclasses.replace(config, template=other)
        metrics = run.evaluator(loaded, run.task_for(loaded, templated), templated)(None)
        print(f"      other template `{other!r}`: accuracy {metrics['accuracy']:.1%}")
        if metrics["accuracy"] > best["accuracy"]:
            best_template, best = other.replace("\n", "\\n"), metrics
    print(f"[2/2] prompt tuning: {config.prompt_length} soft-prompt vectors, {config.steps} steps "
          f"of batch {config.batch_size} on the {config.task} train split")
    summary = run.train_prompt(config, overwrite=True, loaded=loaded)
    tuned = summary["final"]
    n_eval = "all" if not config.eval_limit else f"a seeded sample of {config.eval_limit}"
    print(f"\n{config.model} (frozen, {n_frozen / 1e6:.1f}M parameters), {config.task} "
          f"{config.eval_split} ({n_eval} examples), rank classification between the "
          "verbalizers\n")
    print("| method | accuracy | macro-F1 | trainable params | training time |")
    print("|---|---|---|---|---|")
    print(f"| hand-written prompt, zero-shot | {zero['accuracy']:.1%} | {zero['macro_f1']:.3f} "
          f"| 0 | - |")
    if best is not zero:
        print(f"| hand-written prompt, zero-shot, best template (`{best_template}`) | "
              f"{best['accuracy']:.1%} | {best['macro_f1']:.3f} | 0 | - |")
    print(f"| soft prompt ({config.prompt_length} tokens, {config.steps} steps) | "
          f"{tuned['accuracy']:.1%} | {tuned['macro_f1']:.3f} | {summary['trainable_params']:,} "
          f"| {summary['train_seconds'] / 60:.1f} min "
          f"({summary['train_examples_per_second']:.1f} examples/s) |")
    print(f"\nThe trained prompt is {Path(summary['prompt']).resolve()} (with its JSON sidecar).")
    print(f"Evaluate it again: prompt-jax eval --task {config.task} --prompt {summary['prompt']}")
    return {"zero_shot": zero, **summary}


def with_overrides(**overrides) -> run.RunConfig:
    """The demo config with some fields replaced (None values are ignored)."""
    return dataclasses.replace(DEMO, **{k: v for k, v in overrides.items() if v is not None})
