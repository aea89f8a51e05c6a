"""Bad checkpoints fail loudly, naming the file and the problem; nothing is half-loaded."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import zipfile

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from prompt_jax.models import CheckpointError, load_pretrained
from prompt_jax.models.checkpoint_files import read_safetensors
from prompt_jax.prompts.torch_pickle import UnsafePickleError, load_torch_file
from tests.hf_models import save_tiny


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save_tiny("bert", tmp_path_factory.mktemp("ckpt") / "bert")


@pytest.fixture
def copy(bert_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(bert_dir, target)
    return target


def test_corrupt_safetensors_names_the_file(copy):
    weights = copy / "model.safetensors"
    weights.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors "
                                              r"file, truncated or corrupt \(4096 bytes\)"):
        load_pretrained(copy)


def test_truncated_safetensors_names_the_file_and_size(copy):
    weights = copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"model\.safetensors: not a readable safetensors "
                                              rf"file, truncated or corrupt \({len(data) // 2} "
                                              rf"bytes\): .*not fully covered"):
        load_pretrained(copy)


def test_header_only_truncation(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(CheckpointError, match=r"x\.safetensors: not a readable safetensors file"
                                              r".*\(10 bytes\): .*header"):
        read_safetensors(path)


def test_safetensors_bfloat16_and_float8_tensors(tmp_path):
    import ml_dtypes
    import torch
    from safetensors.torch import save_file as save_torch

    path = tmp_path / "x.safetensors"
    values = torch.tensor([[1.5, -2.25], [0.0, 3.0]], dtype=torch.bfloat16)
    save_torch({"half": values, "f8": torch.zeros(2, dtype=torch.float8_e4m3fn)}, path)
    tensors = read_safetensors(path)
    assert tensors["half"].shape == (2, 2) and tensors["f8"].shape == (2,)
    half = tensors["half"].read()
    assert half.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(half.astype(np.float32), values.float().numpy())
    with pytest.raises(CheckpointError, match=r"x\.safetensors: cannot read tensor 'f8' "
                                              r"\(F8_E4M3\)"):
        tensors["f8"].read()


def test_config_shapes_disagreeing_with_weights_name_key_and_both_shapes(copy):
    config = json.loads((copy / "config.json").read_text())
    config["intermediate_size"] = 80  # the weights have 64
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: bert\.encoder\.layer\.0\."
                                              r"intermediate\.dense\.weight has shape \(64, 32\) "
                                              r"but the config expects \(80, 32\)"):
        load_pretrained(copy)


def test_unknown_architecture(copy):
    config = json.loads((copy / "config.json").read_text())
    config["model_type"] = "gpt2"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: unknown architecture "
                                              r"model_type='gpt2'"):
        load_pretrained(copy)


def test_corrupt_config_json(copy):
    (copy / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_pretrained(copy)


def test_missing_weight_is_an_error_never_random(copy):
    weights = copy / "model.safetensors"
    tensors = load_file(weights)
    del tensors["bert.encoder.layer.1.attention.self.key.weight"]
    save_file(tensors, weights)
    with pytest.raises(CheckpointError, match=r"missing weights for bert: \['bert\.encoder\."
                                              r"layer\.1\.attention\.self\.key\.weight'\]"):
        load_pretrained(copy)


def test_unmapped_tensor_is_an_error(copy):
    weights = copy / "model.safetensors"
    tensors = load_file(weights)
    tensors["bert.encoder.layer.0.adapter.weight"] = np.zeros((4, 4), np.float32)
    save_file(tensors, weights)
    with pytest.raises(CheckpointError, match=r"unmapped tensors .*adapter\.weight"):
        load_pretrained(copy)


def test_partial_mlm_head_is_missing_not_dropped(copy):
    weights = copy / "model.safetensors"
    tensors = load_file(weights)
    del tensors["cls.predictions.transform.LayerNorm.weight"]
    save_file(tensors, weights)
    with pytest.raises(CheckpointError, match=r"missing weights .*LayerNorm\.weight"):
        load_pretrained(copy)


def test_untied_config_without_head_is_missing(tmp_path):
    directory = save_tiny("t5_v1_1", tmp_path / "t5")
    config = json.loads((directory / "config.json").read_text())
    config["tie_word_embeddings"] = False  # says untied, but no lm_head.weight on disk
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"missing weights for t5: \['lm_head\.weight'\]"):
        load_pretrained(directory)


def test_corrupt_gguf_names_the_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + os.urandom(256))
    with pytest.raises(CheckpointError, match=r"model\.gguf: not a readable GGUF file"):
        load_pretrained(path)


def test_no_weights_in_directory(copy):
    (copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights found"):
        load_pretrained(copy)


def test_hub_id_offline_fails_fast_with_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError, match=r"google/t5-v1_1-small: not a local path, and "
                                              r"downloading it from the Hugging Face hub failed"):
        load_pretrained("google/t5-v1_1-small")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pytorch_bin_is_refused_before_running(copy, tmp_path):
    marker = tmp_path / "pwned"
    (copy / "model.safetensors").unlink()
    with zipfile.ZipFile(copy / "pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": _Evil(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: refusing to load global "
                                              r"(posix|os)\.system"):
        load_pretrained(copy)
    with pytest.raises(UnsafePickleError):
        load_torch_file(copy / "pytorch_model.bin")
    assert not marker.exists()


def test_torch_storage_size_mismatch_is_refused(tmp_path):
    import torch

    path = tmp_path / "t.pt"
    torch.save({"w": torch.arange(6, dtype=torch.float32)}, path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    storage = next(n for n in members if "/data/" in n)
    members[storage] = members[storage][:8]
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(ValueError, match=r"holds 8 bytes, declared 6 x float32 = 24"):
        load_torch_file(path)
