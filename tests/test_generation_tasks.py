"""The generation tasks (SQuAD, NQ-Open, SAMSum): splits that never train on what they score,
teacher-forced training equal to Hugging Face's loss on multi-token targets (Llama: the target
after the input; T5: decoder labels), T5 training and decoded evaluation, raw-text generation,
and the masked LMs' refusal."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from prompt_jax import engine, generation, prompts, tasks
from prompt_jax.models import load_pretrained
from prompt_jax.tasks.metrics import normalize_answer
from prompt_jax.training import packing, run, train
from tests.hf_models import load_reference, save_tiny
from tests.task_tokenizers import llama_tokenizer, roberta_tokenizer, t5_tokenizer

P = 3


def _keys(split):
    return {normalize_answer(f"{e.text_a} {e.text_b}") for e in split}


@pytest.mark.parametrize("name", ["squad", "nq_open", "samsum"])
def test_generation_splits_never_train_on_what_they_score(name):
    (train_rows, report), (scored, _) = (tasks.read_split(name, s) for s in
                                         ("train", "validation"))
    assert train_rows and scored and all(e.references and e.label == -1 for e in scored)
    if name == "squad":  # whole articles on each side, a fifth of them scored
        train_articles, scored_articles = ({e.group for e in rows}
                                           for rows in (train_rows, scored))
        assert not train_articles & scored_articles
        assert len(scored_articles) == round(0.2 * (len(train_articles) + len(scored_articles)))
        assert len(train_rows) + len(scored) == 10570
        assert max(len(e.references) for e in scored) > 1  # every gold answer kept
    else:  # separate releases; the few inputs they share leave the train side
        exact = {" ".join(f"{e.text_a} {e.text_b}".lower().split()) for e in scored}
        assert not exact & {" ".join(f"{e.text_a} {e.text_b}".lower().split())
                            for e in train_rows}
        assert report.kept == len(train_rows)
    if name == "samsum":
        assert "\n" in scored[0].text_a  # a dialogue keeps its line breaks
        assert dict(report.notes)["dropped_as_in_validation"] == 4
    assert len(_keys(train_rows) & _keys(scored)) <= 3  # near-duplicates, punctuation aside


def _batch(rows, targets, pad=0):
    """A right-padded batch of input rows and multi-token targets."""
    t, k = max(map(len, rows)), max(map(len, targets))
    batch = {"inputs": np.full((len(rows), t), pad, np.int32),
             "input_mask": np.zeros((len(rows), t), np.int32),
             "targets": np.full((len(rows), k), pad, np.int32),
             "target_mask": np.zeros((len(rows), k), np.int32),
             "label": np.zeros(len(rows), np.int32),
             "target_position": np.zeros(len(rows), np.int32)}
    for b, (r, g) in enumerate(zip(rows, targets, strict=True)):
        batch["inputs"][b, :len(r)], batch["input_mask"][b, :len(r)] = r, 1
        batch["targets"][b, :len(g)], batch["target_mask"][b, :len(g)] = g, 1
    return batch


def _their_loss(kind, ref, prompt, row, target):
    """HF's mean cross-entropy of the target tokens (labels=), the prompt through inputs_embeds."""
    embed = ref.get_input_embeddings()
    with torch.no_grad():
        prompted = torch.cat([torch.from_numpy(prompt), embed(torch.tensor(row))])[None]
        labels = torch.tensor(target)[None]
        if kind.startswith("t5"):
            return float(ref(inputs_embeds=prompted, labels=labels).loss)
        full = torch.cat([prompted, embed(labels)], 1)
        ignore = torch.full((1, prompted.shape[1]), -100)
        return float(ref(inputs_embeds=full, labels=torch.cat([ignore, labels], 1)).loss)


