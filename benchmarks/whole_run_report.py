"""The tables of a stored `whole_run.py` result, and the goals of issue 40 it decides, each
marked met or missed with its measured ratio. Reads JSON only (no model, no measurement)."""

from __future__ import annotations

from pathlib import Path

import machine

HERE = Path(__file__).resolve().parent
BEST_PEERS = ("peft-best", "peft-compiled", "peft-bf16")
NAMES = {"ours-cold": "`prompt-jax train`, cold compilation cache",
         "ours-warm": "`prompt-jax train`, warm compilation cache",
         "peft-best": "PEFT at its best, eager", "peft-compiled": "PEFT at its best, "
         "torch.compile", "peft-bf16": "PEFT at its best, bf16 autocast",
         "peft": "PEFT as users write it"}


def _best(sides: dict, key: str) -> tuple[str, dict] | None:
    """PEFT at its best for one measure: the variant with the least `key`."""
    found = [(s, sides[s]) for s in BEST_PEERS if s in sides]
    return min(found, key=lambda x: x[1][key]) if found else None


def _variants(peer: dict) -> list[tuple[str, dict]]:
    """The evaluation variants of the eval-peft side (its other keys are about the run)."""
    return [(k, v) for k, v in peer.items() if isinstance(v, dict)]


def _mark(met: bool) -> str:
    return "met" if met else "missed"


def goals(result: dict) -> list[tuple[str, str, str]]:
    """(goal, measured, met / missed) for each goal the result decides."""
    s, out = result["sides"], []
    ours = s.get("ours-cold")
    whole = _best(s, "process_seconds")
    if ours and whole:
        ratio = whole[1]["process_seconds"] / ours["process_seconds"]
        out.append(("whole run (cold cache) at least 2x PEFT at its best",
                    f"{ratio:.2f}x (vs {whole[0]})", _mark(ratio >= 2)))
    warm, step = s.get("ours-warm"), _best(s, "median_step_seconds")
    if warm and step:
        ratio = step[1]["median_step_seconds"] / warm["median_step_seconds"]
        out.append(("median step at least 3x PEFT at its best", f"{ratio:.2f}x (vs {step[0]})",
                    _mark(ratio >= 3)))
    if warm and "bare" in s:
        ratio = warm["median_step_seconds"] / s["bare"]["median_step_seconds"]
        out.append(("`prompt-jax train` steady state within 5% of the bare step",
                    f"{ratio:.3f}x the bare step's time (separate processes)",
                    _mark(ratio <= 1.05)))
        same = s["bare"].get("loop_prefetch2_median_step_seconds")
        if same:
            ratio = same / s["bare"]["median_step_seconds"]
            out.append(("the loop within 5% of the bare step, in one process",
                        f"{ratio:.3f}x the bare step's time", _mark(ratio <= 1.05)))
    if warm:
        seconds = warm["loaded_to_first_step_seconds"]
        out.append(("a second run of the same shapes: first step at most 5 s after loading",
                     f"{seconds:.1f} s", _mark(seconds <= 5)))
    ev, peer = s.get("eval-ours"), s.get("eval-peft")
    if ev and peer:
        name, fastest = min(((k, v) for k, v in _variants(peer) if k.startswith("best")),
                            key=lambda x: x[1]["warm_seconds"])
        ratio = fastest["warm_seconds"] / ev["warm_seconds"]
        out.append(("evaluation at least 2x Hugging Face at its best",
                    f"{ratio:.2f}x (vs {name}, warm)", _mark(ratio >= 2)))
    return out


def table(result: dict) -> str:
    s, r = result["sides"], result["recipe"]
    lines = ["| side | whole process | model loaded -> first step | median step | "
             "examples/s (median step) | train time | accuracy |", "|---|---|---|---|---|---|---|"]
    for side, name in NAMES.items():
        if side not in s:
            continue
        x = s[side]
        lines.append(f"| {name} | {x['process_seconds']:.1f} s | "
                     f"{x['loaded_to_first_step_seconds']:.1f} s | "
                     f"{x['median_step_seconds']:.3f} s | "
                     f"{r['batch_size'] / x['median_step_seconds']:.2f} | "
                     f"{x['train_seconds']:.1f} s | {x['accuracy']:.1%} |")
    if "bare" in s:
        b = s["bare"]
        lines.append(f"| the bare step, same batches | | | {b['median_step_seconds']:.3f} s | "
                     f"{r['batch_size'] / b['median_step_seconds']:.2f} | | |")
        for key, name in (("loop_prefetch2", "the loop in the same process, batches made "
                           "ahead"), ("loop_prefetch0", "the same, batches made in the loop")):
            x = b.get(f"{key}_median_step_seconds")
            if x:
                lines.append(f"| {name} | | | {x:.3f} s | {r['batch_size'] / x:.2f} | | |")
    ev, peer = s.get("eval-ours"), s.get("eval-peft")
    if ev and peer:
        lines += ["", "| evaluation, rank classification (forward only) | first call | warm | "
                  "accuracy |", "|---|---|---|---|",
                  f"| prompt_jax (engine evaluator) | {ev['first_seconds']:.2f} s | "
                  f"{ev['warm_seconds']:.2f} s | {ev['accuracy']:.1%} |"]
        labels = {"best": "Hugging Face at its best (inference_mode, head at one position, "
                  "batched)", "best-bf16": "the same, bf16 autocast",
                  "as-written": "Hugging Face as users write it (no_grad, every position)"}
        for name, x in _variants(peer):
            lines.append(f"| {labels[name]} ({x['speedups']}) | {x['first_seconds']:.2f} s | "
                         f"{x['warm_seconds']:.2f} s | {x['accuracy']:.1%} |")
    found = goals(result)
    if found:
        lines += ["", "| goal (issue 40) | measured | |", "|---|---|---|"]
        lines += [f"| {g} | {m} | **{v}** |" for g, m, v in found]
    return "\n".join(lines)


