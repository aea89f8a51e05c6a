"""Serving a bank of prompts: mixed-task batches score each row as it scores alone, traffic
never compiles after warm-up, prompts come and go while serving, and the HTTP server answers
bad input and overload with the right status (a real uvicorn server on 127.0.0.1, real clients,
on a random 2-layer Llama of width 32 with SmolLM2's tokenizer)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import random
import time

import httpx
import jax
import numpy as np
import pytest

from prompt_jax import engine, prompts
from prompt_jax.commands import cli
from prompt_jax.serving.bank import PromptBank
from prompt_jax.serving.classifier import Buckets, MixedClassifier
from prompt_jax.serving.server import ServerConfig, create_app
from prompt_jax.tasks import get_task
from tests.serving_util import running, save, upload

TASKS = ("sst2", "imdb", "rotten_tomatoes", "laptop", "mnli", "qnli", "rte", "cb", "mrpc",
         "ag_news", "trec", "tweet_sentiment", "tweet_emotion", "tweet_hate", "tweet_irony",
         "tweet_offensive", "tweet_stance_climate", "tweet_stance_feminist")
LENGTHS = (4, 9, 17, 30)  # prompt lengths, one per task in turn
MAX_INPUT = 64
WORDS = "the film was a witty gorgeous mess of boring long scenes and great acting".split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _request(rng: random.Random, name: str, n: int = 0) -> dict:
    n = n or rng.randint(1, 12)
    request = {"task": name, "text": _text(rng, n)}
    if get_task(name).pair:
        request["text_b"] = _text(rng, rng.randint(1, 6))
    return request


@pytest.fixture(scope="module")
def bank_dir(tiny_llama, tmp_path_factory):
    directory = tmp_path_factory.mktemp("bank")
    keys = jax.random.split(jax.random.key(0), len(TASKS))
    for i, (task, key) in enumerate(zip(TASKS, keys, strict=True)):
        save(directory, task, prompts.random_uniform(key, LENGTHS[i % len(LENGTHS)], 32),
              str(tiny_llama), task)
    return directory


@pytest.fixture(scope="module")
def extra_dir(tiny_llama, tmp_path_factory):
    directory = tmp_path_factory.mktemp("extra")
    key = jax.random.key(7)
    save(directory, "sst2_alt", prompts.random_uniform(key, 6, 32), str(tiny_llama), "sst2")
    save(directory, "sst2_alt_v2", prompts.random_uniform(key, 12, 32), str(tiny_llama), "sst2")
    save(directory, "other_model", prompts.random_uniform(key, 6, 32), "smollm2-135m-instruct",
          "sst2")
    save(directory, "too_wide", prompts.random_uniform(key, 6, 48), str(tiny_llama), "sst2")
    return directory


@pytest.fixture(scope="module")
def loaded(tiny_llama):
    return engine.load_model(str(tiny_llama), mesh_data=1)


@pytest.fixture(scope="module")
def classifier(loaded, bank_dir):
    bank = PromptBank(loaded, slots=32, prompt_length=32, max_input_length=MAX_INPUT)
    bank.load_dir(bank_dir)
    classifier = MixedClassifier(bank, Buckets((8, 16), (32, 64)))
    assert classifier.warm_up() == 4  # 2 batch x 2 length buckets
    return classifier


def _alone(loaded, entry, request) -> np.ndarray:
    """The row's scores in a batch of its own, through the engine's single-prompt path."""
    text = request["text"] + ("\t" + request["text_b"] if "text_b" in request else "")
    return loaded.scores(entry.task, entry.prompt, [text])[0]


def test_mixed_batch_scores_equal_each_task_alone(loaded, classifier):
    """18 tasks (TweetEval among them), prompts of 4-30 vectors and 2-6 classes, shuffled into
    mixed batches: every row gets its own task's labels and the scores it gets alone."""
    rng = random.Random(0)
    requests = [_request(rng, task) for task in TASKS for _ in range(2)]
    rng.shuffle(requests)
    rows = [classifier.encode(r["task"], r["text"], r.get("text_b")) for r in requests]
    results = classifier.run(rows)
    assert classifier.compilations_since_warm_up == 0
    assert len({r["task"] for r in requests}) >= 16
    for request, result in zip(requests, results, strict=True):
        entry = classifier.bank.get(request["task"])
        want = _alone(loaded, entry, request)
        assert result.task == request["task"] and list(result.scores) == list(entry.labels)
        np.testing.assert_allclose(list(result.scores.values()), want, atol=1e-5, rtol=0,
                                   err_msg=request["task"])
        assert result.label == entry.labels[int(want.argmax())]


