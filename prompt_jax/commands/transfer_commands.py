"""The `prompt-jax transfer` commands: whole experiments of `prompt_jax.transfer` over one
results folder.

One folder (`--out`) holds an experiment on one model:

    prompts/<task>.npy (+ .json)     the source prompts (`matrix` trains the missing ones)
    sources/<task>.json              their runs' summaries
    cells/<source>__<target>.json    the zero-shot matrix, one file per cell
    matrix.csv, matrix.md, matrix.png
    indicators.json, indicators.md   indicators of every prompt pair, their correlations
    brief/prompts/<task>.npy         prompts trained briefly, for retrieval and SPoT mixes
    retrieval.json, retrieval.md
    init/<target>/<arm>__seed<k>.json, init_<target>.png, init.md      (transfer_study_commands)
    domain_shift/<row>__<target>.json, domain_shift.md                (transfer_study_commands)

Every file is written when its piece of work ends, and a rerun skips the work whose file
exists: a killed command is simply run again. Training runs (checkpoints, metrics) go to
`--runs` (default `<out>/runs`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prompt_jax import provenance
from prompt_jax.commands.common import import_tensorflow_quietly
from prompt_jax.commands.common import names as comma_list
from prompt_jax.commands.run_commands import add_task_file_flags

if TYPE_CHECKING:  # the heavy imports wait for a command that runs (the parser stays light)
    from prompt_jax import engine
    from prompt_jax.transfer import SourceRecipe


def _init_arms() -> tuple[str, ...]:
    """Init arms by name: every prompt init but from_array."""
    from prompt_jax.prompts import INITS

    return tuple(i for i in INITS if i != "from_array")


def _prompt_files(out: Path, names: Sequence[str]) -> dict[str, Path]:
    missing = [n for n in names if not (out / "prompts" / f"{n}.npy").exists()]
    if missing:
        raise FileNotFoundError(f"no source prompt for {missing} in {out / 'prompts'}: run "
                                f"`prompt-jax transfer matrix` with these sources first")
    return {n: out / "prompts" / f"{n}.npy" for n in names}


def _source_names(out: Path) -> list[str]:
    return sorted(p.stem for p in (out / "sources").glob("*.json"))


def sources_table(out: Path, names: Sequence[str]) -> str:
    """Markdown: each source prompt's own score (its run's final evaluation)."""
    from prompt_jax import transfer

    lines = ["| source | accuracy | examples | train seconds |", "|---|---|---|---|"]
    for name in names:
        summary = transfer.read_json(out / "sources" / f"{name}.json")
        final = summary["final"]
        accuracy = f"{final['accuracy']:.1%}" if "accuracy" in final else "-"
        seconds = (f"{summary['train_seconds']:.0f}" if summary.get("train_seconds") is not None
                   else f"library ({summary.get('handling', '')})")
        lines.append(f"| {name} | {accuracy} | {final.get('examples', '-')} | {seconds} |")
    return "\n".join(lines)


def matrix(loaded: engine.LoadedModel, sources: Sequence[str], targets: Sequence[str],
           out: Path, *, recipe: SourceRecipe, limit: int, runs: Path | None = None,
           controls: bool = True) -> dict[str, Path]:
    """Trains the missing source prompts, fills the missing cells, writes the tables."""
    from prompt_jax import transfer

    transfer.train_sources(loaded, sources, out, recipe, runs_dir=runs)
    prompts = transfer.load_prompts(loaded, _prompt_files(out, sources))
    cells = transfer.zero_shot_matrix(loaded, prompts, targets, out, limit=limit,
                                      controls=controls, seed=recipe.seed)
    return transfer.write_matrix(cells, out, title=f"{Path(loaded.name).name}: zero-shot "
                                                   "transfer of soft prompts")


def _cells(out: Path) -> list[dict]:
    from prompt_jax import transfer

    cells = transfer.ordered_cells(
        [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")])
    if not cells:
        raise FileNotFoundError(f"no matrix cells in {out / 'cells'}: run "
                                "`prompt-jax transfer matrix` first")
    return cells


def _fmt(v) -> str:
    import numpy as np

    return "-" if v is None or not np.isfinite(v) else f"{v:+.3f}"


def on_name(mode: str, layers: str) -> str:
    """The indicator name of ON in `mode` over a layer selection: ON_<mode> over all layers,
    ON_<mode>_<selection> otherwise (e.g. ON_paper_top_third)."""
    return f"ON_{mode}" if layers == "all" else f"ON_{mode}_{layers}"


def indicators(loaded: engine.LoadedModel, out: Path, *, modes: Sequence[str] = ("paper",
               "inputs"), n_inputs: int = 16, layers: Sequence[str] = ("all",)) -> dict:
    """Every indicator for every (source, target) pair of the matrix whose target has its own
    prompt, and the correlation of each with the measured relative transfer; ON once per
    mode and layer selection (`on_name`), the selections read from one forward pass."""
    import numpy as np
    from tqdm import tqdm

    from prompt_jax import transfer
    from prompt_jax.indicators import LAYER_SELECTIONS

    layers = [layers] if isinstance(layers, str) else list(layers)
    unknown = [sel for sel in layers if sel not in LAYER_SELECTIONS]
    if unknown or not layers:
        raise ValueError(f"unknown ON layer selection(s) {unknown}; use {LAYER_SELECTIONS}")
    sources = _source_names(out)
    prompts = transfer.load_prompts(loaded, _prompt_files(out, sources))
    names, all_targets, _, relative = transfer.matrix_arrays(_cells(out))
    targets = [t for t in all_targets if t in prompts]
    measured = relative[np.ix_([names.index(s) for s in sources],
                               [all_targets.index(t) for t in targets])]  # [S, T]
    values = {}
    embedding = transfer.embedding_indicators(prompts)
    for name, table in embedding.items():
        values[name] = table[:, [sources.index(t) for t in targets]]
    for mode in modes:
        tables = {sel: np.zeros((len(sources), len(targets))) for sel in layers}
        for j, target in enumerate(tqdm(targets, desc=f"ON {mode}", unit="target")):
            overlaps = transfer.neuron_overlaps_by_layers(
                loaded, prompts, target, target, mode=mode, n_inputs=n_inputs,
                selections=layers)
            for sel in layers:
                tables[sel][:, j] = [overlaps[sel][s] for s in sources]
        values.update({on_name(mode, sel): tables[sel] for sel in layers})
    valid = np.array([[s != t for t in targets] for s in sources])
    result = {"sources": sources, "targets": targets, "relative": measured.tolist(),
              "layers": layers[0] if len(layers) == 1 else layers, "n_inputs": n_inputs,
              "indicators": {k: v.tolist() for k, v in values.items()},
              "correlations": {k: transfer.correlations(v, measured, valid)
                               for k, v in values.items()}}
    provenance.write_result(out / "indicators.json", result)
    lines = ["| indicator | Spearman (per target, mean) | Kendall (per target, mean) | "
             "Spearman (all pairs) | Kendall (all pairs) | pairs |", "|---|---|---|---|---|---|"]
    for k, c in result["correlations"].items():
        lines.append(f"| {k} | {_fmt(c['spearman_per_target'])} | "
                     f"{_fmt(c['kendall_per_target'])} | {_fmt(c['spearman'])} | "
                     f"{_fmt(c['kendall'])} | {c['pairs']} |")
    (out / "indicators.md").write_text("\n".join(lines) + "\n")
    return result


def retrieve(loaded: engine.LoadedModel, out: Path, *, brief: SourceRecipe,
             runs: Path | None = None, ks: Sequence[int] = (1, 3), modes: Sequence[str] = (
                 "paper",), n_inputs: int = 16) -> dict:
    """For each target with its own prompt: a prompt trained briefly on it ranks the other
    source prompts by each indicator; a hit is when the top-k include the target's best
    actual source in the matrix (its own prompt left out)."""
    import jax.numpy as jnp
    import numpy as np
    from tqdm import tqdm

    from prompt_jax import indicators as ind
    from prompt_jax import transfer

    sources = _source_names(out)
    prompts = transfer.load_prompts(loaded, _prompt_files(out, sources))
    names, all_targets, score, _ = transfer.matrix_arrays(_cells(out))
    targets = [t for t in all_targets if t in prompts]
    brief_files = transfer.train_sources(loaded, targets, out / "brief", brief,
                                         runs_dir=(runs or out / "runs") / "brief")
    briefs = transfer.load_prompts(loaded, brief_files)
    actual = np.array([[score[names.index(s), all_targets.index(t)] for s in sources]
                       for t in targets])  # [T, S]
    valid = np.array([[s != t for s in sources] for t in targets])
    ks = [k for k in ks if k < len(sources)]  # a target's own prompt is left out
    values = {}
    for name, fn in transfer.EMBEDDING_INDICATORS.items():
        a = jnp.asarray(np.stack([briefs[t] for t in targets]))
        b = jnp.asarray(np.stack([prompts[s] for s in sources]))
        values[name] = np.asarray(ind.pairwise(fn, a, b))
    for mode in modes:
        table = np.zeros((len(targets), len(sources)))
        for i, t in enumerate(tqdm(targets, desc=f"ON {mode}", unit="target")):
            overlaps = transfer.neuron_overlaps(loaded, {**prompts, "_brief": briefs[t]}, t,
                                                "_brief", mode=mode, n_inputs=n_inputs)
            table[i] = [overlaps[s] for s in sources]
        values[f"ON_{mode}"] = table
    result = {"sources": sources, "targets": targets, "brief_steps": brief.steps,
              "best_source": {t: sources[int(np.argmax(np.where(valid[i], actual[i], -1)))]
                              for i, t in enumerate(targets)},
              "retrieved": {k: {t: [sources[j] for j in np.argsort(-np.where(valid[i], v[i],
                                                                            -np.inf))[:3]]
                                for i, t in enumerate(targets)} for k, v in values.items()},
              # every indicator value and actual score, for intervals with ties split
              # (`stats.retrieval_hits`); [T, S], a target's own prompt included
              "values": {k: np.asarray(v).tolist() for k, v in values.items()},
              "actual": actual.tolist(),
              "accuracy": {k: {str(kk): acc for kk, acc in ind.retrieval_accuracy(
                  jnp.asarray(v), jnp.asarray(actual), ks, jnp.asarray(valid)).items()}
                           for k, v in values.items()}}
    provenance.write_result(out / "retrieval.json", result)
    lines = ["| indicator | " + " | ".join(f"top-{k} hit rate" for k in ks) + " |",
             "|---" * (len(ks) + 1) + "|"]
    for k, acc in result["accuracy"].items():
        lines.append(f"| {k} | " + " | ".join(f"{acc[str(kk)]:.0%}" for kk in ks) + " |")
    (out / "retrieval.md").write_text("\n".join(lines) + "\n")
    return result


# Actions and the flags each one needs (one of them).
NEEDS = {"sources": ("sources", "prompts"), "matrix": ("sources", "prompts"),
         "init": ("target",), "domain-shift": ("targets",),
         "suggest": ("task_file", "task_spec")}


def define_tasks(args, out: Path) -> str | None:
    """Registers the file tasks: those the experiment keeps (`tasks/*.json`), then the one the
    flags define (`--task_file` ... or `--task_spec`), kept for the later commands; its name."""
    from prompt_jax.commands.run_commands import define_task_from_flags
    from prompt_jax.transfer import library

    if out.is_dir():
        library.define_recorded_tasks(out)
    define_task_from_flags(args)
    if args.task and args.action != "suggest":
        library.record_task(args.task, out)
    return args.task


def main(args) -> None:
    """Runs one `prompt-jax transfer` action on the model, loaded once for the whole command."""
    from prompt_jax import engine, transfer
    from prompt_jax.commands import transfer_study_commands as studies
    from prompt_jax.transfer import library as library_prompts

    if args.action in NEEDS and not any(getattr(args, f) for f in NEEDS[args.action]):
        raise ValueError(f"transfer {args.action} needs "
                         + " or ".join(f"--{f}" for f in NEEDS[args.action]))
    import_tensorflow_quietly()  # seqio inside
    out = Path(args.out)
    own_task = define_tasks(args, out)
    recipe = transfer.SourceRecipe(prompt_length=args.prompt_length, steps=args.steps,
                                   batch_size=args.batch_size, learning_rate=args.lr,
                                   seed=args.seed)
    brief = dataclasses.replace(recipe, steps=args.brief_steps)
    runs = Path(args.runs) if args.runs else None
    loaded = engine.load_model(args.model, mesh_data=1)
    if args.action == "suggest":
        from prompt_jax.transfer import suggest

        suggest.main(loaded, own_task, args, recipe=recipe, brief=brief)
        return
    trained = comma_list(args.sources) if args.sources else []
    library, library_tasks = [], []
    if args.prompts:  # a user's saved prompts, as sources beside the trained ones
        items = library_prompts.read_library(args.prompts, loaded.model.d_model,
                                             args.prompt_length, projector=args.projector)
        library = library_prompts.import_library(items, out)
        library_tasks = [i.task for i in items if i.task]
        for item in items:
            print(f"[library] {item.name} (task {item.task or '?'}): {item.handling}",
                  flush=True)
    for task in trained + comma_list(args.targets or ""):
        library_prompts.record_task(task, out)
    if args.action == "sources":
        transfer.train_sources(loaded, trained, out, recipe, runs_dir=runs)
        print(sources_table(out, trained + library))
    elif args.action == "matrix":
        targets = (comma_list(args.targets) if args.targets else
                   list(dict.fromkeys(trained + library_tasks + ([own_task] if own_task
                                                                 else []))))
        paths = matrix(loaded, trained + library, targets, out, recipe=recipe,
                       limit=args.limit, runs=runs, controls=not args.no_controls)
        print((out / "matrix.md").read_text())
        print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    elif args.action == "indicators":
        indicators(loaded, out, modes=comma_list(args.modes), n_inputs=args.n_inputs,
                   layers=comma_list(args.layers))
        print((out / "indicators.md").read_text())
    elif args.action == "retrieve":
        retrieve(loaded, out, brief=brief, runs=runs, modes=comma_list(args.modes),
                 n_inputs=args.n_inputs)
        print((out / "retrieval.md").read_text())
    elif args.action == "init":
        report = studies.init(loaded, args.target, comma_list(args.arms), out, recipe=recipe,
                      seeds=[int(s) for s in comma_list(args.seeds)],
                      eval_every=args.eval_every, eval_limit=args.limit, brief=brief,
                      runs=runs, n_inputs=args.n_inputs)
        print(json.dumps(report["arms"], indent=2))
    else:  # domain-shift
        studies.domain_shift(loaded, args.source, comma_list(args.targets), out, tuning=recipe,
                     learning_rate=args.tuning_lr, limit=args.limit, runs=runs)
        print((out / "domain_shift.md").read_text())


def run_task_flags(p) -> None:
    """A file task for any action, by name in --sources / --targets / --target (kept in the
    experiment folder for the later commands)."""
    add_task_file_flags(p)
    p.add_argument("--task", help="the --task_file task's name (default: the file's stem)")
    p.add_argument("--template", help="the --task_file task's template, naming its fields")


def add_parser(sub) -> None:
    """Adds `transfer` to the `prompt-jax` subparsers."""
    p = sub.add_parser(
        "transfer", help="cross-task prompt transfer: sources, matrix, init, indicators, "
                         "retrieve, domain-shift (resumable: rerun a killed command)")
    p.add_argument("action", choices=["sources", "matrix", "init", "indicators", "retrieve",
                                      "domain-shift", "suggest"])
    p.add_argument("--out", required=True, help="the experiment's results folder (suggest: "
                                                "where suggestion.json and the prompt go)")
    p.add_argument("--prompts", help="a folder of saved prompts (<name>.npy + .json sidecar) "
                                     "used as sources beside the trained ones (suggest: the "
                                     "library ranked); another length is fitted and said")
    p.add_argument("--projector", help="a saved projector mapping library prompts of another "
                                       "width to the model's")
    run_task_flags(p)
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="REAL_MODELS name, local directory or file, or hub id")
    p.add_argument("--runs", help="training runs' folder (default <out>/runs)")
    p.add_argument("--sources", help="sources, matrix: source tasks, comma-separated")
    p.add_argument("--targets", help="matrix, domain-shift: target tasks (matrix default: "
                                     "the sources)")
    p.add_argument("--target", help="init: the task trained")
    p.add_argument("--source", default="sst2", help="domain-shift: the source task")
    p.add_argument("--arms", default="baseline,source:best,spot:ON_paper:3",
                   help="init: baseline, random_uniform, sampled_vocab, text:<words>, "
                        "source:<task>, source:best, spot:<indicator>:<k>")
    p.add_argument("--seeds", default="0,1", help="init: seeds per arm")
    p.add_argument("--limit", type=int, default=500,
                   help="examples per evaluation (a seeded sample; 0 = all)")
    p.add_argument("--no_controls", action="store_true",
                   help="matrix: leave out the no-prompt and random-prompt rows")
    p.add_argument("--modes", default="paper,inputs",
                   help="ON modes: paper (empty text), inputs (real target inputs), prompt "
                        "(every prompt position)")
    p.add_argument("--n_inputs", type=int, default=16, help="ON inputs mode: inputs read")
    p.add_argument("--layers", default="all",
                   help="indicators: ON layer selections, comma-separated: all, bottom_third "
                        "(the first third), top_third (each its own indicator, e.g. "
                        "ON_paper_top_third)")
    p.add_argument("--steps", type=int, default=320, help="steps per prompt")
    p.add_argument("--brief_steps", type=int, default=40,
                   help="retrieve, spot arms: steps of the brief target prompt")
    p.add_argument("--prompt_length", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-2, help="AdamW learning rate of prompts")
    p.add_argument("--tuning_lr", type=float, default=2e-5,
                   help="domain-shift: AdamW learning rate of model tuning")
    p.add_argument("--eval_every", type=int, default=40, help="init: steps between evaluations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--indicator", help="suggest: rank the library by this (E_cos, E_euc, "
                                       "E_cos_tokens, E_euc_tokens, ON_paper, ON_inputs, "
                                       "ON_prompt; default: the best of the model's stored "
                                       "retrieval benchmark)")
    p.add_argument("--top_k", type=int, default=3, help="suggest: library prompts scored and "
                                                        "mixed (default 3)")
    p.add_argument("--sample", type=int, default=500,
                   help="suggest: validation rows scored, a seeded sample (default 500)")
    p.add_argument("--retrieval", help="suggest: the retrieval.json whose best indicator ranks "
                                       "(default: the one stored for --model)")
    p.set_defaults(func=main)