def block(result: dict, path: Path) -> str:
    r = result["recipe"]
    model = ("a small random Llama (4 layers, width 256, the tests' tiny BPE)"
             if r["model"] == "quick" else r["model"])
    rows = r["eval_limit"] or "all"
    rel = path.resolve().relative_to(HERE.parent)
    bare = f"; the bare side {r['bare_steps']} steps" if "bare_steps" in r else ""
    missing = [NAMES[p] for p in (*BEST_PEERS, "peft") if p not in result["sides"]]
    left_out = (f" Not run in this result: {'; '.join(missing)} (the step benchmark times "
                "every variant per step on the same machine)." if missing else "")
    return "\n".join([
        machine.measured(result, "whole_run.py", (
            f"{model}; SST-2, the demo's recipe: {r['prompt_length']} prompt vectors, AdamW, "
            f"batch {r['batch_size']}, {r['steps']} steps, then {rows} validation "
            f"rows{bare}"), rel)
        + " Every side is its own process, timed from its "
        "start; the median step leaves the first out." + left_out, "", table(result)])


def _machine(result: dict) -> str:
    m = result["machine"]
    return f"{m['cpu']} ({m['cores']} cores), JAX {m['jax']} on {m['backend']}"


def summary(results: dict[str, dict], compiles: dict[str, dict] | None = None) -> str:
    """Issue 40's goals on each real model side by side: one row per goal, one column per
    stored whole run (`results`: label -> result), each cell the measured ratio and its mark;
    `compiles` (label -> a stored transfer_compiles result) adds the compile-per-shape row."""
    import transfer_compiles

    compiles = compiles or {}
    columns = {label: {g: f"{m} **{v}**" for g, m, v in goals(r)}
               for label, r in results.items()}
    rows = list(dict.fromkeys(g for cells in columns.values() for g in cells))
    lines = ["| goal (issue 40) | " + " | ".join(results) + " |",
             "|---|" + "---|" * len(results)]
    lines += [f"| {g} | " + " | ".join(columns[label].get(g, "not measured")
                                       for label in results) + " |" for g in rows]
    for label, r in compiles.items():
        extra = transfer_compiles.per_run_compiles(r)
        lines.append(f"| a transfer-style workload compiles once per shape, not per run "
                     f"(`{label}`) | " + " | ".join(
                         f"{extra} compiles that no new shape explains **{_mark(extra <= 0)}**"
                         if res["recipe"]["model"] == r["recipe"]["model"] else "not measured"
                         for res in results.values()) + " |")
    body = "\n".join(lines[2:])
    stored = [*results.values(), *compiles.values()]
    machines = sorted({_machine(r) for r in stored})
    dates = sorted({r["machine"]["date"] for r in stored})
    where = (f"all measured on one machine, {machines[0]}, on {', '.join(dates)}"
             if len(machines) == 1 else "measured on different machines: " + "; ".join(machines))
    return "\n".join(lines + ["", f"Goals: {body.count('**met**')} met, "
                               f"{body.count('**missed**')} missed; {where}."])


REAL = {"SmolLM2-135M": "whole_run_smollm2", "Gemma 3 270M": "whole_run_gemma3"}
REAL_COMPILES = ("transfer_compiles_smollm2",)


def summary_block(results_dir: Path = HERE / "results") -> str:
    """The `speed_goals` block: `summary` of the stored real-model runs."""
    import json

    def read(name):
        return json.loads((results_dir / f"{name}.json").read_text())

    runs = {label: read(name) for label, name in REAL.items()}
    peak = read(PEAKS)
    same = {_machine(peak)} == {_machine(r) for r in runs.values()}
    text = summary(runs, {name: read(name) for name in REAL_COMPILES})
    return text + "\n\n" + peaks(peak, f"benchmarks/results/{PEAKS}.json", same)


PEAKS = "step_bench_real_smollm2"


def peaks(result: dict, name: str, same: bool) -> str:
    """The matmul peaks a step benchmark measured: what each side's kernels can reach (`same`:
    on the machine of the whole runs beside them)."""
    p = result["peak"]
    found = [f"{dtype}, JAX {p[dtype]['jax'] / 1e9:.0f} and torch {p[dtype]['torch'] / 1e9:.0f} "
             f"GFLOP/s (torch {p[dtype]['torch'] / p[dtype]['jax']:.1f}x)"
             for dtype in ("float32", "bfloat16") if dtype in p and p[dtype].get("torch")]
    where = "the same machine" if same else f"another machine, {_machine(result)}"
    return (f"Matmul peaks on {where} (`{name}`, {result['machine']['date']}): "
            + "; ".join(found) + ". PEFT at its best runs its matmuls under bf16 autocast "
            "where the CPU has bf16 units; prompt_jax's step runs in float32.")
