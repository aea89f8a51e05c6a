"""Soft prompts load from every released format, round-trip bit-exactly, and fit their backbone."""

from __future__ import annotations

import json
import re

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch

from prompt_jax.models import T5, Llama, LlamaConfig, Roberta, RobertaConfig, T5Config
from prompt_jax.prompts.files import (
    LoadedPrompt,
    PromptFormatError,
    PromptShapeError,
    load_prompt,
    load_prompt_for,
    save_prompt,
    validate_prompt,
)
from tests.shared_prompts import shared_prompts_dir

SHARED = shared_prompts_dir()
ALL_FILES = sorted(p for p in SHARED.rglob("*") if p.is_file())
RESULT_FILES = [p for p in ALL_FILES if "prompt_transferability_results" in p.parts]
PROMPT_FILES = [p for p in ALL_FILES if p not in RESULT_FILES and p.name != "README.md"]


def _expected_shape(path):
    """From the shared README: T5Small prompts are (100, 512), every other release (100, 768)."""
    if "prompt_transferability" in path.parts:
        return (100, 512) if re.search(r"PromptT5Small(_|$)", path.parent.name) else (100, 768)
    assert "attempt" in path.parts or "google_prompt_tuning" in path.parts, path
    return (100, 768)


def test_the_shared_folder_holds_what_the_readme_lists():
    assert len(PROMPT_FILES) == 113  # 3 google .npy, 6 ATTEMPT, 104 Prompt-Transferability
    assert len(RESULT_FILES) == 1643
    assert {p.name for p in ALL_FILES} - {"task_prompt", "README.md"} - {
        p.name for p in RESULT_FILES} == {f"{t}.npy" for t in ("sst2", "mrpc", "rte")} | {
        f"{t}_prompt.pt" for t in ("mnli", "qnli", "qqp", "record", "squad", "sst2")}


@pytest.mark.parametrize("path", PROMPT_FILES, ids=lambda p: str(p.relative_to(SHARED)))
def test_every_released_prompt_loads_and_equals_an_independent_reading(path):
    prompt = load_prompt(path)
    assert prompt.array.shape == _expected_shape(path)
    assert prompt.array.dtype == np.float32 and prompt.metadata["dtype"] == "float32"
    assert prompt.source == str(path)
    if path.suffix == ".npy":
        assert prompt.format == "npy"
        reference = np.load(path, allow_pickle=False)
    else:
        assert prompt.format == "torch"
        reference = torch.load(path, weights_only=True, map_location="cpu").detach().numpy()
    assert reference.dtype == np.float32
    np.testing.assert_array_equal(prompt.array, reference)


def test_result_json_and_readme_are_clear_errors_not_prompts():
    with pytest.raises(PromptFormatError, match=r"result_\w+\.json: a JSON file, not a soft "
                                                r"prompt"):
        load_prompt(RESULT_FILES[0])
    readme = SHARED / "google_prompt_tuning" / "t5_1_1_lm100k_base" / "README.md"
    with pytest.raises(PromptFormatError, match=r"README\.md: unknown format"):
        load_prompt(readme)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_prompt(SHARED / "nope.npy")


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


def _tricky_prompt(length=7, width=12, seed=0):
    """Random values plus -0.0, the smallest subnormal and the largest float32."""
    array = np.random.default_rng(seed).standard_normal((length, width)).astype(np.float32)
    array[0, :3] = [-0.0, np.finfo(np.float32).smallest_subnormal, np.finfo(np.float32).max]
    return array


def _bits(array):
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("fmt,name", [("npy", "p.npy"), ("npy", "encoder.prompt.prompt.prompt"),
                                      ("prompt_jax", "p.npy"), ("torch", "task_prompt"),
                                      ("torch", "x_prompt.pt"), ("peft", "adapter")])
def test_save_load_round_trip_is_bit_exact(tmp_path, fmt, name):
    array = _tricky_prompt()
    written = save_prompt(array, tmp_path / name, format=fmt)
    assert all(p.exists() for p in written)
    loaded = load_prompt(tmp_path / name)
    assert loaded.format == fmt
    np.testing.assert_array_equal(_bits(loaded.array), _bits(array))
    # And again, from the LoadedPrompt itself.
    save_prompt(loaded, tmp_path / "again" / name, format=fmt)
    np.testing.assert_array_equal(_bits(load_prompt(tmp_path / "again" / name).array),
                                  _bits(array))


