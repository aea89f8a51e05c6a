"""The `transfer suggest` result of docs/transfer.md, from the file it stored.

    python benchmarks/suggest_report.py          # print the markdown
    python benchmarks/suggest_report.py --docs   # ... and put it into docs/transfer.md

Every number comes from `benchmarks/results/suggest/<model>/suggestion.json`, written by
`benchmarks/suggest_smollm2.sh`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from prompt_jax import stats  # noqa: E402
from prompt_jax.transfer.suggest import chosen_text, start_reading  # noqa: E402

MODEL = "smollm2-135m-instruct"
SCRIPT = "benchmarks/suggest_smollm2.sh"


def _repository_path(text: str) -> str:
    """`text` with a path into this repository's results shown from the repository's root (a
    suggestion made in another checkout stores its absolute path)."""
    return re.sub(r"\S*/(benchmarks/results/\S+)", r"`\1`", text)


def report(model: str = MODEL) -> str:
    path = HERE / "results" / "suggest" / model / "suggestion.json"
    if not path.exists():
        return f"Not measured yet (`{SCRIPT}`)."
    r = json.loads(path.read_text())
    scores = r["scores"]
    template = stats.Estimate(**scores["none"]["accuracy"])
    lines = [f"`{SCRIPT}` on {r['model']}: the task `{r['task']}` from JSONL files, a library "
             f"of {len(r['ranking'])} saved prompts, ranked by {r['indicator']} "
             f"({_repository_path(r['indicator_why'].split(' (')[0])}) against a prompt trained "
             f"{r['brief']['recipe']['steps']} steps; each start scored zero-shot on the same "
             f"{template.n} {r['split']} rows (a seeded sample), 95% intervals, differences "
             "paired on the same rows.", "",
             "| start | accuracy | minus the template (points) | beyond noise |",
             "|---|---|---|---|", f"| template alone | {template.text()} | - | - |"]
    for name, s in scores.items():
        if name == "none":
            continue
        d = stats.Estimate(**s["vs_template"]["difference"])
        label = name if name != "spot_mix" else "SPoT mix (" + ", ".join(
            f"{k} {v:.2f}" for k, v in r["spot_weights"].items()) + ")"
        lines.append(f"| {label} | {stats.Estimate(**s['accuracy']).text()} | "
                     f"{100 * d.value:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}] | "
                     f"{'yes' if s['vs_template']['beyond_noise'] else 'no'} |")
    top = ", ".join(f"{x['name']} ({x['handling']})" for x in r["ranking"][:5])
    seconds = r["seconds"]
    lines += ["", f"Reading it: {start_reading(scores)}. Suggested start: {chosen_text(r)}. The "
              f"top five by {r['indicator']}: {top}.", "",
              f"Seconds (a shared 2-core CPU): brief training {seconds['brief_training']:.0f}, "
              f"ranking {seconds['ranking']:.0f}, scoring {seconds['scoring']:.0f}, "
              f"the whole suggestion {seconds['total']:.0f} (the model's load not counted).",
              "", "The command it printed:", "", "```bash", r["command"], "```"]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=MODEL)
    p.add_argument("--docs", action="store_true", help="write the block into docs/transfer.md")
    args = p.parse_args()
    block = report(args.model)
    print(block)
    if args.docs:
        from readme_block import write_block

        write_block("suggest", block)


if __name__ == "__main__":
    main()
