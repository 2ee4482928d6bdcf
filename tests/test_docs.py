"""The docs (README.md and docs/*.md) stay true to the code.

Every relative link resolves (a ``#anchor`` to a heading of the target, by GitHub's slug rule) and every
table renders as one table; every ``duckling …`` command a console/bash block shows parses with the real
``duckling`` parser, every one named inline has real subcommands and options, and docs/cli.md names every
option the command has; every ``airflow …`` command shown has real subcommands and options in Airflow's own
parser; every ``make`` target exists in the Makefile; every ``python -m`` module and ``bench/*.py`` script
exists and takes the options shown; every compose service named exists; every repository path and test file
cited exists; every ``[duckling]`` setting named is one ``registry/settings.py`` reads, and each of those is in the
settings table with its real default; the operator examples build their DAGs.

Fast and engine-free: it reads files and builds argument parsers and two example DAGs; nothing runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SETTINGS_PAGE = ROOT / "docs" / "connections.md"
OPERATORS_PAGE = ROOT / "docs" / "operators.md"
PLACEHOLDER = re.compile(r"[…<>{}|]|^[A-Z][A-Z_]*$|^N_|YYYY")  # a value shown as a placeholder, not a real one


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language tag and body, and the file it is in."""

    path: Path
    lang: str
    body: str


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _split(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The text outside fenced blocks (fences blanked), and the fenced blocks as (language, body)."""
    prose: list[str] = []
    blocks: list[tuple[str, str]] = []
    fence: str | None = None
    lang, body = "", []
    for line in text.split("\n"):
        stripped = line.strip()
        if fence is None and stripped.startswith("```"):
            fence, lang, body = "```", stripped[3:].strip().lower(), []
            prose.append("")
        elif fence is not None and stripped.startswith(fence):
            blocks.append((lang, "\n".join(body)))
            fence = None
            prose.append("")
        elif fence is not None:
            body.append(line)
            prose.append("")
        else:
            prose.append(line)
    assert fence is None, "an unclosed code fence"
    return "\n".join(prose), blocks


def _read(path: Path) -> str:
    """The file as rendered: HTML comments (placeholders for other pages' authors) dropped."""
    return re.sub(r"<!--.*?-->", "", path.read_text(encoding="utf-8"), flags=re.S)


def _prose(path: Path) -> str:
    return _split(_read(path))[0]


def _blocks() -> Iterator[Block]:
    for path in DOC_FILES:
        for lang, body in _split(_read(path))[1]:
            yield Block(path, lang, body)


def _inline_code(path: Path) -> list[str]:
    return re.findall(r"`([^`\n]+)`", _prose(path))


def _shell_commands(block: Block) -> list[str]:
    """The commands of a console block (``$ `` lines) or a bash block (every line), continuations joined."""
    lines = block.body.split("\n")
    if block.lang == "console":
        lines = [line[2:] if line.startswith("$ ") else "" for line in _join_continuations(lines)]
    else:
        lines = _join_continuations(lines)
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _join_continuations(lines: list[str]) -> list[str]:
    """Lines ending in ``\\`` joined with the next, as the shell reads them."""
    out: list[str] = []
    pending = ""
    for line in lines:
        if pending:
            line = pending + " " + line.strip()
            pending = ""
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1].rstrip()
            continue
        out.append(line)
    return out + ([pending] if pending else [])


def _shown_commands() -> list[tuple[Path, list[str]]]:
    """Every command a console/bash/sh block shows, as tokens (shell comments dropped)."""
    shown = []
    for block in _blocks():
        if block.lang in ("console", "bash", "sh", "shell"):
            for command in _shell_commands(block):
                shown.append((block.path, shlex.split(command, comments=True)))
    return shown


# ---------------------------------------------------------------- links and anchors


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, only letters, marks, digits, ``_``,
    spaces and ``-`` kept, spaces turned into ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).lower()
    kept = "".join(ch for ch in text if unicodedata.category(ch)[0] in "LMN" or unicodedata.category(ch) == "Pc"
                   or ch in " -")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, with GitHub's ``-1``, ``-2`` suffixes for repeats."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in _prose(path).split("\n"):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def _links(path: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "`code`", _prose(path))  # a bracket inside code is no link
    return re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)


