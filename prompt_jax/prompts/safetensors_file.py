"""Reading `.safetensors` files with the `safetensors` package, errors naming the file.

Shared by the model loader (`models.checkpoint_files`) and the prompt readers
(`prompts.formats`). It imports neither of them (nor jax), so reading a prompt file never pulls
in the model loader.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# Imported for its side effect: it registers "bfloat16" with numpy, which is how the package's
# numpy framework turns BF16 tensors into arrays (without it, `get_tensor` raises TypeError
# "data type 'bfloat16' not understood").
import ml_dtypes  # noqa: F401
import numpy as np
from safetensors import SafetensorError, safe_open

# read() gives the whole tensor; read(index), index a tuple of slices, only that box of it.
LazyTensor = tuple[tuple[int, ...], Callable[..., np.ndarray]]


def open_safetensors(path: Path, error: type[Exception]) -> dict[str, LazyTensor]:
    """The shape and a lazy reader of every tensor in a `.safetensors` file.

    The package validates the header when the file is opened (JSON, dtypes, shapes, offsets that
    cover the data exactly, so a truncated file is caught here); each tensor is copied out of
    the memory-mapped file only when its reader is called.

    Args:
      path: the file.
      error: the exception type to raise (the caller's own, e.g. `CheckpointError`).

    Returns:
      {name: (shape, read)}, where `read()` returns the tensor as a numpy array (BF16 as
      `ml_dtypes.bfloat16`) and `read(index)` (a tuple of slices, one per dimension) only the
      box `index` of it, copying from the file only the bytes of that box.

    Raises:
      error: the file is not a valid safetensors file (naming the file, its size and the
        package's reason), or a tensor cannot be read (naming the tensor).
    """
    try:
        handle = safe_open(path, framework="numpy")
        shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except SafetensorError as e:
        size = path.stat().st_size
        raise error(
            f"{path}: not a readable safetensors file, truncated or corrupt ({size} bytes): {e}"
        ) from None

    def reader(name: str) -> Callable[..., np.ndarray]:
        def read(index: tuple[slice, ...] | None = None) -> np.ndarray:
            try:
                if index is not None:
                    return handle.get_slice(name)[index]
                return handle.get_tensor(name)
            # A dtype numpy has no name for (e.g. F8_E4M3) surfaces as TypeError or
            # AttributeError from the package's numpy conversion.
            except (SafetensorError, TypeError, AttributeError) as e:
                dtype = handle.get_slice(name).get_dtype()
                raise error(f"{path}: cannot read tensor {name!r} ({dtype}): {e}") from None

        return read

    return {name: (shape, reader(name)) for name, shape in shapes.items()}