def test_bfloat16_jax_prompt_saves_exactly_as_float32(tmp_path):
    prompt = jnp.asarray(_tricky_prompt()[1:], jnp.bfloat16)
    save_prompt(prompt, tmp_path / "p.pt", format="torch")
    np.testing.assert_array_equal(load_prompt(tmp_path / "p.pt").array,
                                  np.asarray(prompt, np.float32))


def test_extensionless_numpy_file_is_detected_by_content(tmp_path):
    array = _tricky_prompt()
    with open(tmp_path / "encoder.prompt.prompt.prompt", "wb") as f:
        np.save(f, array)  # as google-research/prompt-tuning's extraction script writes it
    loaded = load_prompt(tmp_path / "encoder.prompt.prompt.prompt")
    assert loaded.format == "npy"
    np.testing.assert_array_equal(loaded.array, array)


def test_prompt_jax_sidecar_round_trips_metadata(tmp_path):
    meta = {"backbone": "smollm2-135m", "init": "class_labels", "task": "sst2",
            "template": "{sentence} It was", "steps": 3000, "score": 0.912}
    written = save_prompt(_tricky_prompt(), tmp_path / "sst2.npy", format="prompt_jax",
                          metadata=meta)
    assert [p.name for p in written] == ["sst2.npy", "sst2.json"]
    loaded = load_prompt(tmp_path / "sst2.npy")
    assert loaded.format == "prompt_jax"
    assert loaded.metadata == {**meta, "d_model": 12, "length": 7, "dtype": "float32"}
    assert json.loads((tmp_path / "sst2.json").read_text())["d_model"] == 12


def test_sidecar_disagreeing_with_the_array_is_an_error(tmp_path):
    save_prompt(_tricky_prompt(), tmp_path / "p.npy", format="prompt_jax")
    (tmp_path / "p.json").write_text(json.dumps({"d_model": 768, "length": 7}))
    with pytest.raises(PromptFormatError, match=r"p\.json: says d_model=768 but p\.npy has "
                                                r"shape \(7, 12\)"):
        load_prompt(tmp_path / "p.npy")
    with pytest.raises(PromptFormatError, match=r"metadata says length=100 but the prompt has "
                                                r"shape \(7, 12\)"):
        save_prompt(_tricky_prompt(), tmp_path / "q.npy", format="prompt_jax",
                    metadata={"length": 100})


def test_save_refuses_overwrite_bad_format_and_metadata_it_cannot_carry(tmp_path):
    save_prompt(_tricky_prompt(), tmp_path / "p.npy", format="npy")
    with pytest.raises(FileExistsError, match=r"p\.npy: already exists"):
        save_prompt(_tricky_prompt(1), tmp_path / "p.npy", format="npy")
    save_prompt(_tricky_prompt(seed=1), tmp_path / "p.npy", format="npy", overwrite=True)
    np.testing.assert_array_equal(load_prompt(tmp_path / "p.npy").array, _tricky_prompt(seed=1))
    with pytest.raises(PromptFormatError, match="cannot write format 'orbax'"):
        save_prompt(_tricky_prompt(), tmp_path / "x", format="orbax")
    with pytest.raises(PromptFormatError, match=r"the torch format carries no metadata"):
        save_prompt(_tricky_prompt(), tmp_path / "x.pt", format="torch", metadata={"task": "a"})
    with pytest.raises(PromptFormatError, match=r"adapter_config\.json takes .*got \['steps'\]"):
        save_prompt(_tricky_prompt(), tmp_path / "peft", format="peft", metadata={"steps": 3})
    with pytest.raises(PromptShapeError, match=r"\[length, d_model\] array; got shape "
                                               r"\(1, 7, 12\)"):
        save_prompt(_tricky_prompt()[None], tmp_path / "y.npy", format="npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npy"]  # nothing half-written


# ---------------------------------------------------------------------------------------------
# Containers: training checkpoints, safetensors, orbax, PEFT
# ---------------------------------------------------------------------------------------------


class _SoftTemplate(torch.nn.Module):
    """Shaped like OpenPrompt's SoftTemplate inside a PromptForClassification."""

    def __init__(self):
        super().__init__()
        self.soft_embeds = torch.nn.Parameter(torch.randn(5, 8))


class _PromptModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 8)
        self.template = _SoftTemplate()


def _training_checkpoint(path, **extra):
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"prompt_model": _PromptModel()})
    optimizer = torch.optim.Adam(model.parameters(), lr=0.3)
    model["prompt_model"].template.soft_embeds.sum().backward()
    optimizer.step()  # real optimizer state: step counts, moments, param groups
    state = model.state_dict()
    state.update(extra)
    torch.save({"model": state, "optimizer": optimizer.state_dict(), "trained_epoch": 3,
                "global_step": 120}, path)
    return model["prompt_model"].template.soft_embeds.detach().numpy()


