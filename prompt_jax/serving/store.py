"""The bank folder on disk: what a server serves after a restart, written so that a crash at any
moment leaves the old bank or the new one, never a torn prompt.

    bank/<name>.npy + <name>.json      the served prompts (what `PromptBank.load_dir` reads)
    bank/removed/<name>.npy + .json    the last removed version of each name (not served)
    bank/.pending/                     writes in flight (a redo log), settled at start-up

A prompt is a pair of files (the array and its sidecar), so one rename cannot switch both. An
add writes the pair into `.pending/` (each file through a temporary file, fsynced), fsyncs the
folder, then creates `.pending/<name>.commit`: that file's existence is the commit point. Only
then are the two files renamed into the bank (`os.replace`, sidecar first) and the marker
deleted. `recover`, run before every load, finishes a committed write (its marker is there) and
deletes an uncommitted one, so a process killed anywhere in between restarts with the old
prompt (not committed) or the new one (committed). A removal renames `<name>.npy` into
`removed/` first: from that rename on, the prompt is no longer served.

Requests name files only by their bare name inside the folder (`resolve`); any other path gets
one refusal (`OutsideBank`) that says nothing about whether the file exists.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from prompt_jax.prompts.files import (
    LoadedPrompt,
    PromptFormatError,
    load_prompt,
    save_prompt,
    sidecar_path,
)
from prompt_jax.prompts.formats import sniff_bytes

PENDING = ".pending"
REMOVED = "removed"
COMMIT = ".commit"
# Names a client may give a prompt it adds: they become file names.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
UPLOAD_FORMATS = {"npy": ".npy", "safetensors": ".safetensors"}
REFUSAL = ("'file' names a prompt file inside the bank folder by its bare name (e.g. "
           "'sst2.npy'); any other path is refused")


class OutsideBank(ValueError):
    """A file named by a path that is not a bare name inside the bank folder."""

    def __init__(self):
        super().__init__(REFUSAL)


def check_name(name: str) -> str:
    """`name` if it is a prompt name a client may give (it becomes `<name>.npy`).

    Raises:
      ValueError: naming the rule.
    """
    if not NAME.fullmatch(name):
        raise ValueError(f"prompt name {name[:120]!r}: use 1-100 letters, digits, '.', '_' or "
                         f"'-', starting with a letter or digit")
    return name


def prompt_files(folder: Path) -> list[Path]:
    """The served prompts of a bank folder: its `<name>.npy` files (hidden ones are not)."""
    return sorted(p for p in Path(folder).glob("*.npy") if not p.name.startswith("."))


def resolve(folder: Path, file: str) -> Path:
    """The path of `file`, a bare file name inside `folder`.

    Raises:
      OutsideBank: `file` is a path (a separator, `..`, a hidden name, an absolute path) or a
        link out of the folder: the same refusal whether or not such a file exists.
      FileNotFoundError: a bare name that is not in the folder.
    """
    if (not file or file != os.path.basename(file) or "\\" in file or "\0" in file
            or file.startswith(".")):
        raise OutsideBank
    folder = Path(folder)
    path = folder / file
    if Path(os.path.realpath(path)).parent != Path(os.path.realpath(folder)):
        raise OutsideBank
    if not path.is_file():
        raise FileNotFoundError(f"no file {file!r} in the bank folder")
    return path


# --------------------------------------------------------------------------------------------
# Writing, removing, recovering
# --------------------------------------------------------------------------------------------


def _fsync(path: Path) -> None:
    """Flushes a file's or a folder's entries to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdir(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_dir():
        path.mkdir()
        _fsync(folder)
    return path


def write(folder: Path, name: str, prompt: np.ndarray, metadata: Mapping[str, Any]) -> Path:
    """Writes `<name>.npy` and its sidecar into the bank folder, crash-safely (see the module
    docstring); returns the `.npy` path once it is on disk.

    Raises:
      ValueError: a name a client may not give (`check_name`), or metadata that contradicts the
        prompt's shape or is not JSON (`PromptFormatError`).
    """
    check_name(name)
    folder = Path(folder)
    pending = _mkdir(folder, PENDING)
    settle(folder, name)  # a committed write of this name that an error left unfinished
    staged = pending / f"{name}.npy"
    try:
        written = save_prompt(prompt, staged, format="prompt_jax", metadata=metadata,
                              overwrite=True)
        for path in written:
            _fsync(path)
        _fsync(pending)
    except BaseException:
        for path in (staged, sidecar_path(staged)):
            path.unlink(missing_ok=True)
        raise
    marker = pending / f"{name}{COMMIT}"
    os.close(os.open(marker, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644))
    _fsync(pending)  # the commit point: from here on, recovery finishes this write
    settle(folder, name)
    return folder / f"{name}.npy"


def settle(folder: Path, name: str) -> bool:
    """Finishes the committed write of `name` in `.pending/` (if its marker is there): its
    files renamed into the bank, sidecar first, then the marker deleted. Returns whether
    there was one."""
    pending = Path(folder) / PENDING
    marker = pending / f"{name}{COMMIT}"
    if not marker.exists():
        return False
    for staged in (pending / f"{name}.json", pending / f"{name}.npy"):
        if staged.exists():  # already moved when a crash came after its rename
            os.replace(staged, Path(folder) / staged.name)
    _fsync(folder)
    marker.unlink()
    _fsync(pending)
    return True


def recover(folder: Path) -> list[str]:
    """Settles the writes a crash interrupted: committed ones finished, others (and stray
    temporary files) deleted. Run before the folder is read. Returns the finished names."""
    pending = Path(folder) / PENDING
    if not pending.is_dir():
        return []
    finished = sorted(p.name[:-len(COMMIT)] for p in pending.iterdir()
                      if p.name.endswith(COMMIT) and settle(folder, p.name[:-len(COMMIT)]))
    for path in pending.iterdir():
        if path.is_file() and not path.name.endswith(COMMIT):
            path.unlink()
    _fsync(pending)
    return finished


def remove(folder: Path, source: str | os.PathLike) -> bool:
    """Moves a served prompt file and its sidecar into `removed/` (replacing an earlier removed
    version of that name). The `.npy` moves first: from that rename on it is not served.
    Returns False (and moves nothing) when `source` is not a served file of `folder`."""
    folder, source = Path(os.path.abspath(folder)), Path(os.path.abspath(source))
    if source.parent != folder or not source.is_file():
        return False
    removed = _mkdir(folder, REMOVED)
    sidecar = sidecar_path(source)
    (removed / sidecar.name).unlink(missing_ok=True)  # never pair this array with an old sidecar
    os.replace(source, removed / source.name)
    _fsync(folder)
    if sidecar.exists():
        os.replace(sidecar, removed / sidecar.name)
        _fsync(folder)
    _fsync(removed)
    return True


# --------------------------------------------------------------------------------------------
# Prompts sent as bytes
# --------------------------------------------------------------------------------------------


def read_upload(data: bytes) -> LoadedPrompt:
    """A prompt sent as the bytes of a `.npy` or `.safetensors` file, read by the same safe
    readers as any prompt file (through a temporary file, deleted after).

    Raises:
      PromptFormatError (a ValueError): not npy or safetensors, or not a readable prompt; the
        message names "the uploaded prompt", never a server path.
    """
    kind = sniff_bytes(data[:16])
    if kind not in UPLOAD_FORMATS:
        raise PromptFormatError("the uploaded prompt is not the bytes of a .npy or .safetensors "
                                "file")
    with tempfile.TemporaryDirectory(prefix="prompt-jax-upload-") as tmp:
        path = Path(tmp) / f"upload{UPLOAD_FORMATS[kind]}"
        path.write_bytes(data)
        try:
            return load_prompt(path)
        except ValueError as e:
            raise PromptFormatError(str(e).replace(str(path), "the uploaded prompt")) from None
