"""A server safe beyond 127.0.0.1: the API key on every endpoint but /health, no bind beyond
loopback without one, files named only inside the bank folder (one refusal for every other
path, whether or not the file exists), added prompts on disk before the answer (so they survive
a restart), and limits met before any tokenization, counted. A real uvicorn server on
127.0.0.1 over a random 2-layer Llama of width 32."""

from __future__ import annotations

import io
import json
import os
import re
import threading

import httpx
import jax
import numpy as np
import pytest
import safetensors.numpy

from prompt_jax import engine, prompts
from prompt_jax.prompts.files import load_prompt
from prompt_jax.serving import guard, server, store
from prompt_jax.serving.bank import PromptBank
from prompt_jax.serving.classifier import Buckets, MixedClassifier
from prompt_jax.serving.server import ServerConfig, create_app
from tests.serving_util import running, save, upload

KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
TASKS = ("sst2", "trec", "rte")


def _prompt(seed: int, length: int):
    return np.asarray(prompts.random_uniform(jax.random.key(seed), length, 32))


@pytest.fixture(scope="module")
def loaded(tiny_llama):
    return engine.load_model(str(tiny_llama), mesh_data=1)


@pytest.fixture
def folder(tmp_path, tiny_llama):
    """A bank folder of three prompts (sst2, trec, rte) for the tiny Llama."""
    directory = tmp_path / "bank"
    directory.mkdir()
    for i, task in enumerate(TASKS):
        save(directory, task, _prompt(i, 4 + i), str(tiny_llama), task)
    return directory


def _config(**fields) -> ServerConfig:
    return ServerConfig(max_batch=8, **fields)


def _classifier(loaded, folder) -> MixedClassifier:
    bank = PromptBank(loaded, slots=8, prompt_length=8, max_input_length=64)
    bank.load_dir(folder)
    classifier = MixedClassifier(bank, Buckets((8,), (64,)))
    classifier.warm_up()
    return classifier


def test_with_a_key_every_endpoint_but_health_needs_it(loaded, folder):
    """Without the key (or with a wrong one, or another scheme) every path but /health gets
    401 with WWW-Authenticate, the schema and unknown paths included, and before the body is
    read (a body over the limit gets 401, not 413); with it, 200."""
    app = create_app(_classifier(loaded, folder), _config(api_key=KEY))
    request = {"task": "sst2", "text": "a witty film"}
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        calls = [("POST", "/classify", request), ("GET", "/tasks", None),
                 ("GET", "/metrics", None), ("POST", "/prompts", {"file": "sst2.npy"}),
                 ("DELETE", "/prompts/sst2", None), ("GET", "/openapi.json", None),
                 ("GET", "/docs", None), ("GET", "/no/such/path", None)]
        wrong = [{}, {"Authorization": "Bearer wrong-key-0123456789"},
                 {"Authorization": f"Basic {KEY}"}, {"Authorization": f"Bearer {KEY}x"},
                 {"Authorization": KEY}]
        for method, path, body in calls:
            for headers in wrong:
                r = client.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
                assert "Authorization: Bearer" in r.json()["detail"]
        r = client.post("/classify", content=b"x" * (3 * 2**20),
                        headers={"content-type": "application/json"})
        assert r.status_code == 401
        assert client.get("/health").status_code == 200
        r = client.post("/classify", json=request, headers=AUTH)
        assert r.status_code == 200 and r.json()["task"] == "sst2"
        assert client.get("/tasks", headers=AUTH).status_code == 200
        schema = client.get("/openapi.json", headers=AUTH).json()
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert schema["paths"]["/classify"]["post"]["security"] == [{"bearer": []}]
        assert "401" in schema["paths"]["/classify"]["post"]["responses"]
        assert "security" not in schema["paths"]["/health"]["get"]
        metrics = client.get("/metrics", headers=AUTH).json()
        assert metrics["refused"]["unauthorized"] == len(calls) * len(wrong) + 1
        assert metrics["limits"]["api_key"] is True and metrics["refused"]["body_too_large"] == 0


def test_a_short_key_is_refused():
    with pytest.raises(ValueError, match="at least 16 characters"):
        guard.check_key("short")
    with pytest.raises(ValueError, match="at least 16 characters"):
        guard.Guard(None, api_key="short", limits=guard.Limits(), refusals=guard.Refusals())


