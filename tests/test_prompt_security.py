"""Untrusted prompt files: malicious pickles are refused before anything runs, bombs are refused,
and the restricted reader/writer handle every tensor layout torch produces."""

from __future__ import annotations

import builtins
import collections
import functools
import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest
import torch

from prompt_jax.prompts.files import PromptFormatError, load_prompt
from prompt_jax.prompts.torch_pickle import (
    TorchFileError,
    UnsafePickleError,
    load_torch_file,
    save_torch_file,
)

# ---------------------------------------------------------------------------------------------
# Malicious pickles
# ---------------------------------------------------------------------------------------------


class _Reduce:
    """Pickles as `func(*args)`: what an attacker puts in a checkpoint."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker):
    """name -> (object whose unpickling creates `marker`, the global the reader must name)."""
    touch = f"touch {marker}"
    return {
        "os.system": (_Reduce(os.system, touch), r"(posix|os)\.system"),
        "builtins.eval": (_Reduce(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
                          r"(__builtin__|builtins)\.eval"),
        "builtins.exec": (_Reduce(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
                          r"(__builtin__|builtins)\.exec"),
        "subprocess.Popen": (_Reduce(subprocess.Popen, ["touch", str(marker)]),
                             r"(commands|subprocess)\.Popen"),
        "functools.partial": (_Reduce(functools.partial(os.system, touch)),
                              r"functools\.partial"),
        # Deep inside an allowed container, after harmless values.
        "nested": (collections.OrderedDict(
            [("trained_epoch", 3), ("optimizer", {"lr": 0.3, "hook": _Reduce(os.system, touch)})]),
            r"(posix|os)\.system"),
    }


def _run_unsafely(payload: bytes, marker) -> None:
    """The positive control: plain pickle really would create the marker."""
    result = pickle.loads(payload)
    if isinstance(result, subprocess.Popen):
        result.wait()
    assert marker.exists()
    marker.unlink()


def _torch_zip(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
    return path


@pytest.mark.parametrize("name", list(_payloads("m")))
@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("layout", ["task_prompt", "sst2_prompt.pt", "peft/adapter_model.bin"])
def test_malicious_pickle_is_refused_before_anything_runs(tmp_path, name, protocol, layout):
    marker = tmp_path / "pwned"
    obj, global_name = _payloads(marker)[name]
    payload = pickle.dumps(obj, protocol=protocol)
    _run_unsafely(payload, marker)

    path = tmp_path / layout
    path.parent.mkdir(exist_ok=True)
    _torch_zip(path, payload)
    if layout.startswith("peft/"):
        (path.parent / "adapter_config.json").write_text(
            '{"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 2, "token_dim": 2}')
        target = path.parent
    else:
        target = path
    message = rf"{re.escape(str(path))}: refusing to load global {global_name}: only tensors"
    with pytest.raises(UnsafePickleError, match=message):
        load_prompt(target)
    assert not marker.exists()


def test_legacy_non_zip_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "old.pt"
    path.write_bytes(pickle.dumps(_Reduce(os.system, f"touch {marker}"), protocol=2))
    with pytest.raises(PromptFormatError, match=r"old\.pt: unknown format"):
        load_prompt(path)
    with pytest.raises(TorchFileError, match=r"old\.pt: not a PyTorch zip checkpoint \(legacy "
                                             r"pre-1\.6 torch format"):
        load_torch_file(path)
    assert not marker.exists()


def test_numpy_object_array_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    array = np.array([_Reduce(os.system, f"touch {marker}")], dtype=object)
    np.save(tmp_path / "x.npy", array, allow_pickle=True)
    with pytest.raises(PromptFormatError, match=r"x\.npy: numpy object arrays are pickles"):
        load_prompt(tmp_path / "x.npy")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Bombs and absurd declared sizes
# ---------------------------------------------------------------------------------------------


def test_truncated_or_lying_safetensors_prompt_is_a_format_error(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "p.safetensors"
    save_file({"soft_prompt": np.ones((4, 8), np.float32)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:-16])
    with pytest.raises(PromptFormatError, match=r"p\.safetensors: not a readable safetensors "
                                                rf"file, truncated or corrupt \({len(data) - 16} "
                                                r"bytes\)"):
        load_prompt(path)
    path.write_bytes(struct.pack("<Q", 2**26) + b'{"soft_prompt": {}}')
    with pytest.raises(PromptFormatError, match=r"p\.safetensors: not a readable safetensors"):
        load_prompt(path)


@pytest.mark.subprocess
def test_reading_a_safetensors_prompt_does_not_import_the_model_loader(tmp_path):
    from safetensors.numpy import save_file

    save_file({"soft_prompt": np.ones((4, 8), np.float32)}, tmp_path / "p.safetensors")
    code = ("import sys; from prompt_jax.prompts.files import load_prompt; "
            f"print(load_prompt({str(tmp_path / 'p.safetensors')!r}).array.shape); "
            "print(sorted(m for m in sys.modules "
            "if m == 'jax' or m.startswith('prompt_jax.models')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.split("\n")[:2] == ["(4, 8)", "[]"], out.stdout + out.stderr


def test_compression_bomb_is_refused(tmp_path):
    path = tmp_path / "task_prompt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(np.zeros(1), protocol=2))
        zf.writestr("archive/data/0", b"\0" * (16 * 2**20))
    assert path.stat().st_size < 100_000
    with pytest.raises(TorchFileError, match=r"member archive/data/0 expands 16777216 / \d+ "
                                             r"bytes \(compression bomb\?\); refusing"):
        load_prompt(path)


def _patch_declared_sizes(path, size):
    """Rewrites every central-directory entry to claim `size` bytes (compressed and not)."""
    data = bytearray(path.read_bytes())
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) != -1:
        struct.pack_into("<II", data, start + 20, size, size)
        start += 4
    path.write_bytes(bytes(data))


def test_absurd_declared_total_size_is_refused(tmp_path):
    path = tmp_path / "task_prompt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"")
        for i in range(17):
            zf.writestr(f"archive/data/{i}", b"x")
    _patch_declared_sizes(path, 0xFFFFFFF0)  # 18 members x 4 GiB > the 64 GiB limit
    with pytest.raises(TorchFileError, match=r"task_prompt: declares 77309411040 uncompressed "
                                             r"bytes; refusing"):
        load_prompt(path)


def test_absurd_pickle_size_is_refused(tmp_path):
    path = _torch_zip(tmp_path / "task_prompt", pickle.dumps(1, protocol=2))
    _patch_declared_sizes(path, 300 * 2**20)
    with pytest.raises(TorchFileError, match=r"data\.pkl is larger than 268435456 bytes"):
        load_prompt(path)


def _tensor_pickle(numel: int, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """A pickle of one float32 tensor with a hand-set layout, as a crafted file would hold."""
    return (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n("
        + b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
        + b"J" + struct.pack("<i", numel) + b"tQ"
        + b"K\x00" + pickle.dumps(size, protocol=2)[2:-1] + pickle.dumps(stride, protocol=2)[2:-1]
        + b"\x89ccollections\nOrderedDict\n)RtR."
    )


def test_tensor_reading_past_its_storage_is_refused(tmp_path):
    path = tmp_path / "task_prompt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _tensor_pickle(6, (100, 768), (768, 1)))
        zf.writestr("archive/data/0", np.zeros(6, np.float32).tobytes())
    with pytest.raises(TorchFileError, match=r"tensor of size \(100, 768\), stride \(768, 1\), "
                                             r"offset 0 reads past its storage of 6 elements"):
        load_prompt(path)


def test_storage_declaring_more_elements_than_its_bytes_is_refused(tmp_path):
    path = tmp_path / "task_prompt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _tensor_pickle(2**31 - 1, (2, 2), (2, 1)))
        zf.writestr("archive/data/0", np.zeros(4, np.float32).tobytes())
    with pytest.raises(TorchFileError, match=r"storage archive/data/0 holds 16 bytes, declared "
                                             r"2147483647 x float32"):
        load_prompt(path)


# ---------------------------------------------------------------------------------------------
# Every layout torch writes, and our writer read back by torch
# ---------------------------------------------------------------------------------------------


def _torch_layouts():
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8) / 7
    return {
        "contiguous": base,
        "transposed": base.t(),
        "offset_slice": base[2:, 3:],
        "strided_slice": base[::2, 1::3],
        "broadcast_stride_0": torch.arange(8, dtype=torch.float32).expand(5, 8),
        "float16": base.half(),
        "bfloat16": (base * 1.3).bfloat16(),
        "float64": base.double(),
        "float16_transposed_offset": base.half().t()[1:],
    }


@pytest.mark.parametrize("name", list(_torch_layouts()))
def test_reader_handles_dtypes_strides_and_offsets(tmp_path, name):
    tensor = _torch_layouts()[name]
    torch.save({"prompt": tensor, "same_storage": tensor[:1]}, tmp_path / "t.pt")
    loaded = load_torch_file(tmp_path / "t.pt")
    reference = tensor.float().numpy()
    assert loaded["prompt"].shape == tuple(tensor.shape)
    assert loaded["prompt"].dtype == {torch.float16: np.float16, torch.bfloat16:
                                      ml_dtypes.bfloat16, torch.float64: np.float64}.get(
        tensor.dtype, np.float32)
    np.testing.assert_array_equal(loaded["prompt"].astype(np.float32), reference)
    np.testing.assert_array_equal(loaded["same_storage"].astype(np.float32), reference[:1])
    np.testing.assert_array_equal(load_prompt(f"{tmp_path / 't.pt'}::prompt").array, reference)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, np.int64])
def test_writer_output_is_read_by_torch_weights_only(tmp_path, dtype):
    array = (np.random.default_rng(0).standard_normal((9, 5)) * 100).astype(dtype)
    save_torch_file(tmp_path / "a.pt", array)
    save_torch_file(tmp_path / "b.pt", {"prompt": array, "other": array[:2].copy()})
    for mmap in (False, True):
        tensor = torch.load(tmp_path / "a.pt", weights_only=True, mmap=mmap)
        both = torch.load(tmp_path / "b.pt", weights_only=True, mmap=mmap)
        for t, expected in ((tensor, array), (both["prompt"], array), (both["other"], array[:2])):
            assert tuple(t.shape) == expected.shape and t.is_contiguous()
            as_numpy = t.view(torch.int16).numpy().view(dtype) if dtype == ml_dtypes.bfloat16 \
                else t.numpy()
            np.testing.assert_array_equal(as_numpy.view(np.uint8), expected.view(np.uint8))
    np.testing.assert_array_equal(load_torch_file(tmp_path / "a.pt").view(np.uint8),
                                  array.view(np.uint8))


def test_writer_refuses_what_torch_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="dtype complex64 has no torch storage type"):
        save_torch_file(tmp_path / "c.pt", np.zeros((2, 2), np.complex64))
    with pytest.raises(TypeError, match="a dict must map str -> numpy array"):
        save_torch_file(tmp_path / "d.pt", {"a": [1, 2]})
    assert not list(tmp_path.iterdir())
