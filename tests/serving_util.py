"""Helpers of the serving tests: prompts saved as `prompt-jax train` saves them, upload bodies,
and a real uvicorn server on a free 127.0.0.1 port in a thread."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import threading
import time

import numpy as np
import uvicorn

from prompt_jax.prompts.files import save_prompt
from prompt_jax.tasks import get_task


def save(directory, name, array, model, task, **extra):
    """`<name>.npy` + sidecar in `directory` for a prompt of the tiny Llama `model`."""
    spec = get_task(task)
    save_prompt(np.asarray(array), directory / f"{name}.npy", format="prompt_jax",
                metadata={"backbone": "llama", "model": model, "task": task,
                          "template": spec.template("causal"), "placement": "prefix", **extra})
    return directory / f"{name}.npy"


def upload(name: str, array, model: str, task: str, **body) -> dict:
    """A POST /prompts body sending `array` as the bytes of a .npy file, with its sidecar."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, np.float32), allow_pickle=False)
    return {"name": name, "prompt": base64.b64encode(buffer.getvalue()).decode(),
            "sidecar": {"backbone": "llama", "model": model, "task": task,
                        "placement": "prefix"}, **body}


@contextlib.contextmanager
def running(app):
    """A real uvicorn server of `app` on a free 127.0.0.1 port, in a thread; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
