#!/usr/bin/env bash
# The whole job: create the VM, set it up, train, copy the results back, delete the VM (also
# when a step fails, so that a failed job does not keep the VM running).
#
#   tpu_scripts/job.sh --name my-tpu --accelerator v4-32 --bucket BUCKET --run sst2-xxl \
#       --gin_file ... [--data DIR|gs://...] [--prompts DIR|gs://...] [--dry-run] [-- train flags]
source "$(dirname "$0")/common.sh"
HERE=$(dirname "$0")
parse_common "$@"
COMMON=(--name "$NAME" --zone "$ZONE" --accelerator "$ACCELERATOR")
if [[ -n $PROJECT ]]; then COMMON+=(--project "$PROJECT"); fi
if ((DRY_RUN)); then COMMON+=(--dry-run); fi
SETUP=()
TRAIN=()
FETCH=()
set -- ${REST[@]+"${REST[@]}"}
while (($#)); do
  case $1 in
    --data|--prompts) SETUP+=("$1" "$2"); shift 2 ;;
    --bucket) SETUP+=("$1" "$2"); TRAIN+=("$1" "$2"); FETCH+=("$1" "$2"); shift 2 ;;
    --run) TRAIN+=("$1" "$2"); FETCH+=("$1" "$2"); shift 2 ;;
    --gin_file) TRAIN+=("$1" "$2"); shift 2 ;;
    --) TRAIN+=("$@"); break ;;
    *) die "unknown flag $1" ;;
  esac
done
"$HERE/create.sh" "${COMMON[@]}"
trap '"$HERE/delete.sh" "${COMMON[@]}"' EXIT
"$HERE/setup.sh" "${COMMON[@]}" ${SETUP[@]+"${SETUP[@]}"}
"$HERE/train.sh" "${COMMON[@]}" ${TRAIN[@]+"${TRAIN[@]}"}
"$HERE/fetch.sh" "${COMMON[@]}" ${FETCH[@]+"${FETCH[@]}"}
