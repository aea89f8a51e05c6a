"""Writes a generated markdown block into a docs file between its `<!-- name:start -->` and
`<!-- name:end -->` markers, so that every number there comes from a stored result file.

Every generated block lives in `docs/results.md` (the default target), except the README's one
headline table, the demo's (`demo`, written into README.md), `suggest` (docs/transfer.md), the
serving soak run's (`soak`, in docs/serving.md) and the whole-run, compile and split-cache
tables (docs/benchmarks.md). `tests/test_docs.py` regenerates each block from the stored files
(`generators`) and compares it with the docs text byte for byte.

    python benchmarks/readme_block.py          # rewrite every block from the stored files
    python benchmarks/readme_block.py --check  # only say which blocks differ (exit 1 if any)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS_MD = DOCS / "results.md"
# The blocks that live elsewhere than docs/results.md.
TARGETS = {"demo": README, "suggest": DOCS / "transfer.md", "soak": DOCS / "serving.md",
           "split_cache": DOCS / "benchmarks.md", "speed_goals": DOCS / "benchmarks.md"}
# Issue 40's whole-run, evaluation and compile-count tables, one block per stored result file
# (whole_run_<label>.json, transfer_compiles_<label>.json): docs/benchmarks.md.
WHOLE_RUN_BLOCKS = tuple(sorted(p.stem for p in (HERE / "results").glob("whole_run_*.json")))
TRANSFER_COMPILE_BLOCKS = tuple(sorted(
    p.stem for p in (HERE / "results").glob("transfer_compiles_*.json")))
TARGETS.update({name: DOCS / "benchmarks.md"
                for name in WHOLE_RUN_BLOCKS + TRANSFER_COMPILE_BLOCKS})


def target(name: str) -> Path:
    """The file that holds block `name`."""
    return TARGETS.get(name, RESULTS_MD)


def link(path: Path | str, name: str = "") -> str:
    """`path` (absolute, or relative to the repository root) as a markdown link target relative
    to the file that holds block `name` (docs/results.md by default)."""
    path = Path(path)
    if not path.is_absolute():
        path = ROOT / path
    return Path(os.path.relpath(path, target(name).parent)).as_posix()


def markers(name: str) -> tuple[str, str]:
    """The markers of block `name`."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def _span(name: str, doc: Path) -> tuple[str, int, int]:
    """`doc`'s text and where block `name`'s content starts (after its start marker) and its
    end marker begins (exits naming the markers when they are missing)."""
    start_marker, end_marker = markers(name)
    text = doc.read_text()
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        sys.exit(f"{doc} has no {start_marker} ... {end_marker} block")
    return text, start + len(start_marker), end


def read_block(name: str, doc: Path | None = None) -> str:
    """What stands between block `name`'s markers (exits naming them when they are missing)."""
    text, start, end = _span(name, doc or target(name))
    return text[start + 1:end - 1]


def ensure_block(name: str, heading: str, doc: Path) -> None:
    """Appends an empty block `name` under `heading` to `doc` when it has none yet (a result
    stored under a new label)."""
    start, end = markers(name)
    text = doc.read_text()
    if start not in text:
        doc.write_text(text.rstrip("\n") + f"\n\n{heading}\n\n{start}\n{end}\n")


def write_block(name: str, block: str, doc: Path | None = None) -> None:
    """Replaces what stands between block `name`'s markers in `doc` (default: the block's own
    file, see `target`) with `block` (exits naming the markers when the file lacks them)."""
    doc = doc or target(name)
    text, start, end = _span(name, doc)
    doc.write_text(text[:start] + "\n" + block + "\n" + text[end:])
    where = doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc
    print(f"wrote block {name} into {where}", file=sys.stderr)


STEP_BENCH_BLOCKS = ("step_bench_quick", "step_bench_real_smollm2", "step_bench_real_gemma3",
                     "step_bench_t5_base")


def generators() -> dict:
    """Every generated block's name -> a function that returns its text from the stored result
    files alone (no model, no measurement, nothing drawn), as the benchmarks' `--docs` flags
    write it."""
    sys.path.insert(0, str(HERE))
    import aot_memory
    import cross_model
    import generation_results
    import results
    import serving
    import soak
    import split_cache_bench
    import step_bench
    import suggest_report
    import transfer_compiles
    import transfer_report
    import whole_run_report

    stored = HERE / "results"
    blocks = {"demo": results.demo_table,
              "results": lambda: results.report(draw=False),
              "transfer": transfer_report.report,
              "suggest": suggest_report.report,
              "cross_model": cross_model.report,
              "generation": generation_results.report,
              "step_bench_peers": step_bench.peers_block,
              "serving": lambda: serving.table(json.loads(
                  (stored / "serving_smollm2-135m-instruct.json").read_text())),
              "aot": lambda: aot_memory.table(json.loads(
                  (stored / "aot_memory.json").read_text())),
              "soak": lambda: soak.table(json.loads(
                  (stored / "soak_smollm2-135m-instruct.json").read_text())),
              "split_cache": lambda: split_cache_bench.block(
                  json.loads(split_cache_bench.RESULT.read_text()), split_cache_bench.RESULT),
              "speed_goals": whole_run_report.summary_block}
    for name in WHOLE_RUN_BLOCKS:
        path = stored / f"{name}.json"
        blocks[name] = (lambda path=path: whole_run_report.block(
            json.loads(path.read_text()), path))
    for name in TRANSFER_COMPILE_BLOCKS:
        path = stored / f"{name}.json"
        blocks[name] = (lambda path=path: transfer_compiles.block(
            json.loads(path.read_text()), path))
    for name in STEP_BENCH_BLOCKS:
        path = stored / f"{name}.json"
        blocks[name] = (lambda path=path: step_bench.readme_block(
            json.loads(path.read_text()), str(path)))
    return blocks


def main() -> None:
    p = argparse.ArgumentParser(description="rewrite every generated docs block from the "
                                "stored result files")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if any differs")
    args = p.parse_args()
    stale = []
    for name, make in generators().items():
        block = make()
        if block != read_block(name):
            stale.append(name)
            if not args.check:
                write_block(name, block)
    print("differ: " + ", ".join(stale) if stale else "every block is up to date")
    if args.check and stale:
        sys.exit(1)


if __name__ == "__main__":
    main()
