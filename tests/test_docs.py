"""The documentation as a reader meets it: README.md stays a front page, every relative link in it and in docs/
resolves (files, and #anchors to headings), every docs page is linked from the README, and every ``--flag`` written
next to one of our scripts exists in that script's parser."""
import argparse
import glob
import importlib
import os
import re
from typing import Dict, Iterator, List, Optional, Set, Tuple
from unittest import mock

import pytest

from tests.conftest import ROOT

README = os.path.join(ROOT, "README.md")
PAGES = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
DOCUMENTS = [README] + PAGES
FRONT_PAGE_LINES = 250

# The scripts whose flags are checked, by the path a command names them with.
SCRIPTS = ("main.py", "predict.py", "tools/export_onnx.py", "tools/import_annotations.py", "tools/model_info.py")
# Flags of other programs that the pages mention: torchrun's, TensorBoard's, the benchmarks' and other tools'.
OTHER_PROGRAMS_FLAGS = {
    "--nproc_per_node": "torchrun", "--nnodes": "torchrun", "--rdzv_backend": "torchrun", "--rdzv_endpoint": "torchrun",
    "--rdzv_id": "torchrun", "--node_rank": "torchrun", "--master_addr": "torchrun", "--master_port": "torchrun",
    "--shutdown_timeout": "torchrun", "--logdir": "tensorboard", "--original": "bench/*.py", "--budget": "bench/gpu.py",
    "--tiny": "bench/gpu.py", "--root": "tools/make_*_dataset.py", "--format": "tools/convert_weights.py",
    "--dist": "pytest (pytest-xdist)", "--no-loadscope-reorder": "pytest (pytest-xdist)", "--durations": "pytest",
}

FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
FENCE = re.compile(r"^\s*(```|~~~)\s*(\w*)")
SHELL_FENCES = {"bash", "sh", "shell", "console"}
CODE_SPAN = re.compile(r"`([^`]+)`")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _parser_of(script: str) -> argparse.ArgumentParser:
    """The script's parser, built by its get_argparser, else taken from the parse_args function that builds it."""
    module = importlib.import_module(script[:-len(".py")].replace("/", "."))
    if hasattr(module, "get_argparser"):
        return module.get_argparser()

    class Built(Exception):
        pass

    def capture(parser, *args, **kwargs):
        raise Built(parser)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture):
        with pytest.raises(Built) as built:
            module.parse_args([])
    return built.value.args[0]


@pytest.fixture(scope="module")
def flags_of() -> Dict[str, Set[str]]:
    return {script: {option for option in _parser_of(script)._option_string_actions if option.startswith("--")}
            for script in SCRIPTS}


