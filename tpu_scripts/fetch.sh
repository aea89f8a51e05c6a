#!/usr/bin/env bash
# Copies a run's folder (prompts, metrics, TensorBoard events, summary, checkpoints) back
# from worker 0 (which wrote it), or from the bucket on a pod slice.
#
#   tpu_scripts/fetch.sh --name my-tpu --run sst2-xxl [--bucket BUCKET] [--to runs/] [--dry-run]
source "$(dirname "$0")/common.sh"
parse_common "$@"
RUN=""
BUCKET=""
TO=runs/
set -- ${REST[@]+"${REST[@]}"}
while (($#)); do
  case $1 in
    --run) RUN=$2; shift 2 ;;
    --bucket) BUCKET=${2#gs://}; shift 2 ;;
    --to) TO=$2; shift 2 ;;
    *) die "unknown flag $1" ;;
  esac
done
[[ -n $RUN ]] || die "give --run NAME (the run's folder)"
run mkdir -p "$TO"
if [[ -n $BUCKET ]]; then
  run gcloud storage cp -r "gs://$BUCKET/runs/$RUN" "$TO"
else
  tpu scp --recurse "$NAME":runs/"$RUN" "$TO" --worker=0
fi
