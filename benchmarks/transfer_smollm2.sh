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
# Transfer initialization: 3 targets x 3 seeds x 5 starts, 100 steps, scored every 20 steps.
# Two sentiment targets and one of another type: trec (short questions; mrpc's sentence pairs
# cost about twice as much per step).
# (The earlier study, 2 targets x 2 seeds x 4 starts over 320 steps scored every 40, is kept in
# $OUT/init_320steps.)
SENTIMENT_TEXT="text:Is the opinion of this review positive or negative?"
for target in rotten_tomatoes laptop trec; do
  text="$SENTIMENT_TEXT"
  [ "$target" = trec ] && text="text:What kind of answer does this question ask for?"
  $PJ transfer init --out $OUT --runs $RUNS --target $target --limit 200 --steps 100 \
    --eval_every 20 --seeds 0,1,2 \
    --arms "baseline,random_uniform,$text,source:best,spot:ON_inputs:3"
done
$PJ transfer retrieve --out $OUT --runs $RUNS --modes paper,inputs
# The sentiment family on 1,000 rows per target (or its whole split); tweet_sentiment has no
# local train file, so it is a target only.
mkdir -p runs/transfer/sentiment-library
for t in sst2 imdb rotten_tomatoes laptop restaurant; do
  cp $OUT/prompts/$t.npy $OUT/prompts/$t.json runs/transfer/sentiment-library/
done
$PJ transfer matrix --out $OUT-sentiment --runs $RUNS-sentiment \
  --prompts runs/transfer/sentiment-library --targets $SENTIMENT --limit 1000
# Question answering, summarization and ethics beside sentiment: the 20-vector generation
# prompts (benchmarks/generation_results.py) and two sentiment prompts as a library; the
# ethics sources are trained here.
LIB=runs/transfer/generation-library
mkdir -p $LIB
for t in squad nq_open samsum; do
  cp benchmarks/results/generation/smollm2-135m-instruct/$t/prompt20_prompt.npy $LIB/$t.npy
  cp benchmarks/results/generation/smollm2-135m-instruct/$t/prompt20_prompt.json $LIB/$t.json
done
cp $OUT/prompts/sst2.* $OUT/prompts/rotten_tomatoes.* $LIB/
$PJ transfer matrix --out $OUT-generation --runs $RUNS-generation --prompts $LIB \
  --targets squad,nq_open,samsum,sst2 --limit 100
$PJ transfer matrix --out $OUT-generation --runs $RUNS-generation --prompts $LIB \
  --sources ethics_deontology,ethics_justice \
  --targets squad,nq_open,samsum,sst2,ethics_deontology,ethics_justice --limit 100
$PJ transfer indicators --out $OUT-generation --modes paper --layers all,bottom_third,top_third
