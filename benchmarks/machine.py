"""What a benchmark ran on, stored beside its numbers (machines here differ between days)."""

from __future__ import annotations

import datetime
import os

from prompt_jax.provenance import cpu_name


def describe() -> dict:
    """Date (UTC), CPU, usable cores, the JAX backend and devices of this run, and the
    machine's load when it started (1-minute load average: above a few tenths per core, other
    work shared the cores and the timings read slower than the machine is)."""
    import jax

    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
            "cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)),
            "jax": jax.__version__, "backend": jax.default_backend(),
            "devices": [d.device_kind for d in jax.devices()],
            "load_average": round(os.getloadavg()[0], 2)}


def line(info: dict) -> str:
    """One line for the docs: date, machine and backend."""
    load = info.get("load_average")
    shared = (f"; load average {load:.1f} at the start: other work shared the cores"
              if load is not None and load > 0.5 * info["cores"] else "")
    cores = f"{info['cores']} core{'' if info['cores'] == 1 else 's'}"
    return (f"{info['date']}, {info['cpu']} ({cores}), JAX {info['jax']} on "
            f"{info['backend']}{shared}")


def measured(result: dict, script: str, details: str, stored: str) -> str:
    """The sentence that opens a benchmark's docs block: when and on what it ran, the command
    (`script` with the run's own arguments), what it measured, and the result file."""
    return (f"Measured {line(result['machine'])}: `python benchmarks/{script} "
            f"{result['command']}` ({details}; stored in `{stored}`).")
