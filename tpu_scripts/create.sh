#!/usr/bin/env bash
# Creates a TPU VM: one host (--accelerator v4-8, the default) or a pod slice of several hosts
# (--accelerator v4-32: 4 hosts x 4 chips).
#
#   tpu_scripts/create.sh --name my-tpu --zone us-central2-b --accelerator v4-32 [--spot]
#       [--version tpu-ubuntu2204-base] [--dry-run]
source "$(dirname "$0")/common.sh"
parse_common "$@"
VERSION=${TPU_VERSION:-tpu-ubuntu2204-base}
SPOT=()
set -- ${REST[@]+"${REST[@]}"}
while (($#)); do
  case $1 in
    --version) VERSION=$2; shift 2 ;;
    --spot) SPOT=(--spot); shift ;;
    *) die "unknown flag $1" ;;
  esac
done
# cloud-platform scope: the workers read and write Cloud Storage (data, prompts, a pod's runs).
tpu create "$NAME" --accelerator-type="$ACCELERATOR" --version="$VERSION" \
  --scopes=https://www.googleapis.com/auth/cloud-platform ${SPOT[@]+"${SPOT[@]}"}