def test_slug_rule_matches_github() -> None:
    """Spot checks of the slug rule on headings of the kind these docs use."""
    assert github_slug("Settings (`[duckling]`)") == "settings-duckling"
    assert github_slug("P1–P4: worker memory, export overhead") == "p1p4-worker-memory-export-overhead"
    assert github_slug("Capacity model: 1,000 teams × 3 years") == "capacity-model-1000-teams--3-years"
    assert github_slug("How ClickHouse writes to a duckling's bucket") == "how-clickhouse-writes-to-a-ducklings-bucket"
    assert github_slug("The `duckling_exports` pool") == "the-duckling_exports-pool"


def link_problems(path: Path) -> tuple[int, list[str]]:
    """Relative links of one file checked (how many), and those whose file or heading does not exist."""
    problems = []
    checked = 0
    for target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        checked += 1
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{path.name}: link {target!r}: no file {file_part!r}")
        elif anchor:
            if resolved.suffix != ".md":
                problems.append(f"{path.name}: link {target!r}: an anchor into a non-markdown file")
            elif anchor not in anchors(resolved):
                problems.append(f"{path.name}: link {target!r}: no heading with anchor #{anchor} in {resolved.name}")
    return checked, problems


def _cells(row: str) -> int:
    """Cells of a table row as GitHub splits it: on every ``|`` not escaped, code spans included."""
    return len(re.split(r"(?<!\\)\|", row.strip().strip("|")))


def table_problems(path: Path) -> list[str]:
    """Tables that would not render as one table: a run of ``|`` rows without its header and delimiter row
    (e.g. rows cut off by a blank line), or a row with another number of cells than its header."""
    problems = []
    lines = _prose(path).split("\n")
    i = 0
    while i < len(lines):
        if not lines[i].startswith("|"):
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j].startswith("|"):
            j += 1
        rows = lines[i:j]
        width = _cells(rows[0])
        if len(rows) < 2 or not re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", rows[1].strip()):
            problems.append(f"{path.name}:{i + 1}: table rows without a header row and delimiter row")
        problems += [f"{path.name}:{i + k + 1}: {_cells(row)} cells, the header has {width}"
                     for k, row in enumerate(rows) if _cells(row) != width]
        i = j
    return problems


def test_every_relative_link_and_anchor_resolves() -> None:
    results = [link_problems(path) for path in DOC_FILES]
    problems = [p for _, found in results for p in found]
    assert not problems, "\n".join(problems)
    assert sum(checked for checked, _ in results) > 50  # cross-linked: none found would mean the pattern broke


def test_every_table_renders_as_one_table() -> None:
    problems = [p for path in DOC_FILES for p in table_problems(path)]
    assert not problems, "\n".join(problems)


def test_the_link_and_table_checks_catch_mistakes(tmp_path: Path) -> None:
    """The checks themselves: a missing file, a missing heading and a table cut by a blank line are found;
    a link into an existing heading (repeated headings get GitHub's -1 suffix) and an external link are not."""
    (tmp_path / "other.md").write_text("# Other\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[a](other.md#twice-1) [b](other.md#thrice) [c](missing.md) [d](https://x.invalid/y)\n"
                    "[e](#page) `[f](nowhere.md)`\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\n| 3 | 4 |\n| 5 |\n")
    checked, problems = link_problems(page)
    assert checked == 4
    assert problems == ["page.md: link 'other.md#thrice': no heading with anchor #thrice in other.md",
                        "page.md: link 'missing.md': no file 'missing.md'"]
    assert table_problems(page) == ["page.md:10: table rows without a header row and delimiter row",
                                    "page.md:11: 1 cells, the header has 2"]


def test_every_docs_page_is_in_the_table_of_contents() -> None:
    index = ROOT / "docs" / "index.md"
    listed = {target.partition("#")[0] for target in _links(index)}
    pages = {path.name for path in (ROOT / "docs").glob("*.md")} - {"index.md"}
    assert pages <= listed, f"docs pages missing from docs/index.md: {sorted(pages - listed)}"
    readme_links = {t.partition("#")[0] for t in _links(ROOT / "README.md")}
    assert "docs/index.md" in readme_links


