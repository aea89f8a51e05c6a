"""The gin files: each one parses, the README names only files that exist, and the demo's recipe
in gin is the one `prompt-jax demo` runs."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from prompt_jax.commands import demo, gin_config
from prompt_jax.training import run

ROOT = Path(__file__).resolve().parent.parent
GIN_FILES = sorted(p.relative_to(gin_config.GIN_DIR).as_posix()
                   for p in gin_config.GIN_DIR.rglob("*.gin"))


@pytest.mark.parametrize("name", GIN_FILES)
def test_every_gin_file_resolves_to_a_run_config(name):
    assert isinstance(gin_config.resolve([name]), run.RunConfig)


def test_readme_names_only_gin_files_that_exist():
    named = set(re.findall(r"--gin_file (\S+\.gin)", (ROOT / "README.md").read_text()))
    assert named, "the README shows no gin file"
    assert named <= set(GIN_FILES), named - set(GIN_FILES)


def test_demo_recipe_in_gin_is_the_demo():
    config = gin_config.resolve(["models/smollm2_135m.gin", "prompts/text_20.gin",
                                 "tasks/sst2.gin", "runs/demo.gin"],
                                overrides={"output_dir": demo.DEMO.output_dir})
    assert config == demo.DEMO, [
        (f.name, getattr(config, f.name), getattr(demo.DEMO, f.name))
        for f in dataclasses.fields(run.RunConfig)
        if getattr(config, f.name) != getattr(demo.DEMO, f.name)]


def test_gin_files_resolve_from_a_folder_holding_runs(tmp_path, monkeypatch):
    """A `runs/` output folder in the working directory must not hide gin_configs/runs/."""
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert gin_config.resolve(["runs/demo.gin"]).steps == demo.DEMO.steps
    with pytest.raises(FileNotFoundError, match="runs/nope.gin"):
        gin_config.resolve(["runs/nope.gin"])
