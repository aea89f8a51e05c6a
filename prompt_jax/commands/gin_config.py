"""gin at the edge: binds `RunConfig` / `OptimizerConfig` fields from gin files, `--gin_param`
bindings and plain flags. Library code never reads gin."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import gin

from prompt_jax.tasks.task_spec import file_task
from prompt_jax.training.run import RunConfig
from prompt_jax.training.train import OptimizerConfig

gin.external_configurable(RunConfig, module="prompt_jax")
gin.external_configurable(OptimizerConfig, module="prompt_jax")
gin.external_configurable(file_task, module="prompt_jax")  # RunConfig.task = @file_task()

GIN_DIR = Path(__file__).resolve().parents[2] / "gin_configs"


def find_gin_file(name: str) -> Path:
    """A gin file as given (relative to the working directory) or under gin_configs/.

    Resolved here rather than by gin's own search, which takes a relative path's folder for a
    Python package first and breaks when the working directory holds a folder of that name
    (`runs/`, where runs write their outputs).

    Raises:
      FileNotFoundError: in neither place; the message names both.
    """
    for path in (Path(name), GIN_DIR / name):
        if path.is_file():
            return path.resolve()
    raise FileNotFoundError(f"gin file {name!r} is neither a file nor under {GIN_DIR}")


def resolve(gin_files: Sequence[str] = (), gin_params: Sequence[str] = (),
            overrides: dict | None = None) -> RunConfig:
    """RunConfig from gin files (searched in gin_configs/ too), bindings, then plain flags.

    Plain flags (`overrides`, None values ignored) win over gin: they are what a user typed
    last. Unknown gin bindings raise (gin's own error names them).
    """
    gin.clear_config()
    gin.add_config_file_search_path(str(GIN_DIR))
    gin.parse_config_files_and_bindings([str(find_gin_file(f)) for f in gin_files],
                                        list(gin_params))
    config = gin.get_configurable("prompt_jax.RunConfig")()
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    opt_fields = {f.name for f in dataclasses.fields(OptimizerConfig)}
    opt = {k: overrides.pop(k) for k in list(overrides) if k in opt_fields}
    if opt:
        overrides["optimizer"] = dataclasses.replace(config.optimizer, **opt)
    return dataclasses.replace(config, **overrides)


def operative_config() -> str:
    """The gin bindings that were used, for writing beside the run's outputs."""
    return gin.config_str()
