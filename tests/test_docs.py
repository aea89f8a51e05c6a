"""The README and docs/ say nothing stale: every `prompt-jax ...` command line they show parses
with the real argument parser, every relative link (and its #anchor) resolves, the Python
examples import names that exist, and every generated block regenerates byte for byte from the
stored result files. Fast: no model is loaded and nothing is measured."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest

from prompt_jax.commands.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*(```+|~~~+)")
SHELL_OPERATORS = {"&", "&&", ";", "|", "||", ">", ">>", "<", "2>", "2>&1"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*\s+")
MAX_LINE = 200


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _blocks_and_prose(text: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The fenced code blocks (language, lines) and the lines outside them."""
    blocks, prose, current, lang = [], [], None, ""
    for line in text.splitlines():
        fence = FENCE.match(line)
        if fence and current is None:
            current, lang = [], line.strip().lstrip("`~").strip()
        elif fence:
            blocks.append((lang, current))
            current = None
        elif current is not None:
            current.append(line)
        else:
            prose.append(line)
    return blocks, prose


def _strip_prefix(line: str) -> str:
    """A shell line without its indentation, `$ ` prompt and leading VAR=value assignments."""
    line = line.strip()
    if line.startswith("$ "):
        line = line[2:].lstrip()
    while ENV_ASSIGNMENT.match(line):
        line = ENV_ASSIGNMENT.sub("", line, count=1)
    return line


def command_lines(path: Path) -> list[str]:
    """Every `prompt-jax ...` command the file shows, in code blocks (backslash continuations
    joined) and in inline code."""
    blocks, prose = _blocks_and_prose(path.read_text())
    found = []
    for _, lines in blocks:
        joined, pending = [], ""
        for line in lines:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            joined.append(pending + line)
            pending = ""
        if pending:
            joined.append(pending)
        found += [c for c in map(_strip_prefix, joined) if c.startswith("prompt-jax ")]
    for span in re.findall(r"`([^`]+)`", "\n".join(prose)):  # a span may cross a line break
        span = _strip_prefix(" ".join(span.split()))
        if span.startswith("prompt-jax "):
            found.append(span)
    return found


def _argv(command: str) -> list[str]:
    """The arguments after `prompt-jax`, up to the first shell operator; a shell variable
    (`$OUT`, `$i`) stands for a value the docs cannot know and becomes 0."""
    tokens = [re.sub(r"\$\{?\w+\}?", "0", t) if t.startswith("$") else t
              for t in shlex.split(command, comments=True)]
    for i, token in enumerate(tokens):
        if token in SHELL_OPERATORS:
            tokens = tokens[:i]
            break
    assert tokens[0] == "prompt-jax"
    return tokens[1:]


COMMANDS = [(_name(p), c) for p in DOC_FILES for c in command_lines(p)]


def test_the_docs_show_commands():
    assert len(COMMANDS) > 20, COMMANDS


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_every_command_line_parses(doc, command):
    parser = build_parser()
    try:
        parser.parse_args(_argv(command))
    except SystemExit as e:
        if e.code == 0 and {"-h", "--help"} & set(_argv(command)):
            return  # the command's help, printed and done
        pytest.fail(f"{doc}: `{command}` does not parse (exit {e.code})")


def test_the_readme_names_every_subcommand():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and a.dest != "help")
    shown = {_argv(c)[0] for d, c in COMMANDS if d == "README.md"}
    assert set(subparsers.choices) <= shown, set(subparsers.choices) - shown


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    _, prose = _blocks_and_prose(path.read_text())
    return {_slug(line.lstrip("#")) for line in prose if re.match(r"#{1,6} ", line)}


def _links(path: Path) -> list[str]:
    _, prose = _blocks_and_prose(path.read_text())
    text = re.sub(r"`[^`]*`", "", "\n".join(prose))
    return re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text)


LINKS = [(p, link) for p in DOC_FILES for link in _links(p)
         if not re.match(r"[a-z]+:", link)]


def test_the_docs_link_to_each_other():
    assert len(LINKS) > 10


