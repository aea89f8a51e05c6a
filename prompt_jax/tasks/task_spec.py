"""A file task that outlives its process: its definition stored, and the task made again from it.

`define_file_task` keeps what defines a task (its files with their sha256, the text and label
fields, the labels, verbalizers and template). A run writes it to `task_spec.json` in its
folder and into every prompt's sidecar (`task_spec`), so that `eval`, `infer`, `serve --bank`,
`transfer` and `project` in a new process recreate the task from the prompt file alone
(`define_from_prompt`, `define_from_metadata`) or from a spec file (`--task_spec FILE`,
`read_spec`). A file that changed since is reported (`TaskFileChangedWarning`, naming it); a
file that is gone is an error. gin reaches it through `file_task`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prompt_jax.tasks.readers import data_root
from prompt_jax.tasks.user_file import DEFINITIONS, define_file_task, sha256

SPEC_FILE = "task_spec.json"  # the definition in a run folder
SIDECAR_KEY = "task_spec"  # ... and in a prompt's sidecar
SPLITS = ("train", "validation", "test")


class TaskFileChangedWarning(UserWarning):
    """A task file's bytes differ from those the prompt was trained on."""


def definition(task: str) -> dict[str, Any] | None:
    """The stored definition of a file task defined in this process (None: not a file task)."""
    from prompt_jax.tasks.registry import get_task

    if task not in DEFINITIONS:
        return None
    if get_task(task).family != "file":  # a built-in task registered over it since
        return None
    return json.loads(json.dumps(DEFINITIONS[task]))  # a copy


def _check(spec: Mapping[str, Any], where: str) -> None:
    missing = [k for k in ("name", "files", "text_fields", "label_field", "labels")
               if k not in spec]
    if missing:
        raise ValueError(f"{where}: not a file task's definition (no {', '.join(missing)})")
    unknown = sorted(set(spec["files"]) - set(SPLITS))
    if unknown:
        raise ValueError(f"{where}: unknown split(s) {unknown} in the task's files; known: "
                         f"{', '.join(SPLITS)}")


def define_from_spec(spec: Mapping[str, Any], *, where: str = "task spec") -> str:
    """Registers the file task a stored definition describes, and returns its name.

    Each file is read again from its path; one whose sha256 differs from the stored one is
    reported with a `TaskFileChangedWarning` naming it (the task is still defined from it).

    Args:
      spec: a definition, as `definition` returns and `task_spec.json` stores.
      where: names the definition's origin in messages (e.g. the prompt file).

    Raises:
      FileNotFoundError: a task file is gone (naming it and `where`).
      ValueError: not a definition, or the files no longer fit it (`define_file_task`'s checks).
    """
    _check(spec, where)
    files = {}
    for split, entry in spec["files"].items():
        path = Path(entry["path"])
        if not path.is_file():
            raise FileNotFoundError(f"{where}: task {spec['name']!r} was defined on its "
                                    f"{split} file {path}, which no longer exists")
        if entry.get("sha256") and sha256(path) != entry["sha256"]:
            warnings.warn(f"{where}: task {spec['name']!r}: its {split} file {path} changed "
                          "since the task was defined (sha256 differs); the task is made from "
                          "the file as it is now", TaskFileChangedWarning, stacklevel=2)
        files[split] = path
    define_file_task(spec["name"], files.get("train"), files.get("validation"),
                     files.get("test"), text_fields=spec["text_fields"],
                     label_field=spec["label_field"], labels=spec["labels"],
                     verbalizers=spec.get("verbalizers"), template=spec.get("template"))
    return spec["name"]


def define_from_metadata(metadata: Mapping[str, Any], *, where: str = "sidecar") -> str | None:
    """Recreates the file task a prompt's sidecar carries, if any.

    Returns:
      The task's name (registered now), or None when the sidecar holds no file task.
    """
    spec = metadata.get(SIDECAR_KEY)
    return None if spec is None else define_from_spec(spec, where=where)


def _sidecar(prompt: str | Path) -> Path:
    from prompt_jax.prompts.formats import sidecar_path

    return sidecar_path(Path(str(prompt).split("::")[0]))


def prompt_metadata(prompt: str | Path) -> dict[str, Any]:
    """A prompt file's JSON sidecar (`<name>.json` beside `<name>.npy`); {} when it has none."""
    path = _sidecar(prompt)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: the prompt's sidecar is not JSON ({e.msg})") from None


def define_from_prompt(prompt: str | Path) -> str | None:
    """Recreates the file task of a saved prompt from its sidecar; its task's name (a built-in
    task's too), or None when the sidecar names no task."""
    metadata = prompt_metadata(prompt)
    return define_from_metadata(metadata, where=str(prompt)) or metadata.get("task")


def read_spec(path: str | Path) -> dict[str, Any]:
    """A definition from a file: a run's `task_spec.json`, or a prompt's sidecar holding one.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not JSON, or neither a definition nor a sidecar holding one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task spec not found: {path}")
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e.msg})") from None
    if isinstance(value, dict) and SIDECAR_KEY in value:
        value = value[SIDECAR_KEY]
    if not isinstance(value, dict):
        raise ValueError(f"{path}: not a file task's definition")
    _check(value, str(path))
    return value


def define_from_file(path: str | Path) -> str:
    """`define_from_spec(read_spec(path))`: the task's name."""
    return define_from_spec(read_spec(path), where=str(path))


def write_spec(task: str, folder: str | Path, name: str = SPEC_FILE) -> Path | None:
    """Writes a file task's definition as `folder/<name>` (default `task_spec.json`); None for
    any other task. A definition is configuration read back, not a result: no provenance."""
    spec = definition(task)
    if spec is None:
        return None
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=2) + "\n")
    return path


def file_task(name: str = "", train: str = "", validation: str = "", test: str = "", *,
              text_fields: Sequence[str] = ("text",), label_field: str = "label",
              labels: Sequence[str] | str | None = None,
              verbalizers: Sequence[str] | str | None = None, template: str = "",
              spec: str = "") -> str:
    """The gin route to a file task: registers it and returns its name, for
    `RunConfig.task = @file_task()` (see `gin_configs/tasks/file_task.gin`).

    Either `spec` (a `task_spec.json` or a prompt's sidecar) or `name` and the files, as in
    `define_file_task`. A relative path is read from the data folder (`$PROMPT_JAX_DATA`, else
    `../shared/data`), as the built-in tasks' files are.
    """
    if spec:
        return define_from_file(spec)
    if not name:
        raise ValueError("file_task needs a name and its files, or spec=<task_spec.json>")

    def resolve(path: str) -> Path | None:
        return None if not path else (Path(path) if Path(path).is_absolute()
                                      else data_root() / path)

    define_file_task(name, resolve(train), resolve(validation), resolve(test),
                     text_fields=text_fields, label_field=label_field, labels=labels,
                     verbalizers=verbalizers, template=template or None)
    return name