@pytest.mark.parametrize("kind", ["llama", "t5_v1_1"])
def test_teacher_forced_loss_equals_transformers_on_multi_token_targets(kind, tmp_path):
    directory = save_tiny(kind, tmp_path / kind)
    ref, pre = load_reference(kind, directory), load_pretrained(directory)
    prompt = np.random.default_rng(1).normal(0, 1, (P, pre.model.d_model)).astype(np.float32)
    rows, targets = [[5, 17, 33, 8], [9, 44, 21, 90, 12, 70]], [[40, 41, 42, 1], [7, 1]]
    batch = _batch(rows, targets)
    for b in range(2):  # weight one row: the batch loss is that row's
        batch["weight"] = (np.arange(2) == b).astype(np.float32)
        ours, _ = train.loss_fn(jnp.asarray(prompt), pre.params, batch, model=pre.model,
                                loss="target_ce", placement=pre.model.default_placement)
        np.testing.assert_allclose(float(ours), _their_loss(kind, ref, prompt, rows[b],
                                                            targets[b]), rtol=2e-5)


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    tokenizer = t5_tokenizer()
    directory = save_tiny("t5_v1_1", tmp_path_factory.mktemp("gen") / "t5",
                          vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
    tokenizer.save_pretrained(directory)
    return engine.load_model(str(directory), mesh_data=1)


@pytest.mark.parametrize("name", ["squad", "nq_open", "samsum"])
def test_t5_trains_on_decoder_labels_and_evaluates_by_decoding(name, tiny_t5):
    task = tiny_t5.task(name, max_input_length=48)
    assert task.candidates is None and task.packer(P) is None
    config = train.OptimizerConfig()
    step = tiny_t5.train_step(task, config)
    prompt = prompts.random_uniform(jax.random.key(0), P, tiny_t5.model.d_model)
    state = train.place_state(train.init_state(prompt, train.make_optimizer(config)),
                              tiny_t5.mesh)
    batches = task.batches("train", 4, shuffle=True, repeat=True, limit=8)
    batch = next(batches)
    assert batch["target_mask"].sum(1).min() >= 2  # text and EOS
    losses = []
    for _ in range(3):
        state, metrics = step(state, tiny_t5.params, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0], losses  # the same batch: teacher forcing fits it
    result = tiny_t5.evaluator(task, "validation", batch_size=4, limit=6)(state.trainable)
    spec = tasks.get_task(name)
    assert result["examples"] == 6 and set(spec.metric_names) <= set(result)
    assert all(0.0 <= result[m] <= 1.0 for m in spec.metric_names)
    gold = {r: tuple(e.references) for r, e in enumerate(tasks.read_split(name, "validation")[0])}
    for sample in result["samples"]:  # each row scored against its own gold texts
        assert tuple(sample["references"]) == gold[sample["row"]]


def test_generate_bounds_new_tokens_and_answers_raw_texts(tiny_t5):
    task = tiny_t5.task("nq_open")
    out = generation.generate(tiny_t5, task, None, ["who wrote hamlet", "how tall is k2"],
                              max_new_tokens=5)
    assert len(out.texts) == 2 and (out.lengths <= 5).all()
    with pytest.raises(ValueError, match="max_new_tokens must be in 0..16"):
        generation.generate(tiny_t5, task, None, ["q"], max_new_tokens=17)
    with pytest.raises(ValueError, match="classification task"):
        generation.generate(tiny_t5, tiny_t5.task("sst2"), None, ["fine"])


@pytest.fixture(scope="module")
def wide_llama(tmp_path_factory):
    """A tiny Llama (width 32) with the tiny BPE, its FFN as much wider than its attention as
    SmolLM2's (keys per token ~3,100 against SmolLM2's 3,072), so that packing pays where it
    pays on the real model."""
    tokenizer = llama_tokenizer()
    directory = save_tiny("llama", tmp_path_factory.mktemp("gen") / "llama",
                          vocab_size=len(tokenizer), intermediate_size=2048,
                          max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
    tokenizer.save_pretrained(directory)
    return engine.load_model(str(directory), mesh_data=1)


def test_a_decoder_only_model_packs_a_generation_task_with_its_targets(wide_llama, tiny_t5):
    task = wide_llama.task("squad")
    packer = task.packer(P)
    assert packer.targets and packer.prefix_length == P and packer.rows == 1
    assert wide_llama.task("squad", pack=False).packer(P) is None
    assert wide_llama.task("squad", placement="after_bos").packer(P) is None
    assert tiny_t5.task("squad").packer(P) is None  # an encoder-decoder does not pack


def test_packed_generation_training_gives_the_unpacked_prompt(wide_llama, tmp_path):
    """Three steps of a generation task's run, packing on and off: the same prompt."""
    trained = {}
    for pack in (True, False):
        config = run.RunConfig(model=wide_llama.name, task="nq_open", prompt_length=P,
                               output_dir=str(tmp_path / f"pack_{pack}"), init="random_uniform",
                               steps=3, batch_size=4, max_input_length=32, pack=pack,
                               eval_every=0, checkpoint_every=3, log_every=1, mesh_data=1)
        task = run.task_for(wide_llama, config)
        batches = run.train_batches(task, config)(0)
        assert [packing.is_packed(next(batches)) for _ in range(3)] == [pack] * 3
        _, trained[pack] = run.train_trainable(
            config, run.trainable_for(config), loaded=wide_llama,
            evaluate=lambda state: {"exact_match": 0.0})  # (decoding is tested elsewhere)
    initial = np.asarray(run.initial_trainable(wide_llama, task, config))
    assert np.abs(np.asarray(trained[False]) - initial).max() > 0.1  # the prompt moved
    np.testing.assert_allclose(trained[True], trained[False], atol=1e-5, rtol=1e-5)


def test_a_masked_lm_refuses_a_generation_task(tmp_path):
    tokenizer = roberta_tokenizer()
    directory = save_tiny("roberta", tmp_path / "roberta", vocab_size=len(tokenizer),
                          max_position_embeddings=64)
    tokenizer.save_pretrained(directory)
    loaded = engine.load_model(str(directory), mesh_data=1)
    for name in ("squad", "samsum"):
        with pytest.raises(ValueError, match="generates text, and the roberta backbone"):
            loaded.task(name)
    assert loaded.task("sst2").candidates is not None
    assert loaded.task("sst2").packer(P) is None  # nor does it pack


def test_transfer_scores_each_target_with_its_own_metric_and_indicators_span_both_kinds(
        tiny_t5, tmp_path):
    from prompt_jax import transfer
    from prompt_jax.transfer.report import cell_difference

    rng = np.random.default_rng(0)
    sources = {name: rng.normal(0, 1, (P, tiny_t5.model.d_model)).astype(np.float32)
               for name in ("nq_open", "squad", "sst2")}
    cells = transfer.zero_shot_matrix(tiny_t5, sources, ["nq_open", "sst2"], tmp_path,
                                     limit=4, batch_size=4)
    by = {(c["source"], c["target"]): c for c in cells}
    assert len(by) == 5 * 2  # three sources and two controls on each target
    qa, sentiment = by[("squad", "nq_open")], by[("nq_open", "sst2")]
    assert (qa["metric"], sentiment["metric"]) == ("exact_match", "accuracy")
    assert qa["score"] == qa["exact_match"] and len(qa["row_scores"]) == 4
    assert sentiment["score"] == sentiment["accuracy"] and len(sentiment["correct"]) == 4
    names, targets, score, _ = transfer.matrix_arrays(cells)
    assert score[names.index("squad"), targets.index("nq_open")] == qa["exact_match"]
    diff, paired = cell_difference(qa, by[("none", "nq_open")])
    assert paired and diff.n == 4
    assert diff.value == pytest.approx(np.mean(qa["row_scores"]) - np.mean(
        by[("none", "nq_open")]["row_scores"]))
    # E_cos and ON over QA, summarization-style and sentiment prompts, on a QA target's inputs
    e_cos = transfer.embedding_indicators(sources)
    assert set(e_cos) >= {"E_cos"}
    on = transfer.neuron_overlaps(tiny_t5, sources, "squad", "nq_open", mode="inputs",
                                  n_inputs=2)
    assert on["nq_open"] == pytest.approx(1.0) and all(0.0 <= v <= 1.0 for v in on.values())