def test_bank_refuses_another_model_or_width_naming_both(classifier, extra_dir, tiny_llama):
    bank = classifier.bank
    with pytest.raises(ValueError, match=r"'smollm2-135m-instruct'.*" + str(tiny_llama)):
        bank.add_file(extra_dir / "other_model.npy")
    with pytest.raises(ValueError, match=r"width 48.*width \(d_model\) 32"):
        bank.add_file(extra_dir / "too_wide.npy")
    assert "other_model" not in bank and "too_wide" not in bank


def test_bank_grows_in_buckets_and_warms_up_again(loaded, extra_dir):
    """A full bank doubles its slots, a longer prompt rounds its length bucket up: each growth
    is one new shape, warmed up at once, and old prompts keep their scores."""
    bank = PromptBank(loaded, slots=1, prompt_length=8, max_input_length=32)
    classifier = MixedClassifier(bank, Buckets((8,), (32,)))
    bank.add_file(extra_dir / "sst2_alt.npy")  # 6 vectors: fits
    assert classifier.warm_up() == 1 and bank.write_traces == 1
    request = ("sst2_alt", "a witty film")
    [before] = classifier.classify([request])
    entry, compiled = classifier.add_prompt(lambda: bank.add_file(extra_dir / "sst2_alt_v2.npy"))
    assert compiled == 1 and bank.shape.slots == 2 and bank.shape.prompt_length == 16
    assert bank.generation == 1 and classifier.warm and entry.slot == 1
    [after] = classifier.classify([request])
    np.testing.assert_allclose(list(after.scores.values()), list(before.scores.values()),
                               atol=1e-5)
    assert classifier.compilations_since_warm_up == 0
    _, compiled = classifier.add_prompt(lambda: bank.add_file(extra_dir / "sst2_alt.npy",
                                                              name="again"))
    assert compiled == 1 and bank.shape.slots == 4  # a third prompt: 2 -> 4 slots


def test_infer_bank_jsonl(tiny_llama, bank_dir, classifier, tmp_path, capsys):
    rng = random.Random(1)
    requests = [{"id": i, **_request(rng, task)} for i, task in enumerate(TASKS)]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    out = tmp_path / "answers.jsonl"
    cli.main(["infer", "--model", str(tiny_llama), "--bank", str(bank_dir), "--input", str(path),
              "--output", str(out), "--batch_buckets", "8", "--length_buckets", "32,64",
              "--max_input_length", str(MAX_INPUT)])
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["id"] for a in answers] == [r["id"] for r in requests]
    for request, answer in zip(requests, answers, strict=True):
        [want] = classifier.run([classifier.encode(request["task"], request["text"],
                                                   request.get("text_b"))])
        assert answer["task"] == request["task"] and answer["label"] == want.label
        np.testing.assert_allclose(list(answer["scores"].values()),
                                   list(want.scores.values()), atol=1e-5)
    assert "rows of 18 tasks" in capsys.readouterr().err
    path.write_text('{"task": "no_such_task", "text": "x"}\n')
    with pytest.raises(SystemExit):
        cli.main(["infer", "--model", str(tiny_llama), "--bank", str(bank_dir), "--input",
                  str(path), "--batch_buckets", "8", "--length_buckets", "32,64",
                  "--max_input_length", str(MAX_INPUT)])
    assert "requests.jsonl:1: unknown task 'no_such_task'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# The HTTP server
# ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _running(classifier, config):
    """A real uvicorn server of the classifier on a free 127.0.0.1 port, in a thread."""
    with running(create_app(classifier, config)) as url:
        yield url


@pytest.fixture(scope="module")
def url(classifier):
    with _running(classifier, ServerConfig(max_batch=16, max_wait_ms=5, queue_limit=64)) as u:
        yield u


def test_bad_requests(url):
    with httpx.Client(base_url=url, timeout=30) as client:
        r = client.post("/classify", json={"task": "no_such_task", "text": "hi"})
        assert r.status_code == 404 and "no_such_task" in r.json()["detail"]
        for body in ({"task": "sst2", "text": ""}, {"task": "sst2", "text": "   "},
                     {"task": "sst2"}, {"task": "rte", "text": "premise only"}, []):
            assert client.post("/classify", json=body).status_code == 422, body
        r = client.post("/classify", content=b'{"task": "sst2", "text": ',
                        headers={"content-type": "application/json"})
        assert r.status_code == 422
        r = client.post("/classify", json={"task": "sst2", "text": "long " * 300})
        assert r.status_code == 200
        assert r.json()["truncated"] is True and r.json()["kept_tokens"] == MAX_INPUT
        assert r.json()["input_tokens"] > MAX_INPUT
        r = client.post("/classify", json=[{"task": "sst2", "text": "x"}] * 65)
        assert r.status_code == 413 and "64" in r.json()["detail"]
        assert client.delete("/prompts/no_such_task").status_code == 404
        assert client.get("/health").json()["status"] == "ok"


def _clients(url, seconds, n_clients, names, seed=0):
    """n_clients threads sending random single and list requests for `seconds`; returns
    (status codes, answers' tasks matched to requests)."""
    def client_loop(i):
        rng = random.Random(seed * 100 + i)
        codes, mismatched = [], 0
        stop = time.monotonic() + seconds
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.monotonic() < stop:
                k = rng.choice([1, 1, 1, 3])
                body = [_request(rng, rng.choice(names), rng.choice([0, 0, 0, 80]))
                        for _ in range(k)]
                r = client.post("/classify", json=body[0] if k == 1 else body)
                codes.append(r.status_code)
                if r.status_code == 200:
                    answers = r.json() if k > 1 else [r.json()]
                    mismatched += sum(a["task"] != b["task"] for a, b in zip(answers, body,
                                                                              strict=True))
        return codes, mismatched

    with concurrent.futures.ThreadPoolExecutor(n_clients) as pool:
        results = list(pool.map(client_loop, range(n_clients)))
    return [c for codes, _ in results for c in codes], sum(m for _, m in results)


def test_load_randomized_mixed_workload_never_compiles(url, classifier):
    """8 clients x 2 s of random tasks, text lengths (some over-long) and list sizes: every
    request answered 200 with its own task, batches mixed, and no compilation after warm-up."""
    codes, mismatched = _clients(url, 2.0, 8, TASKS)
    assert len(codes) > 16 and set(codes) == {200} and mismatched == 0
    metrics = httpx.get(f"{url}/metrics").json()
    assert metrics["compilations"]["after_warm_up"] == 0
    assert classifier.compilations_since_warm_up == 0
    assert max(int(k) for k in metrics["batch_sizes"]) > 1
    assert metrics["latency_ms"]["p99"] is not None and metrics["queue_depth"] == 0


