#!/usr/bin/env bash
# `prompt-jax transfer suggest` on SmolLM2-135M-Instruct for a user's own task: TweetEval
# sentiment (3 classes; no sentiment prompt of TweetEval is in the library) written as JSONL
# files (the 2,000 validation tweets to train on, the 12,284 test tweets to score a seeded 500
# of), with the 16 source prompts of the transfer experiment as the library. About 10 minutes
# on 2 CPU cores. The result goes to benchmarks/results/suggest/; the docs block:
#   python benchmarks/suggest_report.py --docs
set -euo pipefail
cd "$(dirname "$0")/.."
PJ="${PJ:-.venv/bin/prompt-jax}"
PY="${PY:-.venv/bin/python}"
DATA="${PROMPT_JAX_DATA:-../shared/data}/tweeteval/sentiment"
TASK_DIR=runs/suggest_smollm2  # the user's files (outside the repository's tracked files)
OUT=benchmarks/results/suggest/smollm2-135m-instruct
mkdir -p "$TASK_DIR"
"$PY" - "$DATA" "$TASK_DIR" <<'PYEOF'
import json, sys
from pathlib import Path
data, out = Path(sys.argv[1]), Path(sys.argv[2])
names = dict(line.split("\t") for line in (data / "mapping.txt").read_text().splitlines())
for split, name in (("val", "train"), ("test", "test")):
    texts = (data / f"{split}_text.txt").read_text(encoding="utf-8").splitlines()
    labels = (data / f"{split}_labels.txt").read_text().split()
    rows = [{"tweet": t.strip(), "sentiment": names[y].strip()} for t, y in zip(texts, labels)]
    (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
PYEOF
nice -n 5 $PJ transfer suggest --out $OUT --model smollm2-135m-instruct \
    --task my_tweets --task_file $TASK_DIR/train.jsonl --task_eval_file $TASK_DIR/test.jsonl \
    --text_field tweet --label_field sentiment --labels negative,neutral,positive \
    --template 'Tweet: {tweet}\nSentiment:' \
    --prompts benchmarks/results/transfer/smollm2-135m-instruct/prompts
