"""Writes a generated markdown block into the README between its `<!-- name:start -->` and
`<!-- name:end -->` markers, so that every number there comes from a stored result file."""

from __future__ import annotations

import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def markers(name: str) -> tuple[str, str]:
    """The README markers of block `name`."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_block(name: str, block: str, readme: Path = README) -> None:
    """Replaces what stands between block `name`'s markers with `block` (exits naming the
    markers when the README lacks them)."""
    start_marker, end_marker = markers(name)
    text = readme.read_text()
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        sys.exit(f"{readme} has no {start_marker} ... {end_marker} block")
    readme.write_text(text[:start + len(start_marker)] + "\n" + block + "\n" + text[end:])