def test_add_replace_remove_while_serving(url, classifier, loaded, tiny_llama, bank_dir):
    """Prompts added (as bytes), replaced and removed under traffic: no compilation, the new
    prompt scores as it does alone, and each change is on disk before its answer."""
    traffic = concurrent.futures.ThreadPoolExecutor(1).submit(_clients, url, 2.0, 2, TASKS, 3)
    key = jax.random.key(7)
    first, longer = prompts.random_uniform(key, 6, 32), prompts.random_uniform(key, 12, 32)
    with httpx.Client(base_url=url, timeout=60) as client:
        before = classifier.compilations
        r = client.post("/prompts", json=upload("sst2_alt", first, str(tiny_llama), "sst2"))
        assert r.status_code == 200 and r.json()["compilations"] == 0
        assert r.json()["added"]["name"] == "sst2_alt" and r.json()["added"]["task"] == "sst2"
        assert r.json()["file"] == "sst2_alt.npy" and (bank_dir / "sst2_alt.npy").is_file()
        request = {"task": "sst2_alt", "text": "a gorgeous witty film"}
        answer = client.post("/classify", json=request).json()
        entry = classifier.bank.get("sst2_alt")
        np.testing.assert_allclose(list(answer["scores"].values()),
                                   _alone(loaded, entry, request), atol=1e-5)
        slot = entry.slot
        r = client.post("/prompts", json=upload("sst2_alt", longer, str(tiny_llama), "sst2"))
        assert r.status_code == 200 and r.json()["added"]["slot"] == slot  # replaced in place
        entry = classifier.bank.get("sst2_alt")
        assert entry.length == 12 and np.load(bank_dir / "sst2_alt.npy").shape == (12, 32)
        answer = client.post("/classify", json=request).json()
        np.testing.assert_allclose(list(answer["scores"].values()),
                                   _alone(loaded, entry, request), atol=1e-5)
        r = client.post("/prompts", json=upload("other", first, "smollm2-135m-instruct", "sst2"))
        assert r.status_code == 422 and "smollm2-135m-instruct" in r.json()["detail"]
        assert str(tiny_llama) in r.json()["detail"] and not (bank_dir / "other.npy").exists()
        r = client.post("/prompts", json={"file": "no_such.npy"})
        assert r.status_code == 404 and str(bank_dir) not in r.json()["detail"]
        names = [t["name"] for t in client.get("/tasks").json()["tasks"]]
        assert "sst2_alt" in names and len(names) == len(TASKS) + 1
        r = client.delete("/prompts/sst2_alt")
        assert r.status_code == 200 and r.json()["file"] == "removed/sst2_alt.npy"
        assert not (bank_dir / "sst2_alt.npy").exists()
        assert (bank_dir / "removed" / "sst2_alt.npy").is_file()
        r = client.post("/classify", json=request)
        assert r.status_code == 404 and "sst2_alt" in r.json()["detail"]
        assert classifier.compilations == before
    codes, mismatched = traffic.result()
    assert set(codes) == {200} and mismatched == 0


def test_burst_beyond_the_queue_gets_503_and_a_disconnect_spares_its_batch(classifier):
    """With batches that wait 1.5 s to fill and room for 4 rows: the 5th row gets 503 with
    Retry-After while the 4 queued ones are answered; a client that disconnects while queued
    leaves its batch-mates' answers intact; an over-long text is refused when so configured."""
    config = ServerConfig(max_batch=16, max_wait_ms=1500, queue_limit=4, overlong="reject")
    with _running(classifier, config) as url, \
            concurrent.futures.ThreadPoolExecutor(6) as pool:
        rng = random.Random(5)

        def post(body, timeout=60.0):
            return httpx.post(f"{url}/classify", json=body, timeout=timeout)

        def depth():
            return httpx.get(f"{url}/metrics").json()["queue_depth"]

        first = [pool.submit(post, _request(rng, TASKS[i])) for i in range(3)]
        leaving = pool.submit(post, _request(rng, "sst2"), 0.3)  # gives up while queued
        deadline = time.monotonic() + 10
        while depth() < 4:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        r = post(_request(rng, "trec"))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        with pytest.raises(httpx.TimeoutException):
            leaving.result()
        assert [f.result().status_code for f in first] == [200, 200, 200]
        assert [f.result().json()["task"] for f in first] == list(TASKS[:3])
        metrics = httpx.get(f"{url}/metrics").json()
        assert metrics["rejected"] == 1 and metrics["disconnected"] == 1
        assert metrics["batch_sizes"] == {"3": 1} and metrics["errors"] == 0
        r = post({"task": "sst2", "text": "long " * 300})
        assert r.status_code == 422 and str(MAX_INPUT) in r.json()["detail"]
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