def _read(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def _blocks(lines: List[str]) -> Iterator[Tuple[str, int, List[str]]]:
    """("shell" | "code" | "prose", first line number, lines): shell commands and other code blocks by fence,
    prose by paragraph (consecutive non-blank lines, a table included)."""
    kind, start, block = "prose", 1, []
    for number, line in enumerate(lines, 1):
        fence = FENCE.match(line)
        if fence and kind == "prose":
            if block:
                yield kind, start, block
            kind, start, block = ("shell" if fence.group(2) in SHELL_FENCES else "code"), number + 1, []
        elif fence:
            yield kind, start, block
            kind, start, block = "prose", number + 1, []
        elif kind == "prose" and not line.strip():
            if block:
                yield kind, start, block
            start, block = number + 1, []
        else:
            if not block:
                start = number
            block.append(line)
    if block:
        yield kind, start, block


def _script_named(token: str) -> Optional[str]:
    token = token.strip("\"'`()[],;:")
    token = token[2:] if token.startswith("./") else token
    return token if token in SCRIPTS else None


def _command_flags(command: str) -> Iterator[Tuple[str, str]]:
    """(script, flag) for each flag after one of our scripts in a shell command (flags before it are the
    launcher's, e.g. torchrun's); commands of other programs yield nothing."""
    for part in re.split(r"&&|;", command):
        tokens = part.split()
        for index, token in enumerate(tokens):
            script = _script_named(token)
            if script:
                for flag in FLAG.findall(" ".join(tokens[index + 1:])):
                    yield script, flag
                break
            if token.endswith(".py"):  # another script of ours (bench/, tools/...) or a program's: not checked
                break


def _shell_commands(block: List[str]) -> Iterator[str]:
    command = ""
    for line in block:
        line = re.sub(r"(^|\s)#.*$", "", line)
        command += " " + line.rstrip()
        if command.endswith("\\"):
            command = command[:-1]
            continue
        yield command
        command = ""
    if command:
        yield command


def _span_problems(flags_of: Dict[str, Set[str]], text: str) -> Iterator[str]:
    """A command in a code span (``predict.py --tta``) is checked as a shell command."""
    for span in CODE_SPAN.findall(text):
        for script, flag in _command_flags(span):
            if flag not in flags_of[script]:
                yield f"{script} has no {flag} (in `{span}`)"


def _is_command(span: str) -> bool:
    """``main.py --x``, ``python bench/onnx.py --y``: a script's command line, whose flags are that script's."""
    tokens = [token for token in span.split() if token not in ("python", "python3")]
    return bool(tokens) and tokens[0].endswith(".py")


def _line_problems(flags_of: Dict[str, Set[str]], text: str) -> Iterator[str]:
    """A flag on a line, outside a command in a code span (checked as one), must belong to one of our scripts that
    the line names (to any of them when it names none), or be another program's."""
    named = {script for script in SCRIPTS if re.search(r"(?<![\w/.-])" + re.escape(script) + r"\b", text)}
    allowed = set().union(*(flags_of[script] for script in (named or SCRIPTS)))
    outside_commands = CODE_SPAN.sub(lambda span: " " if _is_command(span.group(1)) else span.group(0), text)
    for flag in FLAG.findall(outside_commands):
        if flag not in allowed and flag not in OTHER_PROGRAMS_FLAGS:
            yield f"{flag} is not an option of {', '.join(sorted(named or SCRIPTS))}"


def _flag_problems(flags_of: Dict[str, Set[str]], path: str) -> Iterator[str]:
    where = os.path.relpath(path, ROOT)
    for kind, start, block in _blocks(_read(path)):
        if kind == "shell":
            for command in _shell_commands(block):
                for script, flag in _command_flags(command):
                    if flag not in flags_of[script]:
                        yield f"{where}:{start}: {script} has no {flag}: {command.strip()}"
        else:
            if kind == "prose":  # a code span may run over two lines
                for problem in _span_problems(flags_of, " ".join(block)):
                    yield f"{where}:{start}: {problem}"
            for offset, line in enumerate(block):
                for problem in _line_problems(flags_of, line):
                    yield f"{where}:{start + offset}: {problem}"


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (``_`` and ``-`` kept), spaces as -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: str) -> Set[str]:
    anchors, seen = set(), {}
    for kind, _, block in _blocks(_read(path)):
        for line in block if kind == "prose" else ():
            match = HEADING.match(line)
            if match:
                slug = _slug(match.group(2))
                anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
                seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(path: str) -> Iterator[Tuple[int, str]]:
    for kind, start, block in _blocks(_read(path)):
        if kind == "prose":
            for offset, line in enumerate(block):
                for target in LINK.findall(CODE_SPAN.sub("", line)):
                    yield start + offset, target


def test_the_readme_is_a_front_page():
    lines = _read(README)
    assert len(lines) <= FRONT_PAGE_LINES, f"README.md has {len(lines)} lines; move details to docs/"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {os.path.normpath(os.path.join(ROOT, target.split("#")[0])) for _, target in _links(README)}
    assert PAGES
    assert [os.path.relpath(page, ROOT) for page in PAGES if page not in linked] == []


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: os.path.relpath(path, ROOT))
def test_every_relative_link_resolves(path):
    broken = []
    for line, target in _links(path):
        if re.match(r"^[a-z][a-z+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(linked):
            broken.append(f"line {line}: {target}: no such file")
        elif anchor and (not linked.endswith(".md") or anchor not in _anchors(linked)):
            broken.append(f"line {line}: {target}: no heading #{anchor} in {os.path.relpath(linked, ROOT)}")
    assert broken == []


def test_every_flag_written_exists_in_its_script(flags_of):
    problems = [problem for path in DOCUMENTS for problem in _flag_problems(flags_of, path)]
    assert problems == []


def test_the_checks_catch_a_wrong_flag_and_a_broken_link(flags_of, tmp_path):
    """The checks themselves: a flag of the wrong script, a launcher's flag, a broken anchor."""
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n```bash\ntorchrun --nproc_per_node 2 main.py --tta --lr 0.1\n"
                    "python predict.py --input x \\\n    --lr 0.1\n```\n\nUse `predict.py --slide` or `--nothing`.\n\n"
                    "[here](#title) [there](#nowhere) [file](missing.md)\n")
    problems = list(_flag_problems(flags_of, str(page)))
    assert [p.split(": ", 1)[1] for p in problems] == [
        "main.py has no --tta: torchrun --nproc_per_node 2 main.py --tta --lr 0.1",
        "predict.py has no --lr: python predict.py --input x      --lr 0.1",
        "--nothing is not an option of predict.py"]
    assert _anchors(str(page)) == {"title"}
    assert [target for _, target in _links(str(page))] == ["#title", "#nowhere", "missing.md"]
    assert _slug("Training and evaluation (`main.py`)") == "training-and-evaluation-mainpy"
    assert _slug("Very large images (`--max_image_pixels`)") == "very-large-images---max_image_pixels"
