"""Compiles counted on a transfer-style workload: on one loaded model, N tasks of the same
shapes x M prompts scored (the transfer matrix), then K short training runs on those tasks
back to back. The goal (issue 40): one compile per shape, not one per run.

Counted: every XLA backend compilation of the process (`jax.monitoring`), per phase and per
run, and the distinct batch shapes the eval and train steps saw; timed: each phase, and the
seconds XLA spent compiling.

    python benchmarks/transfer_compiles.py --quick     # the small random Llama, a minute
    python benchmarks/transfer_compiles.py --model smollm2-135m-instruct --runs 6

Writes `benchmarks/results/transfer_compiles[_<label>].json`; `--docs` its block.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"
TASKS = ("sst2", "rotten_tomatoes", "imdb")  # two single-token classes each: the same shapes


@contextlib.contextmanager
def counted():
    """{"compiles", "compile_seconds"} of the XLA backend compilations while open."""
    found = {"compiles": 0, "compile_seconds": 0.0}

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            found["compiles"] += 1
            found["compile_seconds"] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield found
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def workload(loaded, *, prompts: int, runs: int, steps: int, limit: int, out: Path) -> dict:
    """The matrix (every task x `prompts` random prompts) then `runs` training runs cycling
    over the tasks; compiles and seconds of each."""
    from prompt_jax import prompts as prompt_lib
    from prompt_jax import transfer
    from prompt_jax.training import run

    sources = {f"p{i}": np.asarray(prompt_lib.random_uniform(
        jax.random.key(i), 20, loaded.model.d_model)) for i in range(prompts)}
    t0 = time.perf_counter()
    with counted() as matrix:
        cells = transfer.zero_shot_matrix(loaded, sources, list(TASKS), out / "matrix",
                                          limit=limit, batch_size=32, controls=False)
    matrix.update(seconds=time.perf_counter() - t0, cells=len(cells))
    per_run = []
    for i in range(runs):
        config = run.RunConfig(model=loaded.name, task=TASKS[i % len(TASKS)],
                               output_dir=str(out / f"run{i}"), prompt_length=20,
                               init="random_uniform", seed=i, steps=steps, batch_size=8,
                               max_input_length=128, eval_every=0, eval_limit=limit,
                               checkpoint_every=steps, log_every=steps, mesh_data=1)
        programs = _programs(loaded, config)
        t0 = time.perf_counter()
        with counted() as found:
            run.train_prompt(config, loaded=loaded)
        new = _programs(loaded, config) - programs
        per_run.append({"task": config.task, "seconds": time.perf_counter() - t0,
                        "new_shapes": new, **found})
    return {"matrix": matrix, "runs": per_run}


def _programs(loaded, config) -> int:
    """Programs the loaded model's cached steps hold (one per batch shape): the eval steps'
    and the run's train step's."""
    from prompt_jax.training import run

    step = loaded.train_step(run.task_for(loaded, config), config.optimizer).func
    return step._cache_size() + sum(s._cache_size() for s in loaded._eval_steps.values())


def per_run_compiles(result: dict) -> int:
    """Compiles of the runs after the first that no new batch shape explains: 0 when the
    workload compiles once per shape, not once per run."""
    return sum(r["compiles"] - r["new_shapes"] for r in result["workload"]["runs"][1:])


def table(result: dict) -> str:
    w = result["workload"]
    m, runs = w["matrix"], w["runs"]
    # The matrix: one eval program per batch shape, whatever the number of prompts.
    lines = ["| phase | XLA compiles | compile seconds | seconds |", "|---|---|---|---|",
             f"| transfer matrix: {len(TASKS)} tasks x {result['recipe']['prompts']} prompts "
             f"({m['cells']} cells) | {m['compiles']} | {m['compile_seconds']:.1f} | "
             f"{m['seconds']:.1f} |"]
    lines += [f"| training run {i + 1} ({r['task']}; {r['new_shapes']} new batch shapes) | "
              f"{r['compiles']} | {r['compile_seconds']:.1f} | {r['seconds']:.1f} |"
              for i, r in enumerate(runs)]
    extra = per_run_compiles(result)
    lines += ["", f"Compiles of runs 2-{len(runs)} that no new batch shape explains: {extra} "
              f"(goal: one compile per shape, not per run: **{'met' if extra <= 0 else 'missed'}"
              "**). A run's new batch shapes are the programs its cached eval and train steps "
              "gained."]
    return "\n".join(lines)


def block(result: dict, path: Path) -> str:
    import machine

    r = result["recipe"]
    return "\n".join([
        machine.measured(result, "transfer_compiles.py", (
            f"{r['model']}; {r['runs']} runs of {r['steps']} steps, {r['limit']} rows scored "
            "per cell"), path.resolve().relative_to(HERE.parent)), "", table(result)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--quick", action="store_true", help="the small random Llama")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--limit", type=int, default=64, help="rows scored per cell")
    parser.add_argument("--label", default="")
    parser.add_argument("--docs", action="store_true")
    parser.add_argument("--from-json", metavar="PATH")
    args = parser.parse_args()
    from prompt_jax.provenance import write_result

    if args.from_json:
        path = Path(args.from_json)
        result = json.loads(path.read_text())
    else:
        import machine
        import whole_run

        from prompt_jax import engine

        args.label = args.label or ("quick" if args.quick else "")
        name = str(whole_run.quick_model()) if args.quick else args.model
        loaded = engine.load_model(name, mesh_data=1)
        with tempfile.TemporaryDirectory() as tmp:
            found = workload(loaded, prompts=args.prompts, runs=args.runs, steps=args.steps,
                             limit=args.limit, out=Path(tmp))
        result = {"machine": machine.describe(), "command": " ".join(sys.argv[1:]),
                  "recipe": {"model": "quick" if args.quick else args.model,
                             "prompts": args.prompts, "runs": args.runs, "steps": args.steps,
                             "limit": args.limit}, "workload": found}
        path = RESULTS / f"transfer_compiles{'_' + args.label if args.label else ''}.json"
        write_result(path, result, indent=1)
    print(table(result))
    if args.docs:
        from readme_block import DOCS, ensure_block, write_block

        ensure_block(path.stem, f"### Compiles on a transfer workload: `{path.name}`",
                     DOCS / "benchmarks.md")
        write_block(path.stem, block(result, path))


if __name__ == "__main__":
    main()
