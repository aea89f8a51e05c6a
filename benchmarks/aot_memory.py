"""Per-device memory of the prompt-tuning train step for big frozen models (T5-XXL, Llama 8B),
compiled ahead of time on fake CPU devices: no weights, no accelerator needed.

For each model shape, dtype and mesh it compiles the real train step (`prompt_jax.training.aot`) and
records, per device, the frozen params' share under the rules table, the compiled step's
arguments and temporaries, and any large param left whole on every device.

    python benchmarks/aot_memory.py              # 64 fake devices: 8 x 8 and 1 x 8 meshes
    python benchmarks/aot_memory.py --report     # print the stored table
    python benchmarks/aot_memory.py --docs       # and put it into docs/results.md

Writes `benchmarks/results/aot_memory.json` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from prompt_jax.provenance import write_result

RESULTS = Path(__file__).resolve().parent / "results" / "aot_memory.json"


def _mesh(text: str) -> tuple[int, int]:
    data, model = (int(x) for x in text.split("x"))
    return data, model


def measure(args) -> dict:
    # Fake CPU devices: the flag must be set before jax starts.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                               f"device_count={args.devices}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import jax
    from machine import describe

    from prompt_jax import partitioning
    from prompt_jax.training import aot

    rows = []
    for shape in args.shapes.split(","):
        for dtype in args.dtypes.split(","):
            for data, model in (_mesh(m) for m in args.meshes.split(",")):
                mesh = partitioning.make_mesh(data, model, jax.devices()[:data * model])
                report = aot.memory_report(shape, mesh, batch_size=args.batch,
                                           input_length=args.input_length,
                                           prompt_length=args.prompt_length, dtype=dtype)
                print(aot.format_table([report]).splitlines()[-1], flush=True)
                rows.append(dataclasses.asdict(report))
    return {"machine": describe(), "rows": rows}


def table(result: dict) -> str:
    from machine import line

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from prompt_jax.training import aot

    reports = [aot.MemoryReport(**{**r, "mesh": tuple(r["mesh"]),
                                   "replicated": tuple(map(tuple, r["replicated"]))})
               for r in result["rows"]]
    first = reports[0]
    return "\n".join([
        f"Train step of prompt tuning (Adafactor, {first.prompt_length}-vector prompt, global "
        f"batch {first.batch_size} x {first.input_length} input tokens, each layer "
        f"rematerialized), compiled ahead of time by XLA:CPU on fake devices; "
        f"{line(result['machine'])}. `python benchmarks/aot_memory.py --docs` rewrites this "
        "block.", "", aot.format_table(reports)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="t5-xxl,llama-8b", help="names in training.aot.SHAPES")
    p.add_argument("--dtypes", default="bfloat16,float32")
    p.add_argument("--meshes", default="8x8,1x8", help="data x model, comma-separated")
    p.add_argument("--devices", type=int, default=64, help="fake CPU devices")
    p.add_argument("--batch", type=int, default=32, help="global batch")
    p.add_argument("--input_length", type=int, default=412)
    p.add_argument("--prompt_length", type=int, default=100)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--report", action="store_true", help="print the stored table, measure nothing")
    p.add_argument("--docs", "--readme", dest="readme", action="store_true",
                   help="also write the table into docs/results.md")
    args = p.parse_args()
    out = Path(args.out)
    if args.report or args.readme and out.exists():
        result = json.loads(out.read_text())
    else:
        result = measure(args)
        write_result(out, result)
    block = table(result)
    print(block)
    if args.readme:
        from readme_block import write_block

        write_block("aot", block)


if __name__ == "__main__":
    main()
