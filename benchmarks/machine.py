"""What a benchmark ran on, stored beside its numbers (machines here differ between days)."""

from __future__ import annotations

import datetime
import os

from prompt_jax.provenance import cpu_name


def describe() -> dict:
    """Date (UTC), CPU, usable cores and the JAX backend and devices of this run."""
    import jax

    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
            "cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)),
            "jax": jax.__version__, "backend": jax.default_backend(),
            "devices": [d.device_kind for d in jax.devices()]}


def line(info: dict) -> str:
    """One line for the docs: date, machine and backend."""
    return (f"{info['date']}, {info['cpu']} ({info['cores']} cores), JAX {info['jax']} on "
            f"{info['backend']}")
