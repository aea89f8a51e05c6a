#!/usr/bin/env bash
# The transfer experiments of docs/results.md on SmolLM2-135M-Instruct, in order of importance.
# CPU-hours on 2 cores; every step is resumable: run this again after a kill and it continues.
set -euo pipefail
cd "$(dirname "$0")/.."
PJ="${PJ:-.venv/bin/prompt-jax}"
OUT=benchmarks/results/transfer/smollm2-135m-instruct
RUNS=runs/transfer/smollm2-135m-instruct
SOURCES=sst2,rotten_tomatoes,imdb,laptop,restaurant,trec,mrpc,tweet_emotion,tweet_hate,tweet_irony,tweet_offensive,tweet_stance_abortion,tweet_stance_atheism,tweet_stance_climate,tweet_stance_feminist,tweet_stance_hillary
TARGETS=$SOURCES,tweet_sentiment,mnli,snli,qnli,ag_news,rte
SENTIMENT=sst2,rotten_tomatoes,imdb,laptop,restaurant,tweet_sentiment

$PJ transfer matrix --out $OUT --runs $RUNS --sources $SOURCES --targets $TARGETS --limit 200
$PJ transfer indicators --out $OUT --modes paper,inputs,prompt --layers all,bottom_third,top_third
$PJ transfer domain-shift --out $OUT --runs $RUNS --source sst2 --targets $SENTIMENT --limit 500
for target in rotten_tomatoes laptop; do
  $PJ transfer init --out $OUT --runs $RUNS --target $target --limit 300 \
    --arms baseline,random_uniform,source:best,spot:ON_inputs:3
done
$PJ transfer retrieve --out $OUT --runs $RUNS --modes paper,inputs
