"""T5-XXL and Llama 8B fit when sharded: the real train step compiled ahead of time on eight
fake CPU devices, without the weights, its per-device memory read from the executable."""

from __future__ import annotations

import jax
import pytest

from prompt_jax import partitioning
from prompt_jax.training import aot


@pytest.fixture(scope="module")
def reports() -> dict[str, aot.MemoryReport]:
    mesh = partitioning.make_mesh(1, 8)
    found = {shape: aot.memory_report(shape, mesh, batch_size=8)
             for shape in ("t5-xxl", "llama-8b", "t5-base")}
    print("\n" + aot.format_table(list(found.values())))  # the per-device memory table
    return found


@pytest.mark.parametrize("shape,billions", [("t5-xxl", 11.1), ("llama-8b", 8.0)])
def test_a_big_model_is_split_eight_ways_and_nothing_large_is_replicated(reports, shape,
                                                                          billions):
    r = reports[shape]
    assert jax.device_count() == 8 and r.mesh == (1, 8)
    assert r.num_params / 1e9 == pytest.approx(billions, abs=0.05)
    assert r.param_bytes == 2 * r.num_params  # bfloat16
    assert r.replicated == ()
    # Every large matrix is split over the model axis: each device holds an eighth (plus
    # small norm scales kept whole).
    assert r.param_bytes / 8 <= r.param_bytes_per_device < 1.01 * r.param_bytes / 8
    # The compiled step's arguments on one device are that share plus the small train state
    # and batch: no whole tensor of the model is an argument of any device.
    assert 0 < r.argument_bytes - r.param_bytes_per_device < 16 << 20
    assert r.temp_bytes > 0


def test_a_param_the_mesh_cannot_split_is_reported_replicated(reports):
    """T5-base's 12 heads do not divide 8 devices: its attention projections stay whole on
    every device, and the report names them."""
    names = {path for path, _ in reports["t5-base"].replicated}
    assert {"encoder/layers/self_attn/q/kernel", "decoder/layers/cross_attn/o/kernel"} <= names
    assert all(nbytes >= aot.LARGE_BYTES for _, nbytes in reports["t5-base"].replicated)
    assert "shared/embedding" not in names  # the vocabulary still splits


def test_unknown_shape_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown model shape 't5-xxxl'; known:.*t5-xxl"):
        aot.memory_report("t5-xxxl", partitioning.make_mesh(1, 8))
