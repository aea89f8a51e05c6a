"""The HTTP server fuzzed from its own OpenAPI schema (schemathesis): requests generated from
the schema (positive: valid bodies, paths and parameters; negative: each made invalid) against
the real server on 127.0.0.1, with an API key, over a random 2-layer Llama of width 32. Every
answer must be no 500, within the schema's documented status codes, content types, headers
and answer schemas; invalid requests must be refused; an operation that needs the key must
refuse a request without it; and no request may take over 20 s (a hang).

Examples per operation and mode (`EXAMPLES`): 100 for POST /classify and POST /prompts, 60 for
POST /generate, 40 for DELETE /prompts/{name}, 5 for each GET (they take no input: one is all
there is) in positive mode, and the same for the four operations that take input in negative
mode: at most 315 + 300 = 615 requests, derandomized (the same ones at every run). Most
positive /classify and /generate bodies get one of the bank's task names of their kind, so
that they reach encoding and scoring or decoding.
"""

from __future__ import annotations

import collections

import httpx
import jax
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from prompt_jax import engine, prompts
from prompt_jax.serving import guard
from prompt_jax.serving.bank import PromptBank
from prompt_jax.serving.classifier import Buckets, MixedClassifier
from prompt_jax.serving.server import ServerConfig, create_app
from tests.serving_util import running, save

KEY = "fuzz-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
EXAMPLES = {"POST /classify": 100, "POST /prompts": 100, "POST /generate": 60,
            "DELETE /prompts/{name}": 40, "GET /tasks": 5, "GET /health": 5, "GET /metrics": 5}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection,
          ignored_auth]
TIMEOUT_S = 20
TASKS = ("sst2", "trec", "rte", "mnli")
GENERATING = ("nq_open", "squad")
# The operations that take input: the others have nothing a negative example could break.
NEGATABLE = {"POST /classify", "POST /prompts", "POST /generate", "DELETE /prompts/{name}"}


@pytest.fixture(scope="module")
def url(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-bank")
    for i, task in enumerate(TASKS + GENERATING):
        save(folder, task, prompts.random_uniform(jax.random.key(i), 4 + i, 32),
             str(tiny_llama), task)
    bank = PromptBank(engine.load_model(str(tiny_llama), mesh_data=1), slots=8, prompt_length=16,
                      max_input_length=64)
    bank.load_dir(folder)
    classifier = MixedClassifier(bank, Buckets((8,), (64,)))
    classifier.warm_up()
    config = ServerConfig(max_batch=8, queue_limit=64, api_key=KEY,
                          limits=guard.Limits(max_body_bytes=256 * 2**10, max_text_chars=2000,
                                              max_rows=32))
    with running(create_app(classifier, config)) as u:
        yield u


def _fuzzer(operation, mode, url, sent, statuses):
    """A hypothesis test sending `EXAMPLES[label]` generated requests to one operation."""
    label = operation.label

    @settings(max_examples=EXAMPLES[label], deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode),
           served=st.sampled_from((None, *TASKS)), generating=st.sampled_from(GENERATING))
    def fuzz(case, served, generating):
        if served and mode is GenerationMode.POSITIVE and label in ("POST /classify",
                                                                    "POST /generate"):
            for row in case.body if isinstance(case.body, list) else [case.body]:
                # most rows reach a real task of their kind: encoding, scoring or decoding
                row["task"] = served if label == "POST /classify" else generating
        response = case.call_and_validate(base_url=url, headers=AUTH, checks=CHECKS,
                                          timeout=TIMEOUT_S)
        sent[label] += 1
        statuses[response.status_code] += 1

    return fuzz


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=lambda m: m.value)
def test_schema_driven_fuzzing_finds_no_500_no_hang_and_no_answer_off_the_schema(url, mode):
    schema = schemathesis.openapi.from_dict(
        httpx.get(f"{url}/openapi.json", headers=AUTH, timeout=30).json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert sorted(op.label for op in operations) == sorted(EXAMPLES)
    sent: collections.Counter = collections.Counter()
    statuses: collections.Counter = collections.Counter()
    for operation in operations:
        if mode is GenerationMode.POSITIVE or operation.label in NEGATABLE:
            _fuzzer(operation, mode, url, sent, statuses)()
    assert set(sent) == (set(EXAMPLES) if mode is GenerationMode.POSITIVE else NEGATABLE)
    assert sent["POST /classify"] >= 50 and sent["POST /prompts"] >= 50, sent
    assert sent["POST /generate"] >= 30, sent
    assert statuses[500] == 0
    if mode is GenerationMode.POSITIVE:
        assert statuses[200] > 0, statuses  # valid requests were answered, not only refused
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200