# ---------------------------------------------------------------- commands


def _duckling_parser() -> argparse.ArgumentParser:
    from airflow_provider_duckling.cli.main import build_parser

    return build_parser()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def shape_problems(parser: argparse.ArgumentParser, tokens: list[str]) -> list[str]:
    """Check a command whose values may be placeholders: each subcommand exists, each option exists on the
    (sub)command it follows or on one of its parents, and a value given for an option with choices is one
    of them (``a|b`` alternatives each)."""
    problems: list[str] = []
    chain = [parser]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        current = chain[-1]
        if token.startswith("-") and token != "-":
            name, has_value, inline = token.partition("=")
            action = next((p._option_string_actions[name] for p in reversed(chain) if name in p._option_string_actions),
                          None)
            if action is None:
                problems.append(f"{current.prog}: no option {name}")
            elif action.nargs != 0 and not has_value and i + 1 < len(tokens):
                value = tokens[i + 1]
                alternatives = value.split("|")
                if action.choices and ("|" in value or not PLACEHOLDER.search(value)):
                    problems += [f"{current.prog} {name}: {v!r} is not one of {sorted(action.choices)}"
                                 for v in alternatives if v not in action.choices]
                i += 1
            elif has_value and action is not None and action.choices and inline not in action.choices:
                problems.append(f"{current.prog} {name}: {inline!r} is not one of {sorted(action.choices)}")
        else:
            subs = _subparsers(current)
            if subs and token not in subs:
                problems.append(f"{current.prog}: no subcommand {token!r} (known: {', '.join(sorted(subs))})")
                break
            if subs:
                chain.append(subs[token])
        i += 1
    return problems


def parse_problem(parser: argparse.ArgumentParser, arguments: list[str]) -> str | None:
    """Why the real parser refuses these arguments as typed (its own message), or None if they reach a
    command's handler. Parsing runs nothing."""
    error = io.StringIO()
    try:
        with contextlib.redirect_stderr(error):
            args = parser.parse_args(arguments)
    except SystemExit:
        return (error.getvalue().strip().splitlines() or ["refused"])[-1]
    return None if getattr(args, "handler", None) else "names a command group, not a command"


def test_every_duckling_command_in_a_block_parses_with_the_real_cli() -> None:
    """Blocks show real invocations: each must parse exactly as typed, reaching a subcommand's handler."""
    parser = _duckling_parser()
    shown = [(path, tokens) for path, tokens in _shown_commands() if tokens and tokens[0] == "duckling"]
    problems = [f"{_rel(path)}: {shlex.join(tokens)}: {problem}" for path, tokens in shown
                if (problem := parse_problem(parser, tokens[1:]))]
    assert not problems, "\n".join(problems)
    assert len(shown) >= 8


def test_the_command_checks_catch_mistakes() -> None:
    """The checks themselves, on commands that are wrong in each way they can be."""
    parser = _duckling_parser()
    assert parse_problem(parser, ["run", "61_2024-03-09", "--no-cleanup"]) is None
    assert "invalid choice" in parse_problem(parser, ["catalog", "remove", "61"])
    assert "unrecognized arguments: --bogus" in parse_problem(parser, ["status", "--bogus"])
    assert parse_problem(parser, ["catalog"]) == "names a command group, not a command"
    assert shape_problems(parser, ["-v", "catalog", "validate", "N"]) == []
    assert shape_problems(parser, ["run", "…", "--dry-run"]) == []
    assert shape_problems(parser, ["catalog", "add", "--export-identity", "assumed_role|clickhouse"]) == []
    assert shape_problems(parser, ["catalog", "remove", "TEAM"]) == [
        "duckling catalog: no subcommand 'remove' (known: add, list, pause, resume, validate)"]
    assert shape_problems(parser, ["setup", "--export-slot", "N"]) == ["duckling setup: no option --export-slot"]
    assert shape_problems(parser, ["catalog", "add", "--export-identity", "assumed_role|iam"]) == [
        "duckling catalog add --export-identity: 'iam' is not one of ['assumed_role', 'clickhouse']"]


