# Shared by the tpu_scripts (sourced, not run): the flags every script takes, and `run`, which
# prints each command before running it, or only prints it with --dry-run.
#
# Flags (or environment variables):
#   --name NAME          the TPU VM ($TPU_NAME, default prompt-jax)
#   --zone ZONE          ($TPU_ZONE, default us-central2-b)
#   --project PROJECT    ($TPU_PROJECT, default: gcloud's configured project)
#   --accelerator TYPE   ($TPU_ACCELERATOR, default v4-8: one host; v4-32: a 4-host pod slice)
#   --dry-run            print every command, run none
set -euo pipefail

NAME=${TPU_NAME:-prompt-jax}
ZONE=${TPU_ZONE:-us-central2-b}
PROJECT=${TPU_PROJECT:-}
ACCELERATOR=${TPU_ACCELERATOR:-v4-8}
DRY_RUN=0
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REST=()  # the arguments the common flags leave, for the script's own parsing

parse_common() {
  while (($#)); do
    case $1 in
      --name) NAME=$2; shift 2 ;;
      --zone) ZONE=$2; shift 2 ;;
      --project) PROJECT=$2; shift 2 ;;
      --accelerator) ACCELERATOR=$2; shift 2 ;;
      --dry-run) DRY_RUN=1; shift ;;
      *) REST+=("$1"); shift ;;
    esac
  done
}

die() { echo "$(basename "$0"): $*" >&2; exit 2; }

# A word quoted for a POSIX shell where it needs it (single quotes keep a newline as it is).
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}

# Prints a command as one line that bash can run as it is (words quoted where they need it),
# then runs it unless --dry-run.
run() {
  local word line="+"
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then line+=" $word"; else line+=" ${word@Q}"; fi
  done
  printf '%s\n' "$line"
  if ((!DRY_RUN)); then "$@"; fi
}

# `gcloud compute tpus tpu-vm SUBCOMMAND ...` in this zone (and project).
tpu() {
  local sub=$1; shift
  run gcloud compute tpus tpu-vm "$sub" "$@" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"}
}

# Runs a shell command on every worker of the VM (all hosts of a pod slice at once).
on_workers() { tpu ssh "$NAME" --worker=all --command="$1"; }

# Hosts of an accelerator type: more than 8 cores or chips (v4-32, v5litepod-16, ...) span
# several hosts, each running one process of the job.
multi_host() {
  local size=${ACCELERATOR##*-}
  [[ $size =~ ^[0-9]+$ ]] || die "cannot read the size of accelerator type $ACCELERATOR"
  ((size > 8))
}