def test_a_non_loopback_bind_without_a_key_is_refused(loaded, folder, tiny_llama, capsys):
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert guard.is_loopback(host), host
        guard.check_bind(host, None, False)
    for host in ("0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "[::]"):
        assert not guard.is_loopback(host), host
        with pytest.raises(ValueError, match=rf"refusing to listen on {re.escape(host)} "
                                             r"without an API key.*PROMPT_JAX_API_KEY.*--insecure"):
            guard.check_bind(host, None, False)
        guard.check_bind(host, KEY, False)  # a key, or insecure said out loud
        guard.check_bind(host, None, True)

    def refused(call) -> BaseException | None:
        """Runs `call` in a thread; a bind that were not refused would serve forever."""
        caught: list[BaseException] = []

        def run():
            try:
                call()
            except BaseException as e:  # noqa: BLE001 (SystemExit from the CLI included)
                caught.append(e)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(120)
        assert not thread.is_alive(), "it started serving"
        return caught[0] if caught else None

    classifier = _classifier(loaded, folder)
    error = refused(lambda: server.serve(classifier, _config(), host="0.0.0.0", port=1))
    assert isinstance(error, ValueError) and "without an API key" in str(error)
    from prompt_jax.commands import cli

    error = refused(lambda: cli.main(["serve", "--model", str(tiny_llama), "--bank", str(folder),
                                      "--host", "0.0.0.0", "--port", "1"]))
    assert isinstance(error, SystemExit) and error.code not in (0, None)
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0 without an API key" in err
    assert "serving" not in err  # refused before the model was loaded


def test_paths_outside_the_bank_get_one_refusal_whether_or_not_the_file_exists(
        loaded, folder, tmp_path, tiny_llama):
    classifier = _classifier(loaded, folder)
    outside = tmp_path / "outside"
    outside.mkdir()
    save(outside, "p", _prompt(9, 5), str(tiny_llama), "sst2")
    (folder / "link.npy").symlink_to(outside / "p.npy")
    (folder / "dangling.npy").symlink_to(outside / "q.npy")
    pairs = [  # (a file that exists, one that does not)
        (str(outside / "p.npy"), str(outside / "q.npy")),
        ("../outside/p.npy", "../outside/q.npy"),
        ("/etc/passwd", "/etc/no-such-file"),
        ("link.npy", "dangling.npy"),
        (str(folder / "sst2.npy"), str(folder / "nope.npy")),
        ("./sst2.npy", "./nope.npy"),
        (".hidden.npy", ".nothing.npy"),
        ("removed/old.npy", "removed/nope.npy"),
    ]
    (folder / ".hidden.npy").write_bytes((folder / "sst2.npy").read_bytes())
    (folder / "removed").mkdir()
    (folder / "removed" / "old.npy").write_bytes((folder / "sst2.npy").read_bytes())
    with running(create_app(classifier, _config())) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        answers = set()
        for existing, missing in pairs:
            assert os.path.lexists(os.path.join(folder, existing))
            for file in (existing, missing):
                r = client.post("/prompts", json={"file": file, "name": "x", "task": "sst2"})
                answers.add((r.status_code, r.text))
        assert answers == {(403, json.dumps({"detail": store.REFUSAL}, separators=(",", ":")))}
        assert "x" not in classifier.bank and not (folder / "x.npy").exists()
        # A bare name inside the folder is read; one that is not there is a 404 naming it.
        r = client.post("/prompts", json={"file": "sst2.npy", "name": "sst2_copy"})
        assert r.status_code == 200 and r.json()["file"] == "sst2_copy.npy"
        r = client.post("/prompts", json={"file": "nope.npy"})
        assert r.status_code == 404
        assert r.json()["detail"] == "no file 'nope.npy' in the bank folder"


def _npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, np.float32), allow_pickle=False)
    return buffer.getvalue()


def test_an_added_prompt_survives_a_restart(loaded, folder, tiny_llama):
    """Prompts added as .npy and .safetensors bytes and from a file in the folder, one
    replaced and one removed: a bank read again from the folder (what a restarted server does)
    serves exactly them, with the same scores; the removed one sits in removed/."""
    import base64

    model = str(tiny_llama)
    new, replaced = _prompt(20, 7), _prompt(21, 9)
    tensors = base64.b64encode(safetensors.numpy.save({"prompt": _prompt(22, 3)})).decode()
    request = [{"task": t, "text": "a gorgeous witty film"} for t in ("sst2_v2", "sst2", "trec")]
    classifier = _classifier(loaded, folder)
    with running(create_app(classifier, _config())) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        for body in (upload("sst2_v2", new, model, "sst2"),
                     upload("sst2", replaced, model, "sst2"),
                     {"name": "trec_st", "prompt": tensors, "sidecar": {"task": "trec"}},
                     {"file": "rte.npy", "name": "rte_copy"}):
            r = client.post("/prompts", json=body)
            assert r.status_code == 200, r.text
        assert client.delete("/prompts/rte").status_code == 200
        before = client.post("/classify", json=request).json()
        names = sorted(t["name"] for t in client.get("/tasks").json()["tasks"])
    assert names == ["rte_copy", "sst2", "sst2_v2", "trec", "trec_st"]

    restarted = _classifier(loaded, folder)
    assert restarted.bank.names == names
    np.testing.assert_array_equal(restarted.bank.get("sst2_v2").prompt, new)
    np.testing.assert_array_equal(restarted.bank.get("sst2").prompt, replaced)
    assert restarted.bank.get("trec_st").task.name == "trec"
    assert restarted.bank.get("rte_copy").task.name == "rte"
    after = restarted.classify([(r["task"], r["text"]) for r in request])
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(list(a["scores"].values()), list(b.scores.values()),
                                   atol=1e-5)
    assert (folder / "removed" / "rte.npy").is_file() and not (folder / "rte.npy").exists()
    assert load_prompt(folder / "removed" / "rte.npy").metadata["task"] == "rte"
    assert not list((folder / store.PENDING).iterdir())  # nothing left in flight


