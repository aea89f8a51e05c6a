"""What released soft prompts are: backbone, length, task and reported score, by name.

Released prompt files do not say which model they were trained for; their names and folders do.
`identify` maps a path (and its shape, which must agree) to a `KnownPrompt`; `list_prompts`
walks a folder and describes every prompt in it, for `prompt-jax prompts ls`.

Sources: google-research/prompt-tuning `prompt_tuning/pretrained_prompts/t5_1_1_lm100k_base/`
(README.md: dev scores), thunlp/Prompt-Transferability (folders `<Task>Prompt<Backbone>`, and
`result_<Source>.json` transfer accuracies, whose diagonal is the prompt's own-task score),
AkariAsai/ATTEMPT (source prompts `<task>_prompt.pt` on T5-base).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

from prompt_jax.prompts.files import PEFT_CONFIG, load_prompt, sidecar_path, sniff


@dataclasses.dataclass(frozen=True)
class BackboneInfo:
    """A pretrained model prompts were released for."""

    name: str
    hf_id: str
    family: str  # as `Backbone.family`: t5 | roberta | bert | llama | gemma3
    d_model: int


BACKBONES = {b.name: b for b in (
    BackboneInfo("t5-small", "google-t5/t5-small", "t5", 512),
    BackboneInfo("t5-base", "google-t5/t5-base", "t5", 768),
    BackboneInfo("t5-large", "google-t5/t5-large", "t5", 1024),
    BackboneInfo("t5-1.1-lm100k-base", "google/t5-base-lm-adapt", "t5", 768),
    BackboneInfo("roberta-base", "FacebookAI/roberta-base", "roberta", 768),
    BackboneInfo("roberta-large", "FacebookAI/roberta-large", "roberta", 1024),
    BackboneInfo("bert-base-uncased", "google-bert/bert-base-uncased", "bert", 768),
)}


@dataclasses.dataclass(frozen=True)
class KnownPrompt:
    """A prompt from a known release."""

    release: str  # google-prompt-tuning | prompt-transferability | attempt
    task: str
    backbone: str  # key of BACKBONES
    length: int
    variant: str = ""  # the release's own qualifier, e.g. "proj", "cross_model_T5_to_Roberta"
    reported: str = ""  # the score its authors report, with where it comes from

    @property
    def d_model(self) -> int:
        return BACKBONES[self.backbone].d_model


# google-research/prompt-tuning, pretrained_prompts/t5_1_1_lm100k_base/README.md.
_GOOGLE = {
    "sst2": ("SST2", "validation accuracy 95.07"),
    "mrpc": ("MRPC", "validation F1/accuracy 89.7/85.3"),
    "rte": ("RTE", "validation accuracy 68.6"),
}
_ATTEMPT_TASKS = ("mnli", "qnli", "qqp", "record", "squad", "sst2")
_PT_BACKBONES = {"T5Small": "t5-small", "T5": "t5-base", "T5Large": "t5-large",
                 "Roberta": "roberta-base", "RobertaLarge": "roberta-large",
                 "Bert": "bert-base-uncased"}
_PT_BB = "|".join(sorted(_PT_BACKBONES, key=len, reverse=True))
_PT_NAME = re.compile(
    rf"(?P<task>.+?)(?:_(?P<stage>trained|base_nli|base_emotion))?Prompt"
    rf"(?:(?P<bb>{_PT_BB})|_(?P<cross>cross_model_(?:{_PT_BB})_to_(?P<dst>{_PT_BB})))"
    rf"(?:_(?P<suffix>proj|tanh))?"
)


def parse_transferability_name(name: str) -> tuple[str, str, str] | None:
    """`<Task>Prompt<Backbone>[_suffix]` -> (task, backbone, variant), or None."""
    m = _PT_NAME.fullmatch(name)
    if m is None:
        return None
    variant = "+".join(v for v in (m["stage"], m["cross"], m["suffix"]) if v)
    return m["task"], _PT_BACKBONES[m["bb"] or m["dst"]], variant


def identify(path: str | os.PathLike, shape: tuple[int, ...] | None = None) -> KnownPrompt | None:
    """The known release a prompt file belongs to, judged by its path; None if unknown.

    A file whose `shape` disagrees with the release's (length, d_model) is not that release.
    """
    path = Path(path)
    known = None
    if path.parent.name == "t5_1_1_lm100k_base" and path.suffix == ".npy" \
            and path.stem in _GOOGLE:
        task, score = _GOOGLE[path.stem]
        known = KnownPrompt("google-prompt-tuning", task, "t5-1.1-lm100k-base", 100,
                            reported=f"{score} (README.md)")
    elif (m := re.fullmatch(r"(\w+)_prompt\.pt", path.name)) and m[1] in _ATTEMPT_TASKS:
        known = KnownPrompt("attempt", m[1], "t5-base", 100)
    elif path.name == "task_prompt" and (parsed := parse_transferability_name(path.parent.name)):
        task, backbone, variant = parsed
        known = KnownPrompt("prompt-transferability", task, backbone, 100, variant)
    if known is not None and shape is not None and tuple(shape) != (known.length, known.d_model):
        return None
    return known


@dataclasses.dataclass(frozen=True)
class PromptEntry:
    """One prompt found by `list_prompts`."""

    path: str  # relative to the listed folder
    format: str
    shape: tuple[int, ...] | None
    known: KnownPrompt | None  # the release it belongs to, if any
    backbone: str = ""  # from the release, or what the file's own metadata says
    task: str = ""
    reported: str = ""
    error: str = ""


@dataclasses.dataclass(frozen=True)
class PromptListing:
    """What a folder holds: prompts, transfer-result files, and files that are neither."""

    root: str
    prompts: list[PromptEntry]
    result_files: int
    other_files: list[str]


def _is_prompt_folder(folder: Path) -> bool:
    return (folder / PEFT_CONFIG).is_file() or (folder / "_METADATA").is_file() or (
        folder / "_CHECKPOINT_METADATA").is_file()


def read_result(path: str | os.PathLike) -> float | None:
    """The accuracy in a Prompt-Transferability `result_*.json` file.

    Args:
      path: the file, a JSON string holding {"acc": x} (or that object itself).

    Returns:
      x, or None when the file holds no such accuracy.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text())
        value = json.loads(value) if isinstance(value, str) else value
        return float(value["acc"])
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return None


