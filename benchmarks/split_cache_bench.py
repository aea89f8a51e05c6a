"""Time to a run's first batches with the tokenized-split cache off, cold and warm.

A run that shuffles a split tokenizes all of it before its first batch; `split_cache` keeps
the tokenized split on disk so that the next run reads it back. Each mode runs in a fresh
process (nothing cached in memory), on the real tokenizer and the real data:

    python benchmarks/split_cache_bench.py --docs                  # SmolLM2, SST-2 train
    python benchmarks/split_cache_bench.py --task rotten_tomatoes  # another split

Writes `benchmarks/results/split_cache.json`; `--docs` its block in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULT = HERE / "results" / "split_cache.json"
MODES = ("off", "cold", "warm")


def first_batches(model: str, task: str, split: str, batches: int) -> dict:
    """Seconds from asking for a shuffled split's batches to holding the first `batches`."""
    from prompt_jax.models.convert import load_tokenizer
    from prompt_jax.models.fetch import resolve_model
    from prompt_jax.tasks import batches as make_batches
    from prompt_jax.tasks import read_split

    tokenizer = load_tokenizer(resolve_model(model))
    t0 = time.perf_counter()
    it = make_batches(task, split, tokenizer, "causal", 8, max_length=128, seed=0,
                      shuffle=True, repeat=True)
    got = [next(it) for _ in range(batches)]
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": len(read_split(task, split)[0]),
            "first_index": got[0]["index"].tolist()}


def measure(model: str, task: str, split: str, batches: int) -> dict:
    """Each mode in its own process, the cold and warm ones sharing a fresh cache folder."""
    cache = tempfile.mkdtemp(prefix="split_cache_bench_")
    runs = {}
    for mode in MODES:
        env = {**os.environ, "PROMPT_JAX_SPLIT_CACHE": "0" if mode == "off" else "1",
               "PROMPT_JAX_SPLIT_CACHE_DIR": cache}
        out = subprocess.run([sys.executable, __file__, "--one", "--model", model, "--task",
                              task, "--split", split, "--batches", str(batches)], env=env,
                             capture_output=True, text=True, check=True)
        runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    same = len({tuple(r["first_index"]) for r in runs.values()}) == 1
    return {"runs": runs, "same_batches": same}


def table(result: dict) -> str:
    runs = result["runs"]
    off = runs["off"]["seconds"]
    lines = ["| split cache | seconds to the first batches | against off |", "|---|---|---|"]
    lines += [f"| {mode} | {runs[mode]['seconds']:.2f} | {off / runs[mode]['seconds']:.2f}x |"
              for mode in MODES]
    return "\n".join(lines + ["", "The same first batch in every mode: "
                              f"{'yes' if result['same_batches'] else 'NO'}."])


def block(result: dict, path: Path) -> str:
    import machine

    r = result["recipe"]
    return "\n".join([
        machine.measured(result, "split_cache_bench.py", (
            f"{r['model']} tokenizer, {r['task']} {r['split']}, "
            f"{result['runs']['off']['rows']} rows, shuffled, batches of 8: seconds to the "
            f"first {r['batches']} batches, each mode in a fresh process"),
            path.resolve().relative_to(HERE.parent)), "", table(result), "",
        "Off tokenizes the whole split (the shuffle buffer holds it); cold tokenizes it and "
        "writes it to disk once; warm reads it back."])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--split", default="train")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--docs", action="store_true")
    args = parser.parse_args()
    if args.one:  # a child: one mode, its cache folder from the parent
        print(json.dumps(first_batches(args.model, args.task, args.split, args.batches)))
        return
    import machine

    from prompt_jax.provenance import write_result

    result = {"machine": machine.describe(), "command": " ".join(sys.argv[1:]),
              "recipe": {"model": args.model, "task": args.task, "split": args.split,
                         "batches": args.batches},
              **measure(args.model, args.task, args.split, args.batches)}
    write_result(RESULT, result, indent=1)
    print(table(result))
    if args.docs:
        from readme_block import DOCS, ensure_block, write_block

        ensure_block("split_cache", "### Tokenized splits on disk", DOCS / "benchmarks.md")
        write_block("split_cache", block(result, RESULT))


if __name__ == "__main__":
    main()
