"""Reads PyTorch zip checkpoints (`torch.save` format) without torch and without running code.

PyTorch files are pickles, and a pickle can call any Python function while it loads. This
reader's unpickler resolves only the few globals that rebuild tensors and plain containers;
any other global (os.system, builtins.eval, functools.partial, ...) raises `UnsafePickleError`
before anything is called. Tensors come back as numpy arrays (bfloat16 via ml_dtypes).

`save_torch_file` writes the same format, also without torch, for tools that expect
`torch.load` files (Prompt-Transferability, ATTEMPT).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

# Declared sizes beyond these are refused before reading (zip bombs, corrupt headers).
MAX_PICKLE_BYTES = 256 * 2**20
MAX_TOTAL_BYTES = 64 * 2**30
MAX_COMPRESSION_RATIO = 200


class UnsafePickleError(ValueError):
    """The pickle names a global outside the tensor-rebuilding allowlist."""


class TorchFileError(ValueError):
    """The file is not a readable PyTorch zip checkpoint."""


_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    del requires_grad, backward_hooks, metadata
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size + stride) or storage_offset < 0:
        raise TorchFileError(f"invalid tensor layout: size {size}, stride {stride}")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= storage.size:
        raise TorchFileError(
            f"tensor of size {size}, stride {stride}, offset {storage_offset} reads past its "
            f"storage of {storage.size} elements"
        )
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=size,
        strides=tuple(s * storage.itemsize for s in stride), writeable=False,
    )
    return np.array(view)  # own, contiguous copy


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    del requires_grad, backward_hooks
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    del requires_grad, backward_hooks, state
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, storages, source: str):
        super().__init__(io.BytesIO(data))
        self._storages = storages
        self._source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to load global {module}.{name}: only tensors and "
                "plain containers are read from PyTorch files (the file may be malicious)"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise TorchFileError(f"{self._source}: unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise TorchFileError(f"{self._source}: unsupported storage type {storage_type!r}")
        return self._storages(str(key), storage_type.dtype, int(numel))


# What `zipfile` raises on a corrupt archive (bad headers, CRCs, compression methods or sizes).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError,
               RuntimeError, OverflowError, struct.error, ValueError)


def load_torch_file(path: str | Path) -> Any:
    """Loads a `torch.save` zip file into numpy arrays and plain containers, safely.

    Raises:
      UnsafePickleError: the pickle names a global outside the allowlist.
      TorchFileError: not a zip checkpoint, truncated, corrupt, or absurd declared sizes.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as e:
        with open(path, "rb") as f:
            head = f.read(2)
        hint = (" (legacy pre-1.6 torch format: re-save it with a recent torch.save)"
                if head[:1] == b"\x80" else "")
        raise TorchFileError(f"{path}: not a PyTorch zip checkpoint{hint}: {e}") from None
    with archive:
        try:
            return _load_archive(archive, path)
        except (UnsafePickleError, TorchFileError):
            raise
        except _ZIP_ERRORS as e:
            raise TorchFileError(f"{path}: a corrupt zip archive: {type(e).__name__}: "
                                 f"{e}") from None


def _load_archive(archive: zipfile.ZipFile, path: Path) -> Any:
    """`load_torch_file`'s reading of an opened archive."""
    infos = {info.filename: info for info in archive.infolist()}
    total = sum(info.file_size for info in infos.values())
    if total > MAX_TOTAL_BYTES:
        raise TorchFileError(f"{path}: declares {total} uncompressed bytes; refusing")
    for info in infos.values():
        if (info.compress_type != zipfile.ZIP_STORED and info.compress_size > 0
                and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO):
            raise TorchFileError(
                f"{path}: member {info.filename} expands {info.file_size} / "
                f"{info.compress_size} bytes (compression bomb?); refusing"
            )
    pickles = [name for name in infos if name.endswith("data.pkl")]
    if len(pickles) != 1:
        raise TorchFileError(f"{path}: expected one */data.pkl in the archive, found {pickles}")
    prefix = pickles[0][: -len("data.pkl")]
    if infos[pickles[0]].file_size > MAX_PICKLE_BYTES:
        raise TorchFileError(f"{path}: data.pkl is larger than {MAX_PICKLE_BYTES} bytes")

    if f"{prefix}byteorder" in infos and archive.read(f"{prefix}byteorder") != b"little":
        raise TorchFileError(f"{path}: big-endian checkpoints are not supported")
    cache: dict[str, np.ndarray] = {}

    def storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        if key not in cache:
            name = f"{prefix}data/{key}"
            if name not in infos:
                raise TorchFileError(f"{path}: storage {name} is missing")
            expected = numel * dtype.itemsize
            if infos[name].file_size != expected:
                raise TorchFileError(
                    f"{path}: storage {name} holds {infos[name].file_size} bytes, "
                    f"declared {numel} x {dtype} = {expected}"
                )
            cache[key] = np.frombuffer(archive.read(name), dtype=dtype)
        return cache[key]

    try:
        return _RestrictedUnpickler(archive.read(pickles[0]), storage, str(path)).load()
    except (UnsafePickleError, TorchFileError):
        raise
    except Exception as e:  # malformed pickle stream
        raise TorchFileError(f"{path}: cannot unpickle: {type(e).__name__}: {e}") from None


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