def list_prompts(root: str | os.PathLike) -> PromptListing:
    """Describes every prompt under `root` (a folder, or one prompt file or folder).

    Each prompt is loaded (so its shape is real, and a broken file shows its error) and
    matched against the known releases. Prompt-Transferability `result_<Name>.json` files are
    counted, and a prompt's own-task result (`<Name>/result_<Name>.json`, the shallowest one)
    becomes its reported score.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    candidates, results, others, n_results = [], {}, [], 0
    if root.is_file() or _is_prompt_folder(root):
        candidates.append(root)
    else:
        for folder, dirs, files in os.walk(root):
            folder = Path(folder)
            dirs.sort()
            for d in list(dirs):
                if _is_prompt_folder(folder / d):
                    candidates.append(folder / d)
                    dirs.remove(d)
            for name in sorted(files):
                path = folder / name
                kind = sniff(path)
                if kind in ("npy", "zip", "safetensors"):
                    candidates.append(path)
                elif kind == "json" and name.startswith("result_") and name.endswith(".json"):
                    score = read_result(path)
                    if score is None:
                        others.append(path)
                        continue
                    depth = len(path.relative_to(root).parts)
                    if name == f"result_{folder.name}.json" and (
                            folder.name not in results or depth < results[folder.name][0]):
                        results[folder.name] = (depth, score, path)
                    n_results += 1
                elif not (kind == "json" and any(
                        sidecar_path(p) == path and p.is_file()
                        for p in (path.with_suffix(".npy"), path.with_suffix("")))):
                    others.append(path)

    def rel(p: Path) -> str:
        return str(p.relative_to(root)) if p != root else p.name

    entries = []
    for path in candidates:
        try:
            prompt = load_prompt(path)
        except (ValueError, OSError) as e:
            entries.append(PromptEntry(rel(path), sniff(path) if path.is_file() else "folder",
                                       None, None, error=str(e)))
            continue
        known, meta = identify(path, prompt.array.shape), prompt.metadata
        if known:
            backbone, task, reported = known.backbone, known.task, known.reported
        else:  # what this project's sidecar or a PEFT config says
            backbone = str(meta.get("backbone") or meta.get("base_model_name_or_path") or "")
            task = str(meta.get("task") or "")
            reported = f"score {meta['score']} (sidecar)" if meta.get("score") is not None else ""
        own = results.get(path.parent.name) if path.name == "task_prompt" else None
        if own is not None:
            reported = f"acc {own[1]:.4f} ({rel(own[2])})"
        entries.append(PromptEntry(rel(path), prompt.format, prompt.array.shape, known, backbone,
                                   task, reported))
    return PromptListing(str(root), entries, n_results, [rel(p) for p in others])


def format_listing(listing: PromptListing) -> str:
    """A plain-text table of a `PromptListing`, one prompt a row."""
    header = ("path", "format", "shape", "backbone", "task", "variant", "reported")
    rows = []
    for e in listing.prompts:
        shape = "x".join(str(n) for n in e.shape) if e.shape else "-"
        rows.append((e.path, e.format, shape, e.backbone or "?", e.task or "?",
                     e.known.variant if e.known else "",
                     "error: " + e.error if e.error else e.reported))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
             for r in [header, *rows]]
    errors = sum(1 for e in listing.prompts if e.error)
    lines.append(f"{len(listing.prompts)} prompts ({errors} unreadable) in {listing.root}")
    if listing.result_files:
        lines.append(f"{listing.result_files} Prompt-Transferability result files "
                     "(transfer accuracies, not prompts)")
    if listing.other_files:
        n = len(listing.other_files)
        more = f", ... ({n - 5} more)" if n > 5 else ""
        lines.append(f"{n} other files, not prompts: {', '.join(listing.other_files[:5])}{more}")
    return "\n".join(line.rstrip() for line in lines)
