"""Generation tasks in a serving bank: POST /generate on a real uvicorn server on 127.0.0.1
beside /classify, under a mixed workload from several clients; every answer equals what the
task's prompt gives alone (`generation.generate`, `LoadedModel.scores`), bad input gets the
intended 4xx, `max_new_tokens` is bounded, and `infer --bank` answers both kinds."""

from __future__ import annotations

import concurrent.futures
import json
import random

import httpx
import jax
import numpy as np
import pytest

from prompt_jax import engine, generation, prompts
from prompt_jax.serving.bank import PromptBank
from prompt_jax.serving.classifier import Buckets, MixedClassifier, infer_requests
from prompt_jax.serving.server import ServerConfig, create_app
from tests.serving_util import running, save

TASKS = {"sst2": 5, "rte": 9, "nq_open": 7, "samsum": 12, "squad": 4}  # task -> prompt length
QUESTIONS = ["who wrote the origin of species", "when did the berlin wall fall",
             "what is the capital of peru", "how many moons does mars have"]
DIALOGUE = "Tom: are you coming tonight?\nAnna: yes, at eight\nTom: great, see you"
WORDS = "the film was a witty gorgeous mess of boring long scenes and great acting".split()


@pytest.fixture(scope="module")
def loaded(tiny_llama):
    return engine.load_model(str(tiny_llama), mesh_data=1)


@pytest.fixture(scope="module")
def classifier(loaded, tiny_llama, tmp_path_factory):
    directory = tmp_path_factory.mktemp("gen_bank")
    keys = jax.random.split(jax.random.key(3), len(TASKS))
    for (task, length), key in zip(TASKS.items(), keys, strict=True):
        save(directory, task, prompts.random_uniform(key, length, 32), str(tiny_llama), task)
    bank = PromptBank(loaded, slots=8, prompt_length=16, max_input_length=64)
    bank.load_dir(directory)
    classifier = MixedClassifier(bank, Buckets((8,), (32, 64)))
    classifier.warm_up()
    return classifier


def _request(rng: random.Random) -> tuple[str, dict]:
    task = rng.choice(list(TASKS))
    if task == "nq_open":
        return "generate", {"task": task, "text": rng.choice(QUESTIONS),
                            "max_new_tokens": rng.choice([3, 8, 16])}
    if task == "samsum":
        return "generate", {"task": task, "text": DIALOGUE}
    if task == "squad":
        return "generate", {"task": task, "text": "Darwin wrote it in 1859.",
                            "text_b": rng.choice(QUESTIONS), "max_new_tokens": 5}
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9)))
    return "classify", ({"task": task, "text": text, "text_b": "a film"} if task == "rte"
                        else {"task": task, "text": text})


def _alone(loaded, classifier, kind, request):
    """What the request's prompt gives alone, through the engine's single-prompt paths."""
    entry = classifier.bank.get(request["task"])
    text = request["text"] + ("\t" + request["text_b"] if "text_b" in request else "")
    if kind == "classify":
        return entry.labels[int(loaded.scores(entry.task, entry.prompt, [text])[0].argmax())]
    out = generation.generate(loaded, entry.task, entry.prompt, [text],
                              max_new_tokens=request.get("max_new_tokens", 0))
    return out.texts[0].strip(), out.finish[0], int(out.lengths[0])


def test_mixed_classify_and_generate_workload_on_the_real_server(loaded, classifier):
    rng = random.Random(0)
    workload = [_request(rng) for _ in range(40)]
    assert {k for k, _ in workload} == {"classify", "generate"}
    expected = [_alone(loaded, classifier, k, r) for k, r in workload]

    with running(create_app(classifier, ServerConfig(max_batch=8))) as url:
        def send(i):
            kind, request = workload[i]
            with httpx.Client(base_url=url, timeout=120) as client:
                return client.post(f"/{kind}", json=request)

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(send, range(len(workload))))
        for (kind, request), want, r in zip(workload, expected, responses, strict=True):
            assert r.status_code == 200, (request, r.text)
            answer = r.json()
            assert answer["task"] == request["task"]
            if kind == "classify":
                assert answer["label"] == want, request
            else:
                assert (answer["text"], answer["finish"], answer["new_tokens"]) == want, request
                assert answer["new_tokens"] <= request.get("max_new_tokens", 64)

        with httpx.Client(base_url=url, timeout=60) as client:  # a list decodes together
            body = [{"task": "nq_open", "text": q, "max_new_tokens": 4} for q in QUESTIONS]
            listed = client.post("/generate", json=body)
            assert listed.status_code == 200 and [a["text"] for a in listed.json()] == [
                _alone(loaded, classifier, "generate", b)[0] for b in body]
            bad = [("/generate", {"task": "sst2", "text": "fine"}, 422, "POST /classify"),
                   ("/classify", {"task": "squad", "text": "c", "text_b": "q"}, 422,
                    "POST /generate"),
                   ("/generate", {"task": "nope", "text": "q"}, 404, "nope"),
                   ("/generate", {"task": "nq_open", "text": ""}, 422, "empty"),
                   ("/generate", {"task": "nq_open", "text": "q", "max_new_tokens": 17}, 422,
                    "maximum of 16"),
                   ("/generate", {"task": "nq_open", "text": "q", "max_new_tokens": 0}, 422, ""),
                   ("/generate", {"task": "nq_open", "text": "q", "max_new_tokens": 5000}, 422,
                    ""),
                   ("/generate", {"task": "squad", "text": "context only"}, 422, "text_b"),
                   ("/generate", {"task": "nq_open", "text": "q", "extra": 1}, 422, ""),
                   ("/generate", [{"task": "nq_open", "text": "q"}] * 300, 413, "")]
            for path, body, status, says in bad:
                r = client.post(path, json=body)
                assert r.status_code == status, (path, body, r.text)
                assert says in r.text, (says, r.text)
            metrics = client.get("/metrics").json()
            assert metrics["errors"] == 0


def test_infer_bank_answers_both_kinds_in_order(loaded, classifier):
    lines = [json.dumps({"task": "nq_open", "text": QUESTIONS[0], "id": 1}),
             json.dumps({"task": "sst2", "text": "a witty film", "id": 2}),
             json.dumps({"task": "samsum", "text": DIALOGUE, "max_new_tokens": 6, "id": 3})]
    from prompt_jax.serving.classifier import read_requests

    answers = list(infer_requests(classifier, read_requests(lines)))
    assert [a["id"] for a in answers] == [1, 2, 3]
    assert answers[0]["text"] == _alone(loaded, classifier, "generate",
                                        {"task": "nq_open", "text": QUESTIONS[0]})[0]
    assert answers[1]["label"] in ("negative", "positive")
    assert answers[2]["new_tokens"] <= 6
    np.testing.assert_equal(answers[2]["task"], "samsum")
