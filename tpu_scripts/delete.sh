#!/usr/bin/env bash
# Deletes the TPU VM (every host of a pod slice). The bucket, if any, stays.
#
#   tpu_scripts/delete.sh --name my-tpu --zone us-central2-b [--dry-run]
source "$(dirname "$0")/common.sh"
parse_common "$@"
((${#REST[@]} == 0)) || die "unknown flag ${REST[0]}"
tpu delete "$NAME" --quiet
