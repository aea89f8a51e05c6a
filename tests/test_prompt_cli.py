"""The registry of released prompts, `prompt-jax prompts ls` and `prompt-jax prompts convert`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from prompt_jax.commands import cli
from prompt_jax.prompts.files import load_prompt
from prompt_jax.prompts.registry import identify, list_prompts, parse_transferability_name
from tests.shared_prompts import shared_prompts_dir

SHARED = shared_prompts_dir()
SST2_T5 = SHARED / "prompt_transferability" / "SST2PromptT5" / "task_prompt"


@pytest.mark.parametrize("name,expected", [
    ("SST2PromptT5Small", ("SST2", "t5-small", "")),
    ("MNLIPromptRoberta_proj", ("MNLI", "roberta-base", "proj")),
    ("snliPrompt_cross_model_T5_to_Roberta", ("snli", "roberta-base",
                                              "cross_model_T5_to_Roberta")),
    ("laptop_base_emotionPromptRoberta_tanh", ("laptop", "roberta-base", "base_emotion+tanh")),
    ("nq_openPromptT5", ("nq_open", "t5-base", "")),
    ("IMDB_trainedPromptRoberta", ("IMDB", "roberta-base", "trained")),
    ("QQPPromptRobertaLarge", ("QQP", "roberta-large", "")),
    ("recastnerPromptBert", ("recastner", "bert-base-uncased", "")),
    ("SST2Prompt", None),
    ("SST2PromptGPT2", None),
])
def test_transferability_folder_names(name, expected):
    assert parse_transferability_name(name) == expected


def test_identify_uses_the_path_and_rejects_a_disagreeing_shape():
    google = identify(SHARED / "google_prompt_tuning" / "t5_1_1_lm100k_base" / "sst2.npy")
    assert (google.release, google.task, google.backbone, google.length, google.d_model) == (
        "google-prompt-tuning", "SST2", "t5-1.1-lm100k-base", 100, 768)
    assert google.reported == "validation accuracy 95.07 (README.md)"
    attempt = identify(SHARED / "attempt" / "qqp_prompt.pt", (100, 768))
    assert (attempt.release, attempt.task, attempt.backbone) == ("attempt", "qqp", "t5-base")
    assert identify(SHARED / "attempt" / "qqp_prompt.pt", (20, 576)) is None  # someone else's
    assert identify(SST2_T5, (100, 512)) is None
    assert identify(SST2_T5, (100, 768)).backbone == "t5-base"


def test_listing_of_the_shared_folder():
    listing = list_prompts(SHARED)
    assert len(listing.prompts) == 113 and not [e for e in listing.prompts if e.error]
    assert all(e.known is not None for e in listing.prompts)
    assert listing.result_files == 1643
    assert listing.other_files == ["google_prompt_tuning/t5_1_1_lm100k_base/README.md"]
    by_path = {e.path: e for e in listing.prompts}
    sst2 = by_path["prompt_transferability/SST2PromptRoberta/task_prompt"]
    assert (sst2.format, sst2.shape, sst2.backbone, sst2.task) == (
        "torch", (100, 768), "roberta-base", "SST2")
    # The own-task score is the diagonal result file, read independently here.
    result = SHARED / "prompt_transferability_results" / "SST2PromptRoberta" / \
        "result_SST2PromptRoberta.json"
    acc = json.loads(json.loads(result.read_text()))["acc"]
    assert sst2.reported == (f"acc {acc:.4f} (prompt_transferability_results/SST2PromptRoberta/"
                             "result_SST2PromptRoberta.json)")
    assert by_path["prompt_transferability/IMDBPromptT5Small/task_prompt"].shape == (100, 512)
    assert by_path["prompt_transferability/SST2PromptBert/task_prompt"].reported == ""


def test_prompts_ls_prints_a_table(capsys):
    cli.main(["prompts", "ls", str(SHARED)])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["path", "format", "shape", "backbone", "task", "variant",
                              "reported"]
    rows = {line.split()[0]: line.split() for line in out[1:-3]}
    assert rows["google_prompt_tuning/t5_1_1_lm100k_base/rte.npy"] == [
        "google_prompt_tuning/t5_1_1_lm100k_base/rte.npy", "npy", "100x768",
        "t5-1.1-lm100k-base", "RTE", "validation", "accuracy", "68.6", "(README.md)"]
    assert rows["prompt_transferability/laptopPromptT5Small/task_prompt"][1:6] == [
        "torch", "100x512", "t5-small", "laptop", "acc"]
    assert out[-3:] == [
        f"113 prompts (0 unreadable) in {SHARED}",
        "1643 Prompt-Transferability result files (transfer accuracies, not prompts)",
        "1 other files, not prompts: google_prompt_tuning/t5_1_1_lm100k_base/README.md",
    ]


def test_prompts_ls_reports_a_broken_file_in_its_row(tmp_path, capsys):
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(tmp_path / "good.npy", np.ones((3, 4), np.float32))
    cli.main(["prompts", "ls", str(tmp_path)])
    out = capsys.readouterr().out
    assert re.search(r"bad\.npy\s+npy\s+-\s+\?\s+\?\s+error: .*bad\.npy: corrupt numpy header",
                     out)
    assert re.search(r"good\.npy\s+npy\s+3x4", out)
    assert "2 prompts (1 unreadable)" in out


@pytest.mark.parametrize("to", ["peft", "npy", "torch", "prompt_jax"])
def test_prompts_convert_released_prompt(tmp_path, capsys, to):
    dst = tmp_path / ("out.npy" if to in ("npy", "prompt_jax") else "out")
    cli.main(["prompts", "convert", str(SST2_T5), str(dst), "--to", to])
    assert f"{SST2_T5} (torch, 100x768) -> {dst}" in capsys.readouterr().out
    converted = load_prompt(dst)
    assert converted.format == to
    np.testing.assert_array_equal(converted.array, torch.load(SST2_T5, weights_only=True).numpy())
    if to == "peft":
        config = json.loads((dst / "adapter_config.json").read_text())
        assert (config["task_type"], config["base_model_name_or_path"]) == (
            "SEQ_2_SEQ_LM", "google-t5/t5-base")
    if to == "prompt_jax":
        assert converted.metadata == {"backbone": "t5-base", "task": "SST2", "d_model": 768,
                                      "length": 100, "source": str(SST2_T5), "dtype": "float32"}


def test_prompts_convert_errors_exit_2_with_a_message(tmp_path, capsys):
    dst = tmp_path / "out.pt"
    cli.main(["prompts", "convert", str(SST2_T5), str(dst), "--to", "torch"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["prompts", "convert", str(SST2_T5), str(dst), "--to", "torch"])
    assert exit_info.value.code == 2
    assert f"{dst}: already exists; --force replaces it" in capsys.readouterr().err
    cli.main(["prompts", "convert", str(SST2_T5), str(dst), "--to", "torch", "--force"])

    result = next((SHARED / "prompt_transferability_results").rglob("*.json"))
    with pytest.raises(SystemExit):
        cli.main(["prompts", "convert", str(result), str(tmp_path / "x.npy"), "--to", "npy"])
    assert "a JSON file, not a soft prompt" in capsys.readouterr().err