def test_training_checkpoint_prompt_is_found_under_its_key(tmp_path):
    expected = _training_checkpoint(tmp_path / "checkpoint.pkl")
    loaded = load_prompt(tmp_path / "checkpoint.pkl")
    assert loaded.format == "torch"
    assert loaded.metadata["key"] == "model/prompt_model.template.soft_embeds"
    np.testing.assert_array_equal(loaded.array, expected)
    by_key = load_prompt(f"{tmp_path / 'checkpoint.pkl'}::model/prompt_model.template.soft_embeds")
    np.testing.assert_array_equal(by_key.array, expected)


def test_ambiguous_or_missing_prompt_key_lists_the_candidates(tmp_path):
    _training_checkpoint(tmp_path / "two.pt", **{"encoder.prompt_embeddings.weight":
                                                 torch.ones(3, 8)})
    with pytest.raises(PromptFormatError, match=r"two\.pt: several tensors look like a prompt: "
                                                r"\[model/prompt_model\.template\.soft_embeds "
                                                r"\(5, 8\), model/encoder\.prompt_embeddings\."
                                                r"weight \(3, 8\)\]; pick one with .*::KEY"):
        load_prompt(tmp_path / "two.pt")
    picked = load_prompt(f"{tmp_path / 'two.pt'}::model/encoder.prompt_embeddings.weight")
    np.testing.assert_array_equal(picked.array, np.ones((3, 8), np.float32))
    torch.save({"a": torch.ones(2, 2), "b": torch.zeros(3, 3)}, tmp_path / "none.pt")
    with pytest.raises(PromptFormatError, match=r"no tensor is named like a prompt: "
                                                r"\[a \(2, 2\), b \(3, 3\)\]"):
        load_prompt(tmp_path / "none.pt")
    with pytest.raises(PromptFormatError, match=r"no tensor 'c'; it holds \[a \(2, 2\), b"):
        load_prompt(f"{tmp_path / 'none.pt'}::c")


def test_bare_safetensors_file(tmp_path):
    from safetensors.numpy import save_file

    array = _tricky_prompt()
    save_file({"soft_prompt": array, "head": np.zeros((4,), np.float32)}, tmp_path / "p.bin")
    loaded = load_prompt(tmp_path / "p.bin")
    assert (loaded.format, loaded.metadata["key"]) == ("safetensors", "soft_prompt")
    np.testing.assert_array_equal(loaded.array, array)


def test_orbax_checkpoint_prompt_is_extracted_by_path(tmp_path):
    import orbax.checkpoint as ocp

    prompt = _tricky_prompt()
    tree = {
        "params": {"encoder": {"prompt": {"prompt": prompt},
                               "layers_0": {"kernel": np.ones((12, 12), np.float32)}},
                   "token_embedder": {"embedding": np.ones((30, 12), np.float32)}},
        "opt_state": {"prompt": {"v_row": np.ones((7,), np.float32)}},
        "step": np.asarray(500),
    }
    with ocp.CheckpointManager(tmp_path / "run") as manager:
        manager.save(500, args=ocp.args.StandardSave(tree))
    step_dir = tmp_path / "run" / "500"
    for spec in (step_dir, f"{step_dir}::params/encoder/prompt/prompt",
                 f"{step_dir}::params.encoder.prompt.prompt", step_dir / "default"):
        loaded = load_prompt(spec)
        assert (loaded.format, loaded.metadata["key"]) == ("orbax", "params/encoder/prompt/prompt")
        np.testing.assert_array_equal(_bits(loaded.array), _bits(prompt))
    other = load_prompt(f"{step_dir}::params/token_embedder/embedding")
    np.testing.assert_array_equal(other.array, np.ones((30, 12), np.float32))
    with pytest.raises(PromptFormatError, match=r"no tensor 'params/decoder/prompt'; it holds "
                                                r"\[opt_state/prompt/v_row \(7,\)"):
        load_prompt(f"{step_dir}::params/decoder/prompt")
    with pytest.raises(PromptFormatError, match=r"neither a PEFT adapter .* nor an orbax"):
        load_prompt(tmp_path / "run")


def test_peft_adapter_errors(tmp_path):
    save_prompt(_tricky_prompt(), tmp_path / "a", format="peft")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config, "token_dim": 16}))
    with pytest.raises(PromptFormatError, match=r"prompt_embeddings has shape \(7, 12\) but "
                                                r"adapter_config\.json declares "
                                                r"num_virtual_tokens=7 x "
                                                r"num_transformer_submodules=1, token_dim=16"):
        load_prompt(tmp_path / "a")
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config,
                                                                    "peft_type": "LORA"}))
    with pytest.raises(PromptFormatError, match=r"peft_type 'LORA' is not a soft prompt"):
        load_prompt(tmp_path / "a" / "adapter_model.safetensors")