@pytest.mark.parametrize(("doc", "link"), LINKS,
                         ids=[f"{_name(p)}:{link}" for p, link in LINKS])
def test_every_relative_link_resolves(doc, link):
    target, _, anchor = link.partition("#")
    path = (doc.parent / target).resolve() if target else doc
    assert path.exists(), f"{_name(doc)}: link {link} names no file"
    if anchor and path.suffix == ".md":
        assert anchor in _anchors(path), f"{_name(doc)}: {link}: no heading #{anchor}"


def _python_blocks() -> list[tuple[str, str]]:
    return [(_name(p), "\n".join(lines)) for p in DOC_FILES
            for lang, lines in _blocks_and_prose(p.read_text())[0] if lang == "python"]


@pytest.mark.parametrize(("doc", "code"), _python_blocks())
def test_python_examples_name_what_exists(doc, code):
    """Every import of a Python example resolves, and every attribute it reads off an imported
    prompt_jax module exists (the examples are not run: they load models)."""
    tree = ast.parse(code)
    modules = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                modules[alias.asname or alias.name] = importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                try:
                    value = getattr(module, alias.name)
                except AttributeError:
                    value = importlib.import_module(f"{node.module}.{alias.name}")
                modules[alias.asname or alias.name] = value
    for node in ast.walk(tree):
        chain = []
        while isinstance(node, ast.Attribute):
            chain.insert(0, node.attr)
            node = node.value
        if not chain or not isinstance(node, ast.Name) or node.id not in modules:
            continue
        value = modules[node.id]
        if not getattr(value, "__name__", "").startswith("prompt_jax"):
            continue
        for attr in chain:
            if attr in getattr(value, "_LAZY", {}):  # loads TensorFlow on first use
                break
            if not hasattr(value, attr) and hasattr(value, "__path__"):
                importlib.import_module(f"{value.__name__}.{attr}")
            assert hasattr(value, attr), f"{doc}: {node.id}.{'.'.join(chain)}: no {attr}"
            value = getattr(value, attr)
            if not (hasattr(value, "__path__") or isinstance(value, type)
                    or type(value).__name__ == "module"):
                break  # a function or value: what it returns is not checked


def _readme_block():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import readme_block

    return readme_block


def _markers() -> dict[str, Path]:
    found = {}
    for path in DOC_FILES:
        for name in re.findall(r"^<!-- ([\w-]+):start -->$", path.read_text(), re.M):
            assert name not in found, f"block {name} in {_name(found[name])} and {_name(path)}"
            found[name] = path
    return found


def test_every_block_has_a_generator_and_its_file():
    readme_block = _readme_block()
    markers = _markers()
    generators = readme_block.generators()
    assert set(markers) == set(generators), set(markers) ^ set(generators)
    for name, path in markers.items():
        assert readme_block.target(name) == path, (name, path)


@pytest.mark.parametrize("name", sorted(_markers()))
def test_every_generated_block_regenerates_byte_identically(name):
    readme_block = _readme_block()
    block = readme_block.generators()[name]()
    assert block == readme_block.read_block(name), (
        f"block {name} differs from what its stored files give: run "
        "`python benchmarks/readme_block.py` (or the benchmark's --docs) and commit")


def test_the_readme_is_short():
    assert len(README.read_text().splitlines()) <= 250


def _generated_lines(text: str) -> set[int]:
    inside, lines = False, set()
    for i, line in enumerate(text.splitlines()):
        if re.fullmatch(r"<!-- [\w-]+:start -->", line):
            inside = True
        elif re.fullmatch(r"<!-- [\w-]+:end -->", line):
            inside = False
        elif inside:
            lines.add(i)
    return lines


@pytest.mark.parametrize("path", DOC_FILES, ids=_name)
def test_written_lines_are_short(path):
    """Lines people wrote stay under MAX_LINE characters (generated tables may be wider)."""
    text = path.read_text()
    generated = _generated_lines(text)
    long = [i + 1 for i, line in enumerate(text.splitlines())
            if len(line) > MAX_LINE and i not in generated]
    assert not long, f"{_name(path)}: lines over {MAX_LINE} characters: {long}"
