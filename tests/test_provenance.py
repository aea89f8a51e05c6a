"""Every result JSON carries its provenance: command, date, commit, machine, library versions."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
from pathlib import Path

import jax

from prompt_jax import provenance

REPO = Path(__file__).resolve().parent.parent


def test_write_result_stores_every_field_beside_the_numbers(tmp_path):
    path = provenance.write_result(tmp_path / "deep" / "result.json", {"accuracy": 0.5},
                                   indent=1)
    stored = json.loads(path.read_text())
    assert stored["accuracy"] == 0.5
    info = stored["provenance"]
    assert set(provenance.FIELDS) <= set(info)
    assert info["date"] == datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert info["commit"].removesuffix("-dirty") == head
    machine = info["machine"]
    assert machine["cpu"] and machine["cores"] >= 1
    assert machine["backend"] == jax.default_backend()
    assert machine["accelerators"] == []  # the test run's devices are CPUs
    assert info["versions"]["jax"] == jax.__version__
    assert "numpy" in info["versions"] and "python" in info["versions"]
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temporary left


def test_the_isa_is_read_from_the_cpu_flags():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    expected = [name for flag, name in provenance.ISA_FLAGS if flag in flags]
    assert provenance.isa() == expected
    assert ("AVX2" in provenance.isa()) == ("avx2" in flags)


def test_a_result_written_again_gets_this_runs_provenance(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"x": 1, "provenance": {"date": "1999-01-01"}}))
    provenance.write_result(path, json.loads(path.read_text()))
    assert json.loads(path.read_text())["provenance"]["date"] != "1999-01-01"


def test_a_results_own_layout_is_kept(tmp_path):
    path = provenance.write_result(tmp_path / "r.json", {"m": [1, 2]},
                                   dumps=lambda v: json.dumps(v, separators=(",", ":")) + "\n")
    assert path.read_text().startswith('{"m":[1,2],"provenance":{')


def test_the_command_names_the_cli_and_quotes_arguments():
    assert provenance.command(["/x/bin/prompt-jax", "train", "--task", "a b"]) == (
        "prompt-jax train --task 'a b'")
    assert provenance.command(["benchmarks/step_bench.py", "--quick"]) == (
        "benchmarks/step_bench.py --quick")


def test_the_table_line_names_machine_and_date():
    text = provenance.line({"provenance": provenance.describe(["x"])})
    assert re.match(r"\d{4}-\d\d-\d\d, .+ \(\d+ cores, .*\), cpu, commit \w{7}", text), text
    assert provenance.line({"accuracy": 1.0}) == "machine and date not recorded"


# JSON files written without provenance on purpose: configuration and prompt/projector sidecars
# (inputs that are read back as settings), not results.
NOT_RESULTS = {
    ("prompt_jax/training/run.py", "config.json"),
    ("prompt_jax/prompts/files.py", "metadata"),
    ("prompt_jax/prompts/formats.py", "config"),
    ("prompt_jax/projectors.py", "FILE_FORMAT"),
    ("prompt_jax/tasks/task_spec.py", "json.dumps(spec"),  # a file task's definition
    ("benchmarks/released_indicators.py", "indent=1"),  # its layout, given to write_result
}


def test_every_json_file_writer_goes_through_provenance():
    """A new result writer that bypasses `provenance.write_result` fails here: every
    `json.dumps` that reaches a file in the library or the benchmarks is either provenance's
    own or a configuration / sidecar listed above."""
    offenders = []
    for path in sorted([*REPO.glob("prompt_jax/**/*.py"), *REPO.glob("benchmarks/*.py")]):
        rel = path.relative_to(REPO).as_posix()
        if rel == "prompt_jax/provenance.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "json.dumps(" not in line or line.lstrip().startswith("#"):
                continue
            if re.search(r"print|hashlib|sha1|_jsonl|RESULT |out\.write\(|return ", line):
                continue  # printed, hashed, a metrics log line, or a function's return value
            if any(rel == f and key in line for f, key in NOT_RESULTS):
                continue
            offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
