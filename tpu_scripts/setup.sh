#!/usr/bin/env bash
# Installs prompt_jax (this checkout) and JAX for TPU on every worker, and puts the data and
# prompts there; on a pod slice, mounts a bucket that every worker sees (the run's folder,
# which orbax's collective checkpoints need to be one folder for all hosts).
#
#   tpu_scripts/setup.sh --name my-tpu [--data DIR|gs://...] [--prompts DIR|gs://...]
#       [--bucket BUCKET] [--dry-run]
#
# --data, --prompts: a local folder (copied to every worker) or a gs:// folder (each worker
#   copies it); they land in ~/data and ~/prompts. Default data: ../shared/data.
# --bucket: a Cloud Storage bucket with hierarchical namespace (atomic folder renames, which
#   orbax's checkpoint finalization needs), mounted with gcsfuse at ~/bucket on every worker.
#   Required on a pod slice; create it with
#   gcloud storage buckets create gs://BUCKET --location=REGION \
#       --uniform-bucket-level-access --enable-hierarchical-namespace
source "$(dirname "$0")/common.sh"
parse_common "$@"
DATA=$REPO_DIR/../shared/data
PROMPTS=""
BUCKET=""
set -- ${REST[@]+"${REST[@]}"}
while (($#)); do
  case $1 in
    --data) DATA=$2; shift 2 ;;
    --prompts) PROMPTS=$2; shift 2 ;;
    --bucket) BUCKET=${2#gs://}; shift 2 ;;
    *) die "unknown flag $1" ;;
  esac
done
if multi_host && [[ -z $BUCKET ]]; then
  die "$ACCELERATOR spans several hosts: give --bucket (a folder every worker sees)"
fi

# The source of this checkout (committed files), installed editable so that gin_configs/ is
# found beside the package.
# (The TPU VM images run Ubuntu 22.04, whose python3 is 3.10: prompt_jax needs 3.11.)
ARCHIVE=${TMPDIR:-/tmp}/prompt_jax-$NAME.tar.gz
run git -C "$REPO_DIR" archive --format=tar.gz --prefix=prompt_jax/ -o "$ARCHIVE" HEAD
tpu scp "$ARCHIVE" "$NAME":prompt_jax.tar.gz --worker=all
on_workers "sudo apt-get update -q && sudo apt-get install -y -q python3.11-venv \
&& rm -rf ~/prompt_jax && tar xzf ~/prompt_jax.tar.gz -C ~ && python3.11 -m venv ~/venv \
&& ~/venv/bin/pip install -q -U pip && ~/venv/bin/pip install -q 'jax[tpu]' -e ~/prompt_jax"

copy_folder() {  # copy_folder SOURCE NAME: SOURCE to ~/NAME on every worker
  if [[ $1 == gs://* ]]; then
    on_workers "mkdir -p ~/$2 && gcloud storage cp -r '${1%/}/*' ~/$2/"
  else
    on_workers "rm -rf ~/$2"
    tpu scp --recurse "$1" "$NAME":"$2" --worker=all
  fi
}
copy_folder "$DATA" data
if [[ -n $PROMPTS ]]; then copy_folder "$PROMPTS" prompts; fi

if [[ -n $BUCKET ]]; then
  on_workers "export GCSFUSE_REPO=gcsfuse-\$(lsb_release -c -s) && echo \"deb [signed-by=\
/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt \$GCSFUSE_REPO \
main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list && curl -s https://packages.cloud.\
google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc > /dev/null \
&& sudo apt-get update -q && sudo apt-get install -y -q gcsfuse && mkdir -p ~/bucket \
&& gcsfuse --implicit-dirs $BUCKET ~/bucket"
fi
