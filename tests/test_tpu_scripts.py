"""tpu_scripts/ with --dry-run: every command printed as bash can run it, nothing run (a
`gcloud` that fails the test stands first on the PATH), and the training command is one
`prompt-jax train` accepts."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from prompt_jax.commands import cli
from prompt_jax.commands.gin_config import find_gin_file

pytestmark = pytest.mark.subprocess  # every test runs a script through bash

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "tpu_scripts"
GIN = ["models/t5_1_1_lm100k_xxl.gin", "prompts/text_20.gin", "tasks/sst2.gin",
       "runs/prompt_finetune.gin"]


@pytest.fixture
def script(tmp_path):
    """Runs a tpu_scripts/ script; `gcloud`, `gsutil` and `gcsfuse` on its PATH only leave a
    mark and fail, so a dry run that ran one of them is caught."""
    guard = tmp_path / "bin"
    guard.mkdir()
    for tool in ("gcloud", "gsutil", "gcsfuse"):
        (guard / tool).write_text(f"#!/bin/sh\ntouch {tmp_path}/ran-{tool}\nexit 1\n")
        (guard / tool).chmod(0o755)

    def run(name: str, *args: str) -> tuple[int, list[list[str]], str]:
        env = {**os.environ, "PATH": f"{guard}:{os.environ['PATH']}"}
        for var in ("TPU_NAME", "TPU_ZONE", "TPU_PROJECT", "TPU_ACCELERATOR", "TPU_VERSION"):
            env.pop(var, None)
        proc = subprocess.run(["bash", str(SCRIPTS / name), *args], capture_output=True,
                              text=True, env=env, timeout=60)
        assert not list(tmp_path.glob("ran-*")), "a dry run ran a command"
        lines = proc.stdout.splitlines()
        assert all(line.startswith("+ ") for line in lines), proc.stdout
        return proc.returncode, [_words(line[2:]) for line in lines], proc.stderr

    return run


def _words(line: str) -> list[str]:
    """The words bash makes of a printed command line (its own quoting, $'...' included)."""
    out = subprocess.run(["bash", "-c", "printf '%s\\0' " + line], capture_output=True,
                         check=True, timeout=10).stdout
    return out.decode().split("\0")[:-1]


def _option(argv: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in argv if a.startswith(name + "="))


def test_create_and_delete_name_the_vm_zone_project_and_accelerator(script):
    code, commands, _ = script("create.sh", "--dry-run", "--name", "my-tpu", "--zone",
                               "europe-west4-a", "--project", "proj", "--accelerator", "v4-32",
                               "--spot")
    assert code == 0 and commands == [[
        "gcloud", "compute", "tpus", "tpu-vm", "create", "my-tpu", "--accelerator-type=v4-32",
        "--version=tpu-ubuntu2204-base", "--scopes=https://www.googleapis.com/auth/cloud-platform",
        "--spot", "--zone=europe-west4-a", "--project=proj"]]
    code, commands, _ = script("delete.sh", "--dry-run", "--name", "my-tpu")
    assert code == 0 and commands == [["gcloud", "compute", "tpus", "tpu-vm", "delete", "my-tpu",
                                       "--quiet", "--zone=us-central2-b"]]


def test_setup_installs_this_checkout_on_every_worker_and_copies_the_data(script):
    code, commands, _ = script("setup.sh", "--dry-run", "--name", "t", "--data", "gs://b/data",
                               "--prompts", "released/")
    assert code == 0
    archive = commands[0]
    assert archive[:3] == ["git", "-C", str(REPO)] and archive[-1] == "HEAD"
    assert commands[1][4:6] == ["scp", archive[-2]] and "--worker=all" in commands[1]
    ssh = [c for c in commands if c[4] == "ssh"]
    assert all("--worker=all" in c for c in ssh)
    install = _option(ssh[0], "--command")
    assert "python3.11 -m venv ~/venv" in install and "-e ~/prompt_jax" in install
    assert "gcloud storage cp -r 'gs://b/data/*' ~/data/" in _option(ssh[1], "--command")
    assert commands[-1][4:7] == ["scp", "--recurse", "released/"]  # a local folder: copied
    assert not any("gcsfuse" in " ".join(c) for c in commands)  # one host: no bucket


def test_a_pod_slice_needs_a_bucket_every_worker_sees(script):
    code, commands, err = script("setup.sh", "--dry-run", "--accelerator", "v4-32")
    assert code == 2 and commands == []
    assert "v4-32 spans several hosts: give --bucket" in err
    code, commands, _ = script("setup.sh", "--dry-run", "--accelerator", "v4-32", "--bucket",
                               "gs://runs-bucket")
    mount = _option(commands[-1], "--command")
    assert code == 0 and mount.endswith("gcsfuse --implicit-dirs runs-bucket ~/bucket")


def test_train_runs_one_prompt_jax_train_per_worker_that_the_cli_accepts(script):
    code, commands, _ = script(
        "train.sh", "--dry-run", "--name", "t", "--accelerator", "v4-32", "--bucket", "b",
        "--run", "sst2-xxl", *[x for g in GIN for x in ("--gin_file", g)], "--", "--resume",
        "--template", "Review: {text_a}\nSentiment:")
    assert code == 0 and len(commands) == 1 and "--worker=all" in commands[0]
    remote = shlex.split(_option(commands[0], "--command"))
    at = remote.index("~/venv/bin/prompt-jax")
    assert remote[:at] == ["cd", "~/prompt_jax", "&&", "PROMPT_JAX_DATA=~/data"]
    args = cli.build_parser().parse_args(remote[at + 1:])
    assert args.command == "train" and args.distributed and args.resume
    assert args.output_dir == "~/bucket/runs/sst2-xxl" and args.gin_file == GIN
    assert args.template == "Review: {text_a}\nSentiment:"
    for name in GIN:
        find_gin_file(name)  # every gin file the README names exists


def test_the_whole_job_deletes_the_vm_last_even_when_a_step_fails(script):
    flags = ["--dry-run", "--name", "t", "--accelerator", "v4-32", "--run", "r",
             "--gin_file", GIN[0]]
    code, commands, _ = script("job.sh", *flags, "--bucket", "b")
    steps = [c[4] if c[0] == "gcloud" and c[1] == "compute" else c[0] for c in commands]
    assert code == 0
    assert steps[0] == "create" and steps[1] == "git" and steps[-1] == "delete"
    assert steps.count("delete") == 1 and commands[-2][:3] == ["gcloud", "storage", "cp"]
    code, commands, err = script("job.sh", *flags)  # no bucket: setup refuses
    assert code == 2 and [c[4] for c in commands] == ["create", "delete"]
