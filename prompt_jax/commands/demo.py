"""The main job: prompt tuning a real frozen model (SmolLM2-135M-Instruct) on a real task
(SST-2), against the hand-written prompt it starts from."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from prompt_jax import provenance
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


# The templates are ranked on a seeded sample of the validation split, and only the winner is
# scored on all of it: ranking three templates on all 872 rows took about 5 minutes of a 2-core
# CPU, longer than the training.
RANK_SAMPLE = 200


def _template_text(template: str) -> str:
    return template.replace("\n", "\\n")


def main(config: run.RunConfig = DEMO) -> dict:
    """Zero-shot baseline, then prompt tuning; prints the comparison, writes `demo.json` (with
    its provenance) beside the prompt and says where both are.

    The demo starts over in its output folder each time (a previous demo run there is
    replaced)."""
    started = time.perf_counter()
    loaded, task = run.load(config)
    n_frozen = loaded.num_params
    sample = min(RANK_SAMPLE, config.eval_limit) if config.eval_limit else RANK_SAMPLE
    candidates = [task.template, *OTHER_TEMPLATES.get(config.task, ())]
    print(f"\n[1/3] zero-shot: {len(candidates)} hand-written templates ranked on a seeded "
          f"sample of {sample} {config.eval_split} rows")
    ranked = []
    for template in candidates:
        templated = dataclasses.replace(config, template=template, eval_limit=sample)
        metrics = run.evaluator(loaded, run.task_for(loaded, templated), templated)(None)
        ranked.append({"template": template, "own": template == task.template, **metrics})
        print(f"      `{_template_text(template)}`: accuracy {metrics['accuracy']:.1%}")
    best = max(ranked, key=lambda r: r["accuracy"])  # the first of equals: the task's own
    t0 = time.perf_counter()
    best_config = dataclasses.replace(config, template=best["template"])
    zero = run.evaluator(loaded, run.task_for(loaded, best_config), best_config)(None)
    n_eval = "all" if not config.eval_limit else f"a seeded sample of {config.eval_limit}"
    print(f"[2/3] the best template on {n_eval} {config.eval_split} rows: accuracy "
          f"{zero['accuracy']:.1%} ({time.perf_counter() - t0:.0f} s)")
    zero_seconds = time.perf_counter() - started
    print(f"[3/3] prompt tuning: {config.prompt_length} soft-prompt vectors, {config.steps} steps "
          f"of batch {config.batch_size} on the {config.task} train split")
    summary = run.train_prompt(config, overwrite=True, loaded=loaded)
    tuned = summary["final"]
    print(f"\n{config.model} (frozen, {n_frozen / 1e6:.1f}M parameters), {config.task} "
          f"{config.eval_split} ({n_eval} examples), rank classification between the "
          "verbalizers\n")
    print("| method | accuracy | macro-F1 | trainable params | training time |")
    print("|---|---|---|---|---|")
    own = " (the task's own)" if best["own"] else ""
    print(f"| hand-written prompt, zero-shot, best of {len(candidates)} templates{own} "
          f"(`{_template_text(best['template'])}`) | {zero['accuracy']:.1%} | "
          f"{zero['macro_f1']:.3f} | 0 | - |")
    print(f"| soft prompt ({config.prompt_length} tokens, {config.steps} steps) | "
          f"{tuned['accuracy']:.1%} | {tuned['macro_f1']:.3f} | {summary['trainable_params']:,} "
          f"| {summary['train_seconds'] / 60:.1f} min "
          f"({summary['train_examples_per_second']:.1f} examples/s) |")
    result = {"model": config.model, "task": config.task, "split": config.eval_split,
              "frozen_params": int(n_frozen), "d_model": int(loaded.model.d_model),
              "rank_sample": sample, "templates": ranked,
              "best_template": best["template"], "zero_shot": zero, "soft_prompt": summary,
              "zero_shot_seconds": zero_seconds,
              "total_seconds": time.perf_counter() - started}
    path = provenance.write_result(Path(config.output_dir) / "demo.json", result)
    print(f"\nThe whole demo took {result['total_seconds'] / 60:.1f} min (model loaded, "
          f"templates ranked and scored, prompt trained and scored); its numbers are in {path}.")
    print(f"The trained prompt is {Path(summary['prompt']).resolve()} (with its JSON sidecar).")
    print(f"Evaluate it again: prompt-jax eval --task {config.task} --prompt {summary['prompt']}")
    return result


def with_overrides(**overrides) -> run.RunConfig:
    """The demo config with some fields replaced (None values are ignored)."""
    return dataclasses.replace(DEMO, **{k: v for k, v in overrides.items() if v is not None})