def _all_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of a parser and its subcommands, except help and hidden ones."""
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _all_options(sub)
        elif action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction):
            found.update(action.option_strings)
    return found


def test_the_cli_page_names_every_option_and_only_real_ones() -> None:
    """docs/cli.md names each option of the ``duckling`` command, and none that does not exist."""
    real = _all_options(_duckling_parser())
    named = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", _read(ROOT / "docs" / "cli.md"))) - {"-h", "--help"}
    assert named - real == set(), "options docs/cli.md names that the parser does not have"
    assert real - named == set(), "options of the duckling command that docs/cli.md does not name"


def test_every_bench_option_named_exists() -> None:
    """An option the benchmarks page names inline (`--quick`, `--rows 5000000 --repeat 5`) is a bench script's."""
    sources = "\n".join(path.read_text() for path in (ROOT / "bench").glob("*.py"))
    page = ROOT / "docs" / "benchmarks.md"
    named = {o for code in _inline_code(page) if code.startswith("--") for o in _options(code.split())}
    assert named, "the benchmarks page names no option: the pattern broke"
    assert {o for o in named if f'"{o}"' not in sources} == set()


def test_every_duckling_command_named_inline_exists() -> None:
    """Inline mentions (`duckling run N_YYYY-MM-DD`, `duckling setup --export-slots N`) may use placeholders for
    values; their subcommands and options must still be real."""
    parser = _duckling_parser()
    problems = []
    named = 0
    for path in DOC_FILES:
        for code in _inline_code(path):
            if not re.match(r"^duckling(\s|$)", code):
                continue
            named += 1
            tokens = code.replace("[", " ").replace("]", " ").split()[1:]
            problems += [f"{_rel(path)}: `{code}`: {p}" for p in shape_problems(parser, tokens)]
    assert not problems, "\n".join(problems)
    assert named >= 10


def test_every_airflow_command_shown_exists_in_airflows_cli() -> None:
    """`airflow backfill create …`, `airflow tasks clear …`, `airflow db clean …`: Airflow's own parser has
    these subcommands and options (values are not parsed: some are placeholders or shell substitutions)."""
    from airflow.cli.cli_parser import get_parser

    parser = get_parser()
    problems = []
    checked = 0
    sources = [(path, tokens) for path, tokens in _shown_commands()]
    sources += [(path, code.split()) for path in DOC_FILES for code in _inline_code(path)]
    for path, tokens in sources:
        if len(tokens) < 2 or tokens[0] != "airflow":
            continue
        checked += 1
        problems += [f"{_rel(path)}: {' '.join(tokens)}: {p}" for p in shape_problems(parser, tokens[1:])]
    assert not problems, "\n".join(problems)
    assert checked >= 5


def _make_targets() -> set[str]:
    targets: set[str] = set()
    for line in (ROOT / "Makefile").read_text().split("\n"):
        match = re.match(r"^([A-Za-z0-9_][A-Za-z0-9_.-]*(?:\s+[A-Za-z0-9_][A-Za-z0-9_.-]*)*)\s*:(?!=)", line)
        if match:
            targets.update(match.group(1).split())
    return targets


def test_every_make_target_shown_exists() -> None:
    targets = _make_targets()
    shown = [(path, tokens[1:]) for path, tokens in _shown_commands() if tokens and tokens[0] == "make"]
    shown += [(path, code.split()[1:]) for path in DOC_FILES for code in _inline_code(path) if code.startswith("make ")]
    problems = [f"{_rel(path)}: make {target}: no such target in the Makefile"
                for path, names in shown for target in names if "=" not in target and not target.startswith("-")
                and target not in targets]
    assert not problems, "\n".join(problems)
    assert {"demo", "test"} <= {t for _, names in shown for t in names}


def _python_invocations() -> list[tuple[Path, list[str]]]:
    found = [(path, tokens) for path, tokens in _shown_commands()]
    found += [(path, shlex.split(code.replace("…", ""))) for path in DOC_FILES for code in _inline_code(path)
              if re.match(r"^(\.venv/bin/)?python3? (-m [\w.]+|\S+\.py)", code)]
    return [(path, tokens[1:]) for path, tokens in found
            if tokens and re.fullmatch(r"(\.venv/bin/)?python3?", tokens[0])]