_STORAGE_NAMES = {np.dtype(dtype): name for name, dtype in _STORAGE_DTYPES.items()}
_ALIGNMENT = 64  # torch.save aligns each record's data to 64 bytes (for torch.load(mmap=True))


def _op_str(text: str) -> bytes:
    data = text.encode("utf-8")
    return pickle.BINUNICODE + len(data).to_bytes(4, "little") + data


def _op_int(n: int) -> bytes:
    if 0 <= n < 2**8:
        return pickle.BININT1 + n.to_bytes(1, "little")
    if 0 <= n < 2**16:
        return pickle.BININT2 + n.to_bytes(2, "little")
    if -(2**31) <= n < 2**31:
        return pickle.BININT + n.to_bytes(4, "little", signed=True)
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + len(data).to_bytes(1, "little") + data


def _op_global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _op_tuple(items: list[bytes]) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _op_tensor(array: np.ndarray, key: str) -> bytes:
    """`torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`."""
    storage = _op_tuple([_op_str("storage"), _op_global("torch", _STORAGE_NAMES[array.dtype]),
                         _op_str(key), _op_str("cpu"), _op_int(array.size)]) + pickle.BINPERSID
    strides = [s // array.itemsize for s in array.strides]
    args = _op_tuple([
        storage, _op_int(0), _op_tuple([_op_int(n) for n in array.shape]),
        _op_tuple([_op_int(s) for s in strides]), pickle.NEWFALSE,
        _op_global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE,
    ])
    return _op_global("torch._utils", "_rebuild_tensor_v2") + args + pickle.REDUCE


def save_torch_file(path: str | Path, obj: np.ndarray | dict[str, np.ndarray]) -> None:
    """Writes an array, or a flat dict of str -> array, as a `torch.save` zip file.

    The result is what `torch.save` writes for a CPU tensor (or a dict of them): `torch.load`
    (including `weights_only=True`) and `load_torch_file` read it back bit-exactly. Written
    without torch: the pickle is emitted opcode by opcode and names only tensor-rebuilding
    globals.

    Raises:
      TypeError: obj is not an array or a dict of str -> array.
      ValueError: an array's dtype has no torch storage type (e.g. float8, complex).
    """
    path = Path(path)
    if isinstance(obj, dict):
        if not all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()):
            raise TypeError("save_torch_file: a dict must map str -> numpy array")
        arrays = [np.ascontiguousarray(v) for v in obj.values()]
    elif isinstance(obj, np.ndarray):
        arrays = [np.ascontiguousarray(obj)]
    else:
        raise TypeError(f"save_torch_file: expected a numpy array or dict, got {type(obj)}")
    for array in arrays:
        if array.dtype not in _STORAGE_NAMES:
            raise ValueError(f"{path}: dtype {array.dtype} has no torch storage type")
    tensors = [_op_tensor(a, str(i)) for i, a in enumerate(arrays)]
    if isinstance(obj, dict):
        items = b"".join(_op_str(k) + t for k, t in zip(obj, tensors, strict=True))
        body = pickle.EMPTY_DICT + pickle.MARK + items + pickle.SETITEMS
    else:
        body = tensors[0]
    data_pkl = pickle.PROTO + b"\x02" + body + pickle.STOP

    prefix = "archive"  # the folder name inside the zip; torch.load accepts any
    records = [(f"{prefix}/data.pkl", data_pkl), (f"{prefix}/byteorder", b"little")]
    records += [(f"{prefix}/data/{i}", a.tobytes()) for i, a in enumerate(arrays)]
    records.append((f"{prefix}/version", b"3\n"))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, payload in records:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            # Pad the local header's extra field so the data starts on a 64-byte boundary
            # (4 bytes of extra-field header: id 'FB' as torch uses, and the length).
            offset = archive.fp.tell() + 30 + len(name.encode()) + 4
            info.extra = b"FB" + ((-offset) % _ALIGNMENT).to_bytes(2, "little")
            info.extra += b"Z" * ((-offset) % _ALIGNMENT)
            archive.writestr(info, payload)
