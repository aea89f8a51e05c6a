"""Device meshes and the ONE table mapping logical axis names to mesh axes.

Parameters carry logical axis names (`LOGICAL_AXES`, defined here beside their rules); this
module turns them into `NamedSharding`s over a ('data', 'model') mesh. The soft prompt and the
optimizer state are replicated; batches are split over 'data'; large frozen matrices are split
over 'model'.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

MESH_AXES = ("data", "model")

# Every logical axis name a parameter or a large activation may carry, and the mesh axis it maps
# to (None = replicated): the ONE rules table.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", "data"),
    ("vocab", "model"),
    ("mlp", "model"),  # FFN hidden width
    ("heads", "model"),
    ("embed", None),  # d_model
    ("kv", None),  # per-head width
    ("layers", None),  # stacked (scanned) transformer blocks
    ("length", None),
    ("prompt", None),
    ("relpos_buckets", None),  # T5 relative position buckets
    ("abspos", None),  # learned absolute positions (BERT / RoBERTa)
    ("token_types", None),  # BERT segment ids
)
LOGICAL_AXES: tuple[str, ...] = tuple(name for name, _ in LOGICAL_AXIS_RULES)


def make_mesh(data: int | None = None, model: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ('data', 'model') mesh over the first data x model of `devices` (default: all);
    `data` defaults to all the devices the model axis leaves."""
    devices = list(devices if devices is not None else jax.devices())
    if data is None:
        data = len(devices) // model
    if data < 1 or model < 1 or data * model > len(devices):
        raise ValueError(f"mesh {data} x {model} (data x model) does not fit the "
                         f"{len(devices)} devices available")
    return Mesh(np.asarray(devices[: data * model]).reshape(data, model), MESH_AXES)


def mesh_axis(logical: str) -> str | None:
    """The mesh axis a logical axis maps to; unknown names raise."""
    for name, axis in LOGICAL_AXIS_RULES:
        if name == logical:
            return axis
    raise ValueError(f"logical axis {logical!r} has no rule; known: "
                     f"{[n for n, _ in LOGICAL_AXIS_RULES]}")


def logical_to_spec(logical: PartitionSpec | Sequence[str | None], shape: Sequence[int],
                    mesh: Mesh) -> PartitionSpec:
    """Mesh PartitionSpec for an array with these logical axes.

    A dimension whose size the mesh axis does not divide (e.g. SmolLM2's 9 heads over 2
    devices) stays replicated rather than being padded.
    """
    spec = []
    used = set()
    for name, size in zip(logical, shape, strict=True):
        axis = mesh_axis(name) if name is not None else None
        if axis is not None and (axis in used or size % mesh.shape[axis] != 0):
            if axis not in used:
                log.info("axis %s (size %d) not divisible by mesh axis %s (%d): replicated",
                         name, size, axis, mesh.shape[axis])
            axis = None
        if axis is not None:
            used.add(axis)
        spec.append(axis)
    return PartitionSpec(*spec)


def param_shardings(model, mesh: Mesh):
    """NamedSharding tree for a backbone's params, from its logical axes."""
    shapes, axes = model.abstract_params()
    return jax.tree_util.tree_map(
        lambda s, a: NamedSharding(mesh, logical_to_spec(a, s.shape, mesh)),
        shapes, axes, is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over 'data', the rest replicated."""
    return NamedSharding(mesh, PartitionSpec("data"))


def shard_batch(batch: dict, mesh: Mesh) -> dict[str, jax.Array]:
    """A host batch as global arrays split over 'data' (`batch_sharding`).

    Every process of a multi-process job builds the same global batch (the same order from the
    same seed); each puts on its devices only the rows those devices hold, so a step sees the
    same batch whatever the number of processes. Arrays already placed pass through.
    """
    sharding = batch_sharding(mesh)

    def place(value):
        if isinstance(value, jax.Array):
            return value
        value = np.asarray(value)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return {key: place(value) for key, value in batch.items()}


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    data = mesh.shape["data"]
    if batch_size % data != 0:
        raise ValueError(f"batch size {batch_size} is not divisible by the mesh's data axis "
                         f"({data} devices); use a multiple of {data}")


def shard_params(params, model, mesh: Mesh):
    """Places frozen params on the mesh according to the rules table."""
    return jax.device_put(params, param_shardings(model, mesh))
