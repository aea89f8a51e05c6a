"""The HTTP API's requests and answers (pydantic models): what the OpenAPI schema says, and what
the server's answers are checked against."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ClassifyRequest(BaseModel):
    """One input for one of the bank's tasks."""

    model_config = ConfigDict(extra="forbid")
    task: str = Field(min_length=1, max_length=200)
    text: str
    text_b: str | None = None


MAX_NEW_TOKENS = 1024  # the schema's bound; each task's own maximum is lower (422 beyond it)


class GenerateRequest(BaseModel):
    """One input for one of the bank's generation tasks (question answering, summarization)."""

    model_config = ConfigDict(extra="forbid")
    task: str = Field(min_length=1, max_length=200)
    text: str
    text_b: str | None = None
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS, description=(
        "at most this many new tokens (default and upper bound: the task's own maximum)"))


class RowNotes(BaseModel):
    """What every row's answer may add: its task when the name is another, and any cut."""

    task_type: str | None = Field(None, description="the task, when the name is another")
    truncated: bool | None = Field(None, description="the input was cut to fit the limits")
    input_tokens: int | None = None
    kept_tokens: int | None = None
    input_chars: int | None = Field(None, description="characters before a cut to "
                                                      "max_text_chars")


class Generated(RowNotes):
    """A generation row's answer."""

    task: str
    text: str = Field(description="the generated text, cut before the task's stop string")
    finish: str = Field(description="eos, stop (the task's stop string) or length")
    new_tokens: int


class AddPromptRequest(BaseModel):
    """A prompt to add (or to replace the one of its name): its bytes, or a file already in
    the bank folder. Either way it is written into the bank folder before the answer."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=100, description=(
        "what requests will call it (needed with `prompt`; with `file`, default its stem)"))
    task: str = Field("", max_length=200, description=(
        "its task (default: the sidecar's, or the name when that is a registered task)"))
    file: str | None = Field(None, max_length=255, description=(
        "the bare name of a prompt file inside the bank folder, e.g. 'sst2_v2.npy'"))
    prompt: str | None = Field(None, description=(
        "the bytes of a .npy or .safetensors file holding the [P, H] prompt, base64-encoded"),
        json_schema_extra={"contentEncoding": "base64"})
    sidecar: dict[str, Any] | None = Field(None, description=(
        "with `prompt`: its sidecar (task, template, model, backbone, placement, ...)"))


class Answer(RowNotes):
    """A row's answer: its task's best label and every label's log-likelihood."""

    task: str
    label: str
    scores: dict[str, float]


class PromptInfo(BaseModel):
    """One prompt of the bank."""

    name: str
    task: str
    labels: list[str]
    prompt_length: int
    template: str | None = Field(description="null for masked LMs (the tokenizer's own "
                                             "layout)")
    pair: bool
    slot: int
    source: str = Field(description="the name of the file it was read from (no folder)")


class TaskList(BaseModel):
    tasks: list[PromptInfo]


class Added(BaseModel):
    added: PromptInfo
    compilations: int = Field(description="compilations the addition took (0 unless the bank "
                                          "grew)")
    file: str | None = Field(description="where it is kept in the bank folder (null: the bank "
                                         "has no folder)")


class Removed(BaseModel):
    removed: str
    file: str | None = Field(description="where its file went (under removed/), if it had one")


class Health(BaseModel):
    status: str
    warm: bool
    prompts: int
    queue_depth: int


class Metrics(BaseModel):
    """What GET /metrics answers."""

    queue_depth: int
    queue_limit: int
    requests: int
    rows: int
    rejected: int = Field(description="503: the queue was full")
    disconnected: int
    errors: int = Field(description="500: a batch failed")
    batches: int
    batch_sizes: dict[str, int]
    mean_batch_size: float | None
    latency_ms: dict[str, float | None]
    compilations: dict[str, int]
    bank: dict[str, int]
    limits: dict[str, int | bool]
    refused: dict[str, int]


class Error(BaseModel):
    detail: str


class Invalid(BaseModel):
    """422: a body that is not what the operation takes (a list of pydantic's errors), or a
    value it cannot use (a string)."""

    detail: str | list[dict[str, Any]]


def errors(*codes: int) -> dict[int, dict[str, Any]]:
    """The `responses=` of an operation answering `codes` (each with a JSON `detail`)."""
    described = {404: "unknown task or file", 403: "a path outside the bank folder",
                 409: "in conflict with the bank's state", 413: "over a limit",
                 422: "not a valid input", 503: "the queue is full: retry later"}
    out: dict[int, dict[str, Any]] = {
        code: {"model": Invalid if code == 422 else Error, "description": described[code]}
        for code in codes}
    if 503 in out:
        out[503]["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return out