@pytest.mark.parametrize("array,message", [
    (np.zeros((2, 3, 4), np.float32), r"2-D \[length, d_model\] array; this one has shape "
                                      r"\(2, 3, 4\)"),
    (np.zeros((0, 4), np.float32), r"this one has shape \(0, 4\)"),
    (np.zeros((2, 4), np.int64), "prompt dtype int64 is not floating point"),
    (np.full((2, 4), np.nan, np.float32), "NaN or infinite"),
])
def test_arrays_that_are_not_prompts_are_refused(tmp_path, array, message):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(PromptFormatError, match=message):
        load_prompt(tmp_path / "x.npy")


def test_half_precision_prompts_load_as_float32_and_say_so(tmp_path):
    array = _tricky_prompt()[1:].astype(ml_dtypes.bfloat16)
    torch.save(torch.from_numpy(array.astype(np.float32)).bfloat16(), tmp_path / "p.pt")
    loaded = load_prompt(tmp_path / "p.pt")
    assert loaded.metadata["dtype"] == "bfloat16"
    np.testing.assert_array_equal(loaded.array, array.astype(np.float32))


def test_big_endian_numpy_prompt_loads_as_native_float32(tmp_path):
    array = _tricky_prompt()
    np.save(tmp_path / "be.npy", array.astype(">f4"))
    loaded = load_prompt(tmp_path / "be.npy")
    assert loaded.metadata["dtype"] == ">f4" and loaded.array.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(_bits(loaded.array), _bits(array))


def test_legacy_t5x_checkpoint_folder_is_named_as_unsupported(tmp_path):
    (tmp_path / "checkpoint_1000").mkdir()
    (tmp_path / "checkpoint_1000" / "checkpoint").write_bytes(b"\x82\xa7version\x03")
    with pytest.raises(PromptFormatError, match=r"checkpoint_1000: a legacy T5X checkpoint "
                                                r"\(msgpack `checkpoint` \+ tensorstore\) is not "
                                                r"read here"):
        load_prompt(tmp_path / "checkpoint_1000")


def test_truncated_numpy_file_names_both_sizes(tmp_path):
    np.save(tmp_path / "x.npy", _tricky_prompt())
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(data[:-10])
    with pytest.raises(PromptFormatError, match=r"x\.npy: numpy header declares \(7, 12\) "
                                                r"float32 \(464 bytes with the header\) but the "
                                                r"file has 454 bytes"):
        load_prompt(tmp_path / "x.npy")


# ---------------------------------------------------------------------------------------------
# Validation against a backbone
# ---------------------------------------------------------------------------------------------


def test_released_prompts_fit_their_backbone_and_not_others():
    t5_small = T5(T5Config(d_model=512))
    t5_base = T5(T5Config(d_model=768))
    small = SHARED / "prompt_transferability" / "SST2PromptT5Small" / "task_prompt"
    assert load_prompt_for(t5_small, small).array.shape == (100, 512)
    with pytest.raises(PromptShapeError, match=re.escape(
            f"{small}: prompt of shape (100, 512) has width 512, not d_model 768: the t5 "
            "backbone expected (P, 768) with 1 <= P <= 512")):
        load_prompt_for(t5_base, small)
    roberta = Roberta(RobertaConfig(hidden_size=768))
    validate_prompt(load_prompt(SHARED / "attempt" / "sst2_prompt.pt"), roberta)  # same width


def test_prompt_longer_than_the_backbone_accepts_is_refused():
    llama = Llama(LlamaConfig(hidden_size=16, max_position_embeddings=32))
    validate_prompt(np.zeros((32, 16), np.float32), llama)
    with pytest.raises(PromptShapeError, match=re.escape(
            "my.npy: prompt of shape (33, 16) has length 33: the llama backbone expected "
            "(P, 16) with 1 <= P <= 32")):
        validate_prompt(LoadedPrompt(np.zeros((33, 16), np.float32), "npy", {}, "my.npy"), llama)
    bert = Roberta(RobertaConfig(variant="bert", hidden_size=16, max_position_embeddings=40))
    with pytest.raises(PromptShapeError, match=r"prompt: prompt of shape \(4,\) is not 2-D: the "
                                               r"bert backbone expected \(P, 16\)"):
        validate_prompt(np.zeros(4, np.float32), bert)
