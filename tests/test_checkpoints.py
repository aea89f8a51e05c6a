"""Train-state checkpoints with real orbax: damaged steps are skipped on resume with a warning,
and a folder with no intact step is one clear error."""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_jax.training.checkpoints import CheckpointRestoreError, TrainCheckpoints


def _state(step):
    """A small pytree of the kinds a train state holds (not a TrainState: any pytree works)."""
    rng = np.random.default_rng(step)
    return {
        "step": jnp.asarray(step, jnp.int32),
        "trainable": {"prompt": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32)},
        "opt_state": [jnp.asarray(rng.standard_normal(5), jnp.float32), jnp.asarray(step * 7)],
        "rng": jax.random.PRNGKey(step),
    }


def _assert_same(restored, expected):
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(expected)
    for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(expected),
                    strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _corrupt(step_dir, which):
    """Overwrites files of a finished step with random bytes; returns how many."""
    files = [p for p in sorted(step_dir.rglob("*")) if p.is_file() and which(p)]
    for p in files:
        p.write_bytes(os.urandom(max(p.stat().st_size, 64)))
    return len(files)


ARRAY_DATA = {
    # The array payload: the OCDBT databases (manifests and data files) of the step's item.
    "array-data": lambda p: "ocdbt" in p.name or "ocdbt." in str(p) or p.parent.name == "d",
    # The tree metadata orbax reads first.
    "tree-metadata": lambda p: p.name == "_METADATA",
}


@pytest.fixture
def saved(tmp_path):
    checkpoints = TrainCheckpoints(tmp_path / "checkpoints", keep=3)
    for step in (2, 4):
        checkpoints.save(_state(step), step)
    yield checkpoints
    checkpoints.close()


def test_restore_latest_returns_the_newest_step_exactly(saved):
    assert saved.all_steps() == [2, 4]
    state, step = saved.restore_latest(_state(0))
    assert step == 4
    _assert_same(state, _state(4))
    _assert_same(saved.restore(_state(0), step=2), _state(2))


@pytest.mark.parametrize("damage", sorted(ARRAY_DATA))
def test_damaged_newest_step_falls_back_to_the_previous_one(saved, damage, caplog):
    assert _corrupt(saved.directory / "4", ARRAY_DATA[damage]) > 0
    with caplog.at_level(logging.WARNING, logger="prompt_jax.training.checkpoints"):
        state, step = saved.restore_latest(_state(0))
    assert step == 2
    _assert_same(state, _state(2))
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"checkpoint step 4 in {saved.directory} cannot be restored" in m
               for m in messages), messages
    assert any(f"resuming from step 2 in {saved.directory} instead" in m for m in messages)
    # The damaged step is moved aside, not deleted, and no longer counts as the latest...
    assert saved.all_steps() == [2] and saved.latest_step() == 2
    assert (saved.damaged_directory / "4").is_dir()
    # ...so the resumed run can save step 4 again, and it restores.
    saved.save(_state(4), 4)
    state, step = saved.restore_latest(_state(0))
    assert step == 4
    _assert_same(state, _state(4))


def test_no_intact_step_is_one_clear_error(saved):
    for step in (2, 4):
        assert _corrupt(saved.directory / str(step), ARRAY_DATA["array-data"]) > 0
    with pytest.raises(CheckpointRestoreError) as info:
        saved.restore_latest(_state(0))
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message and len(message) < 1200
    assert message.startswith(f"{saved.directory}: no checkpoint can be restored: step(s) "
                              "4, 2 are damaged or were written for a different train state "
                              "(step 4: ValueError: ")
    assert "Delete that folder, or start the run again without --resume (or with --overwrite)" \
        in message
    assert saved.all_steps() == [2, 4]  # nothing is moved when nothing restores
    with pytest.raises(CheckpointRestoreError, match=r"step 4 cannot be restored \("):
        saved.restore(_state(0), step=4)


def test_clear_deletes_every_checkpoint(saved):
    _corrupt(saved.directory / "4", ARRAY_DATA["array-data"])
    saved.restore_latest(_state(0))  # moves step 4 aside
    assert saved.damaged_directory.is_dir()
    saved.clear()
    assert saved.all_steps() == [] and saved.latest_step() is None
    assert not saved.damaged_directory.exists()
    assert [p.name for p in saved.directory.iterdir()] == []
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        saved.restore_latest(_state(0))
    saved.save(_state(6), 6)
    assert saved.all_steps() == [6]
