"""The CLI keeps compiled programs on disk (JAX's persistent compilation cache) unless told
not to."""

from __future__ import annotations

import jax
import pytest

from prompt_jax.commands import cli, common

OPTIONS = ("jax_enable_compilation_cache", "jax_compilation_cache_dir",
           "jax_persistent_cache_min_compile_time_secs")


@pytest.fixture
def jax_cache_options():
    """The test process's own cache settings, restored afterwards."""
    saved = {name: getattr(jax.config, name) for name in OPTIONS}
    jax.config.update("jax_compilation_cache_dir", None)  # as a fresh process starts
    yield
    for name, value in saved.items():
        jax.config.update(name, value)


def _run(*argv):
    with pytest.raises(SystemExit) as stopped:  # an unknown task: the command stops at once
        cli.main([*argv, "eval", "--task", "no_such_task", "--model", "x"])
    assert stopped.value.code == 2


def test_the_cli_turns_the_cache_on_in_the_prompt_jax_cache_folder(
        jax_cache_options, tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPT_JAX_CACHE", str(tmp_path))
    _run()
    assert jax.config.jax_enable_compilation_cache is True
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == common.MIN_COMPILE_SECONDS


def test_the_flag_turns_it_off(jax_cache_options, tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPT_JAX_CACHE", str(tmp_path))
    _run("--no_compilation_cache")
    assert jax.config.jax_enable_compilation_cache is False
    assert jax.config.jax_compilation_cache_dir is None


def test_a_folder_the_user_chose_is_kept(jax_cache_options, tmp_path):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    _run()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