def _options(tokens: list[str]) -> list[str]:
    return [t.partition("=")[0] for t in tokens if t.startswith("--")]


def test_every_python_module_and_bench_script_shown_exists_with_its_options() -> None:
    problems = []
    seen = 0
    for path, args in _python_invocations():
        seen += 1
        if args[:1] == ["-m"]:
            module = args[1]
            spec = importlib.util.find_spec(module)
            if spec is None:
                problems.append(f"{_rel(path)}: python -m {module}: no such module")
            elif module.startswith("airflow_provider_duckling") and spec.origin:
                source = Path(spec.origin).read_text()
                problems += [f"{_rel(path)}: python -m {module} {o}: not an option of the module"
                             for o in _options(args[2:]) if f'"{o}"' not in source]
        elif args and args[0].endswith(".py"):
            script = ROOT / args[0]
            if not script.is_file():
                problems.append(f"{_rel(path)}: {args[0]}: no such script")
                continue
            source = script.read_text()
            problems += [f"{_rel(path)}: {args[0]} {o}: not an option of the script"
                         for o in _options(args[1:]) if f'"{o}"' not in source]
        else:
            problems.append(f"{_rel(path)}: python {' '.join(args)}: neither -m MODULE nor a script")
    assert not problems, "\n".join(problems)
    assert seen >= 10


def test_every_bench_script_is_shown() -> None:
    """The benchmarks page gives the command of every bench script."""
    shown = {args[0] for _, args in _python_invocations() if args and args[0].startswith("bench/")}
    scripts = {_rel(p) for p in (ROOT / "bench").glob("p*.py")}
    assert scripts <= shown, f"bench scripts with no command in the docs: {sorted(scripts - shown)}"


