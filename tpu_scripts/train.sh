#!/usr/bin/env bash
# Launches `prompt-jax train` on every worker at once: one process per host, joined by
# jax.distributed (--distributed: JAX reads the coordinator, process count and index from the
# TPU VM's metadata). Only process 0 writes the run's files.
#
#   tpu_scripts/train.sh --name my-tpu --run sst2-xxl \
#       --gin_file models/t5_1_1_lm100k_xxl.gin --gin_file prompts/text_20.gin \
#       --gin_file tasks/sst2.gin --gin_file runs/prompt_finetune.gin [--bucket BUCKET] \
#       [--dry-run] [-- more prompt-jax train flags, e.g. --resume --steps 3000]
#
# The run goes to ~/runs/RUN on a single host, to ~/bucket/runs/RUN (the bucket setup.sh
# mounted) on a pod slice, where --bucket is required.
source "$(dirname "$0")/common.sh"
parse_common "$@"
RUN=""
BUCKET=""
FLAGS=()
set -- ${REST[@]+"${REST[@]}"}
while (($#)); do
  case $1 in
    --run) RUN=$2; shift 2 ;;
    --bucket) BUCKET=${2#gs://}; shift 2 ;;
    --gin_file) FLAGS+=(--gin_file "$2"); shift 2 ;;
    --) shift; FLAGS+=("$@"); break ;;
    *) die "unknown flag $1 (pass prompt-jax train flags after --)" ;;
  esac
done
[[ -n $RUN ]] || die "give --run NAME (the run's folder)"
if multi_host && [[ -z $BUCKET ]]; then
  die "$ACCELERATOR spans several hosts: give --bucket (mounted by setup.sh on every worker)"
fi
OUT=\~/runs/$RUN
if [[ -n $BUCKET ]]; then OUT=\~/bucket/runs/$RUN; fi
COMMAND=""
for word in ${FLAGS[@]+"${FLAGS[@]}"}; do COMMAND+=" $(quote "$word")"; done
# The same command on every worker; the data and prompts setup.sh put in ~/data, ~/prompts.
on_workers "cd ~/prompt_jax && PROMPT_JAX_DATA=~/data ~/venv/bin/prompt-jax train \
--distributed --output_dir $OUT$COMMAND"