def _count_tokenized(monkeypatch, tokenizer) -> list[int]:
    """Counts the characters `tokenizer` is given, through the real tokenizer."""
    counted = [0]
    call = type(tokenizer).__call__

    def counting(self, text, *args, **kwargs):
        if self is tokenizer:
            counted[0] += sum(map(len, text)) if isinstance(text, list) else len(text)
        return call(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", counting)
    return counted


def test_oversized_bodies_texts_and_row_counts_are_refused_before_tokenization(
        loaded, folder, monkeypatch):
    """A body over --max_body_bytes (declared or chunked), a text over --max_text_chars and
    more rows than --max_rows get 413 with nothing tokenized (the real tokenizer, counted);
    with overlong=truncate a long text is cut before it is tokenized. All limits and refusals
    are in /metrics."""
    limits = guard.Limits(max_body_bytes=64 * 2**10, max_text_chars=1000, max_rows=16)
    classifier = _classifier(loaded, folder)
    tokenized = _count_tokenized(monkeypatch, loaded.tokenizer)
    config = _config(limits=limits, overlong="reject")
    with running(create_app(classifier, config)) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        r = client.post("/classify", json={"task": "sst2", "text": "long " * 400_000})  # 2 MB
        assert r.status_code == 413 and "65536 bytes" in r.json()["detail"]

        def chunks():  # no Content-Length: the guard counts as the body arrives
            for _ in range(100):
                yield b'{"task": "sst2", "text": "' + b"x" * 10_000

        r = client.post("/classify", content=chunks(),
                        headers={"content-type": "application/json"})
        assert r.status_code == 413
        r = client.post("/classify", json={"task": "sst2", "text": "word " * 1000})
        assert r.status_code == 413 and "5000 characters exceeds the limit of 1000" in \
            r.json()["detail"]
        r = client.post("/classify", json=[{"task": "sst2", "text": "a film"}] * 17)
        assert r.status_code == 413 and "17 inputs exceed the limit of 16" in r.json()["detail"]
        assert tokenized[0] == 0
        r = client.post("/classify", json={"task": "sst2", "text": "a witty film"})
        assert r.status_code == 200 and tokenized[0] >= len("a witty film")  # it counts
        metrics = client.get("/metrics").json()
    assert metrics["limits"] == {"max_body_bytes": 65536, "max_text_chars": 1000,
                                 "max_rows": 16, "api_key": False}
    assert metrics["refused"] == {"unauthorized": 0, "body_too_large": 2, "too_many_rows": 1,
                                  "text_too_long": 1, "texts_cut": 0}

    tokenized[0] = 0
    with running(create_app(classifier, _config(limits=limits))) as url:
        r = httpx.post(f"{url}/classify", json={"task": "rte", "text": "word " * 1000,
                                                "text_b": "a hypothesis"}, timeout=60)
        assert r.status_code == 200 and r.json()["truncated"] is True
        assert r.json()["input_chars"] == 5000 + len("a hypothesis")
        assert 1000 <= tokenized[0] <= 2 * (1000 + 100)  # cut, then at most its cut by tokens
        assert httpx.get(f"{url}/metrics").json()["refused"]["texts_cut"] == 1


def test_a_text_that_is_not_valid_unicode_is_refused(loaded, folder):
    """A lone surrogate (valid JSON, no tokenizer takes it) is a 422, not a 500."""
    with running(create_app(_classifier(loaded, folder), _config())) as url:
        r = httpx.post(f"{url}/classify", content=b'{"task": "sst2", "text": "a \\ud800 b"}',
                       headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 422 and "not valid Unicode" in r.json()["detail"]
        assert httpx.get(f"{url}/metrics").json()["errors"] == 0


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_rows must be at least 1"):
        guard.Limits(max_rows=0)
