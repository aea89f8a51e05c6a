"""The released-projectors benchmark's ranking on made-up prompts, and its stored result renders
as tables."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.released_projectors import OUTPUT, leave_one_out, markdown, own_ranks


def test_own_target_ranks_first_when_the_projection_is_it():
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(4, 5, 8)).astype(np.float32)
    projected = targets[[2, 0]] + 0.01 * rng.normal(size=(2, 5, 8)).astype(np.float32)
    ranks = own_ranks(projected, targets, rows=[2, 0])
    for name in ("E_cos", "E_euc"):
        assert ranks[name]["ranks"] == [1, 1] and ranks[name]["top1"] == 1.0
    # Projected onto another task's target: its own one is not the nearest.
    elsewhere = own_ranks(targets[[1]], targets, rows=[3])["E_cos"]
    assert elsewhere["ranks"][0] > 1 and elsewhere["top1"] == 0.0


def test_leave_one_out_projects_every_task_without_its_own_pair():
    rng = np.random.default_rng(1)
    sources = rng.normal(size=(5, 3, 4)).astype(np.float32)
    w = rng.normal(size=(4, 6)).astype(np.float32)
    projected, fits = leave_one_out("linear", sources, sources @ w)
    # An exactly linear relation is recovered from the other tasks alone.
    np.testing.assert_allclose(projected, sources @ w, atol=1e-4)
    assert len(fits) == 5 and min(fits) > 0.999


def test_the_stored_result_renders():
    text = markdown(json.loads(OUTPUT.read_text()))
    assert "| t5-base -> roberta-base |" in text and "chance" in text
