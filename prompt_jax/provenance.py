"""Where a result came from: the command, date, git commit, machine and library versions.

Every result JSON that prompt_jax or its benchmarks write goes through `write_result`, which
stores `describe()` under the key "provenance" beside the numbers, so that any table built from
stored files can say what produced it and on which machine (the machines this project runs on
differ between days: AVX2, AVX-512, AMX; CPUs, GPUs, TPUs).
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

KEY = "provenance"
FIELDS = ("command", "date", "commit", "machine", "versions")
LIBRARIES = ("prompt_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
             "seqio", "transformers", "torch", "peft")
# /proc/cpuinfo flags -> the instruction-set names people compare machines by.
ISA_FLAGS = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX-512-BF16"),
             ("amx_tile", "AMX"))


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    """The processor's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def isa() -> list[str]:
    """The vector and matrix extensions this CPU has, of AVX2 / AVX-512 / AMX (x86 Linux)."""
    flags = set(_cpuinfo().get("flags", "").split())
    return [name for flag, name in ISA_FLAGS if flag in flags]


def accelerators() -> list[str]:
    """The kinds of JAX's devices when they are not CPUs (GPUs, TPUs), else []."""
    import jax

    return sorted({d.device_kind for d in jax.devices() if d.platform != "cpu"})


@functools.cache
def machine() -> dict[str, Any]:
    """CPU model, usable cores, ISA extensions, JAX backend and any GPU or TPU (read once per
    process: a transfer experiment writes hundreds of results)."""
    import jax

    return {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)), "isa": isa(),
            "platform": platform.machine(), "backend": jax.default_backend(),
            "accelerators": accelerators()}


@functools.cache
def versions(libraries: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """Python's version and the installed version of each library (those installed; read once
    per process)."""
    found = {"python": platform.python_version()}
    for name in libraries:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def git_commit(where: str | os.PathLike | None = None) -> str:
    """The git commit of the checkout holding `where` (default: this package), with "-dirty"
    when tracked files differ from it; "unknown" outside a git checkout."""
    where = Path(where) if where is not None else Path(__file__).resolve().parent
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=where, capture_output=True, text=True,
                                  check=True, timeout=10).stdout.strip()
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def command(argv: Sequence[str] | None = None) -> str:
    """The command line that is running, as a shell would take it back."""
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith(("__main__.py", "/prompt-jax")):
        argv[0] = "prompt-jax"
    elif argv:
        argv[0] = os.path.relpath(argv[0]) if os.path.isabs(argv[0]) else argv[0]
    return shlex.join(argv)


def describe(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The provenance of a result written now: command, date (UTC), commit, machine, versions."""
    now = datetime.datetime.now(datetime.UTC)
    return {"command": command(argv), "date": now.strftime("%Y-%m-%d"),
            "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "commit": git_commit(),
            "machine": dict(machine()), "versions": dict(versions())}


def write_result(path: str | os.PathLike, value: Mapping[str, Any], *, indent: int | None = 2,
                 dumps: Callable[[dict[str, Any]], str] | None = None) -> Path:
    """Write a result JSON with its provenance, atomically (temporary file, then rename).

    Args:
      path: the file to write; its folder is created.
      value: the result (JSON-serialisable mapping). A "provenance" key it already has (a
        result read back and written again) is replaced by this run's.
      indent: `json.dumps` indentation.
      dumps: writes the JSON text instead of `json.dumps` (a result's own layout).

    Returns:
      The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {k: v for k, v in value.items() if k != KEY}
    full = {**body, KEY: describe()}
    text = dumps(full) if dumps else json.dumps(full, indent=indent) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def line(result: Mapping[str, Any]) -> str:
    """One line for a results table: date, machine and backend of a stored result (or of a
    `describe()`); results stored before provenance existed say so."""
    info = result.get(KEY, result)
    if "machine" not in info or not isinstance(info["machine"], Mapping):
        return "machine and date not recorded"
    m = info["machine"]
    extras = "/".join(m.get("isa", [])) or m.get("platform", "")
    devices = f", {', '.join(m['accelerators'])}" if m.get("accelerators") else ""
    return (f"{info['date']}, {m['cpu']} ({m['cores']} cores, {extras}{devices}), "
            f"{m['backend']}, commit {info['commit'][:7]}")