def test_every_compose_service_named_exists() -> None:
    """`docker compose exec|run SERVICE`, `--scale SERVICE=N` and the services table name services of
    docker-compose.yaml, and the table lists every one of them."""
    import yaml

    services = set(yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"])
    page = ROOT / "docs" / "deployment.md"
    commands = [tokens for path, tokens in _shown_commands() if tokens[:2] == ["docker", "compose"]]
    commands += [code.split() for path in DOC_FILES for code in _inline_code(path) if code.startswith("docker compose ")]
    named: set[str] = set()
    for tokens in commands:
        rest = [t for t in tokens[3:] if not t.startswith("-")]
        if tokens[2] in ("exec", "run") and rest:
            named.add(rest[0])
        named |= {t.partition("=")[0] for t, flag in zip(tokens[1:], tokens[:-1], strict=True) if flag == "--scale"}
    text = _prose(page)
    table = text[text.index("| service |"):].split("\n\n")[0]
    listed = {name for row in re.findall(r"^\|([^|]+)\|", table, flags=re.M)[2:] for name in re.findall(r"`([\w-]+)`", row)}
    assert named and named <= services, f"services the docs name that compose does not have: {named - services}"
    assert listed == services, f"services table vs docker-compose.yaml: {listed ^ services}"


# ---------------------------------------------------------------- files cited


def test_every_test_file_and_repository_path_cited_exists() -> None:
    problems = []
    cited = 0
    for path in DOC_FILES:
        text = _read(path)
        for match in re.finditer(r"(?<![\w/.-])((?:airflow_provider_duckling|dags|docker|docs|tests|bench|\.ci)/"
                                 r"[\w./-]*)", text):
            target = match.group(1).rstrip(".,;:")
            if re.search(r"\{|\}|…", target):
                continue
            cited += 1
            if not (ROOT / target).exists():
                problems.append(f"{_rel(path)}: {target}: no such file or directory")
        for code in _inline_code(path):
            if re.fullmatch(r"[\w]+\.py", code) and not any(ROOT.glob(f"**/{code}")):
                problems.append(f"{_rel(path)}: `{code}`: no such file in the repository")
    assert not problems, "\n".join(problems)
    assert cited >= 60


def test_every_module_in_the_repository_layout_exists() -> None:
    """The layout block of docs/architecture.md names files and folders under airflow_provider_duckling/, each
    of which exists, and every module of the package is there: by its own name or by its folder's."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    layout = text[text.index("## Repository layout"):]
    body = _split(layout)[1][0][1]
    problems = []
    named: set[str] = set()
    for line in body.split("\n"):
        if not line.startswith("  "):
            continue
        names = re.split(r"\s{2,}", line.strip())[0]
        for name in re.split(r"\s*[·,]\s*", names):
            if name and not (ROOT / "airflow_provider_duckling" / name).exists():
                problems.append(f"airflow_provider_duckling/{name}")
            named.add(name)
    assert not problems, f"the repository layout names what does not exist: {problems}"
    package = ROOT / "airflow_provider_duckling"
    modules = [p.relative_to(package).as_posix() for p in package.rglob("*.py") if p.name != "__init__.py"]
    missing = [m for m in modules if m not in named and m.split("/")[0] + "/" not in named]
    assert missing == [], f"modules the repository layout does not name (nor their folder): {missing}"
    assert len(modules) >= 50


# ---------------------------------------------------------------- settings


def real_settings() -> dict[str, str | None]:
    """Every ``[duckling]`` setting settings.py reads, with its default as written there (None: computed)."""
    source = (ROOT / "airflow_provider_duckling" / "registry" / "settings.py").read_text()
    found: dict[str, str | None] = {}
    for name, default in re.findall(r'_int\("(\w+)",\s*([0-9_]+)', source):
        found[name] = str(int(default))
    for name, default in re.findall(r'_get\("(\w+)"(?:,\s*"([^"]*)")?\)', source):
        found.setdefault(name, default or None)
    assert len(found) >= 20
    return found


def _settings_table() -> dict[str, str]:
    """Setting name → its default cell, from the table under "## Settings" of the settings page."""
    text = _prose(SETTINGS_PAGE)
    section = text[text.index("## Settings"):]
    table: dict[str, str] = {}
    for row in re.findall(r"^\|\s*(`[^|]+)\|([^|]*)\|", section, flags=re.M):
        names = re.findall(r"`(\w+)`", row[0])
        defaults = [d.strip() for d in row[1].split(" / ")]
        for i, name in enumerate(names):
            table[name] = defaults[i] if len(defaults) == len(names) else row[1].strip()
    return table


def test_every_duckling_setting_named_in_the_docs_is_real() -> None:
    real = real_settings()
    problems = []
    for path in DOC_FILES:
        text = _read(path)
        named = re.findall(r"\[duckling\]\s+([a-z]\w*)\b(?!\s+section)", text)
        named += [n.lower() for n in re.findall(r"AIRFLOW__DUCKLING__(\w+)", text)]
        problems += [f"{_rel(path)}: [duckling] {name} is not a setting" for name in named if name not in real]
    problems += [f"settings table: {name} is not a setting" for name in _settings_table() if name not in real]
    assert not problems, "\n".join(problems)


def test_every_setting_is_documented_with_its_default() -> None:
    table = _settings_table()
    problems = []
    for name, default in real_settings().items():
        if name not in table:
            problems.append(f"[duckling] {name} is not in the settings table of {_rel(SETTINGS_PAGE)}")
        elif default and default != table[name].strip("`").replace(",", ""):
            problems.append(f"[duckling] {name}: default {table[name]!r} in the docs, {default!r} in settings.py")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- operator examples


def test_the_operator_examples_build_their_dags() -> None:
    """Each Python example of the operators page builds: real imports, real parameter names (an unknown one
    fails the operator's constructor), export upstream of register. Nothing is run."""
    examples = [block for block in _blocks() if block.path == OPERATORS_PAGE and block.lang == "python"]
    assert len(examples) >= 2
    for block in examples:
        namespace: dict[str, object] = {}
        exec(compile(block.body, f"{_rel(OPERATORS_PAGE)} example", "exec"), namespace)  # noqa: S102 - our own docs
        export, register = namespace["export"], namespace["register"]
        assert type(export).__name__ == "ClickHouseToDucklingS3Operator"
        assert type(register).__name__ == "DuckLakeRegisterOperator"
        assert register.dag is export.dag and set(export.dag.task_dict) == {"export", "register"}
        assert export.downstream_task_ids == {"register"}
        assert register.export_task_id == "export"
