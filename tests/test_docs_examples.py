"""Every example of README.md (and docs/*.md) runs, as written.

Each ```sh/```bash/```shell block runs in its own copy of the demo workspace
(what `make demo` builds, with `.env` pointing at a capture SMTP server on
loopback and a webhook secret set), from that folder, with the venv's
`listkit` first on PATH: in this process through click's CliRunner when it
is only `listkit` and `cd` commands, else as one bash script (`set -u`, so
a variable the shell never set fails). A ```console block runs each `$ `
command the same way and compares what it prints with the output shown,
figures masked (the shape of the table, not its numbers). A ```toml block is
parsed; when its first comment names a workspace file (`# campaigns/x.toml`)
it is written into a copy of the workspace and checked with the project's
own checker (`campaigns check`, `offers check`), and one that says
"(shipped)" must agree with the shipped file.

Files the examples read that the demo does not make (a subscriber export,
a list of bounced addresses, a generic sales CSV) are in tests/fixtures/docs/
and copied into each example's workspace. The examples name real lists,
offers and files of that workspace rather than placeholders; `https://HOST`
is the one kept, and only a block marked `serve` may use it. What cannot run
here is marked in the Markdown (see tests/docs_examples.py) and counted by
`test_every_example_is_run_or_marked_not_run`.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import traceback
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from listkit.cli import cli
from listkit.demo import run_demo
from tests import smtp_server, web_server
from tests.docs_examples import (
    ROOT,
    RUN,
    Block,
    blocks,
    commands,
    docs,
    in_process,
    toml_target,
)

BIN = Path(sys.executable).parent
FIXTURES = Path(__file__).parent / "fixtures" / "docs"

# Examples that fail because of a bug another change fixes: strict, so the
# entry must go when the fix lands. Each key is a piece of the block's text.
KNOWN_FAILURES: dict[str, str] = {}

ALL_BLOCKS = [b for path in docs() for b in blocks(path)]
RUNNABLE = [b for b in ALL_BLOCKS if b.lang in RUN]


def _param(block: Block):
    marks = [
        pytest.mark.xfail(strict=True, reason=reason)
        for key, reason in KNOWN_FAILURES.items()
        if key in block.body
    ]
    return pytest.param(block, id=f"{block.where}:{block.lang}:{block.label}", marks=marks)


@pytest.fixture(scope="session")
def capture_server():
    controller, _handler = smtp_server.start()
    yield controller
    controller.stop()


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory, capture_server) -> Path:
    """The demo's workspace, built once: settings point at the capture server."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("LISTKIT_"):
                mp.delenv(name)
        built = run_demo(quiet=True)
    root = tmp_path_factory.mktemp("docs") / "shop"
    shutil.copytree(built, root)
    shutil.rmtree(built.parent)
    env = (root / ".env").read_text()
    env = re.sub(
        r"(?m)^LISTKIT_SMTP_URL=.*$",
        f"LISTKIT_SMTP_URL=smtp://127.0.0.1:{capture_server.port}",
        env,
    )
    (root / ".env").write_text(env + "LISTKIT_WEBHOOK_SECRET=docs-example-secret\n")
    for sample in FIXTURES.iterdir():
        if sample.name != "README.md":
            shutil.copy(sample, root / sample.name)
    return root


@pytest.fixture
def shop(demo_workspace: Path, tmp_path: Path) -> Path:
    """A copy of the demo workspace of one's own, to change freely."""
    root = tmp_path / "shop"
    shutil.copytree(demo_workspace, root)
    return root


COMMAND_TIMEOUT = 120  # seconds: a command that waits for ever (a server) fails, not hangs


def _timed_out(signum, frame):
    raise TimeoutError(f"still running after {COMMAND_TIMEOUT} s: mark it not run if it serves")


def _invoke(argv: list[str], cwd: Path, monkeypatch) -> tuple[int, str]:
    monkeypatch.chdir(cwd)
    previous = signal.signal(signal.SIGALRM, _timed_out)
    signal.alarm(COMMAND_TIMEOUT)
    try:
        result = CliRunner().invoke(cli, argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    output = result.output
    if result.exception and not isinstance(result.exception, SystemExit):
        output += "".join(traceback.format_exception(result.exception))
    return result.exit_code, output


def _run_in_process(block: Block, shop: Path, monkeypatch) -> list[tuple[str, int, str]]:
    """Run every command of the block in this process; (command, exit, output) each."""
    cwd, ran = shop, []
    for command in commands(block):
        if command.not_run:
            continue
        for form in command.forms():
            argv = in_process(form)
            if argv[0] == "cd":
                cwd = (cwd / argv[1]).resolve()
                continue
            code, output = _invoke(argv[1:], cwd, monkeypatch)
            ran.append((f"{block.path.name}:{command.line}: {form}", code, output))
            if code != 0:
                return ran
    return ran


def _bash_script(block: Block, host: str | None) -> str:
    lines = ["set -u -o pipefail"]
    for command in commands(block):
        if command.not_run:
            continue
        for form in command.forms():
            if host:
                form = form.replace("https://HOST", host)
            where = f"{block.path.name}:{command.line}"
            lines.append(f"printf '%s\\n' {_sh_quote('$ ' + form)}")
            lines.append(f"{form} || {{ echo {_sh_quote(where + ': exit')} $? >&2; exit 1; }}")
    return "\n".join(lines) + "\n"


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _run_bash(block: Block, shop: Path, host: str | None) -> tuple[int, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(
        ["bash", "-c", _bash_script(block, host)],
        cwd=shop,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def _needs_shell(block: Block) -> bool:
    return any(
        in_process(form) is None
        for command in commands(block)
        if not command.not_run
        for form in command.forms()
    )


class _Serve:
    """A real `listkit serve` on loopback for one block, stopped after it; its log
    (one line per request: method, route, status) says how each request was answered."""

    def __init__(self, shop: Path):
        self.port = smtp_server.free_port()
        self.log = shop.parent / "serve.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(BIN / "listkit"), "serve", "--port", str(self.port)],
                cwd=shop,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        web_server.wait_healthy(self.process, self.url, self.log)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def refused(self) -> list[str]:
        """The requests, other than the health checks, answered with an error."""
        return [
            m[0]
            for m in REQUEST.finditer(self.output())
            if int(m["status"]) >= 400 and m["route"] != "/healthz"
        ]

    def stop(self) -> None:
        web_server.stop(self.process)


REQUEST = re.compile(r"\b(?:GET|HEAD|POST|PUT|PATCH|DELETE) (?P<route>\S+) (?P<status>\d{3})\b")
FIGURE = re.compile(r"(?<![\w.])(?:[A-Z]{3} )?[-+]?\d[\d,]*(?:\.\d+)?%?|(?<!\S)-(?!\S)")


def shape(text: str) -> list[str]:
    """Output lines with every figure (count, amount, rate, `-` for none) as '#' and
    runs of spaces as one: what a table says, whatever its numbers."""
    return [" ".join(FIGURE.sub("#", line).split()) for line in text.splitlines() if line.strip()]


def _toml_check(block: Block, shop: Path, monkeypatch) -> None:
    try:
        parsed = tomllib.loads(block.body)
    except tomllib.TOMLDecodeError as e:
        pytest.fail(f"{block.where}: not valid TOML: {e}")
    target = toml_target(block)
    if target is None:
        return
    path, shipped = target
    if shipped:
        original = tomllib.loads((ROOT / path).read_text())
        differs = {k: v for k, v in parsed.items() if original.get(k) != v}
        assert not differs, f"{block.where}: the shipped {path} says otherwise about {differs}"
    (shop / path).parent.mkdir(parents=True, exist_ok=True)
    (shop / path).write_text(block.body)
    parts = Path(path).parts
    if parts[0] == "campaigns":
        argv = ["campaigns", "check", Path(path).stem]
    elif parts[0] == "offers" and parts[-1] == "offer.toml":
        argv = ["offers", "check", parts[1]]
    elif parts[0] == "sequences":
        argv = ["sequences", "check", Path(path).stem]
    else:
        pytest.fail(f"{block.where}: no checker for {path}")
    code, output = _invoke(argv, shop, monkeypatch)
    assert code == 0, f"{block.where}: listkit {' '.join(argv)} exited {code}:\n{output}"


@pytest.mark.parametrize("block", [_param(b) for b in RUNNABLE])
def test_the_example_runs_as_written(block: Block, shop: Path, monkeypatch) -> None:
    if block.not_run:
        pytest.skip(f"{block.where}: marked not run: {block.not_run}")
    if block.lang == "toml":
        _toml_check(block, shop, monkeypatch)
        return
    if block.lang == "console":
        _console_check(block, shop, monkeypatch)
        return
    _write_new_toml_examples(shop)
    server = _Serve(shop) if block.serve else None
    try:
        if server or _needs_shell(block):
            code, output = _run_bash(block, shop, server.url if server else None)
            assert code == 0, f"{block.where}: the block failed:\n{output}"
            _assert_no_secret(shop, block.where, output)
            if server:
                server.stop()
                refused = server.refused()
                assert not refused, f"{block.where}: listkit serve refused {refused}:\n{output}"
        else:
            for where, code, output in _run_in_process(block, shop, monkeypatch):
                assert code == 0, f"{where}\nexited {code}:\n{output}"
                _assert_no_secret(shop, where, output)
    finally:
        if server:
            server.stop()


SECRET_SETTING = re.compile(r"(?m)^(LISTKIT_\w*(?:SECRET|AUTH|SIGNING_KEY)\w*)=(.{8,})$")


def _assert_no_secret(shop: Path, where: str, output: str) -> None:
    """No example prints a secret of the workspace's .env (the signing secret, the
    webhook secret), whatever else it shows."""
    for name, value in SECRET_SETTING.findall((shop / ".env").read_text()):
        if value.strip() in output:
            pytest.fail(f"{where}: the output shows {name}")  # and not its value


def _write_new_toml_examples(shop: Path) -> None:
    """Shell and console examples see the TOML examples of files the workspace does not
    have (a campaign the docs show, such as winback), as a reader who wrote them would."""
    for block in RUNNABLE:
        target = toml_target(block) if block.lang == "toml" and not block.not_run else None
        if target and not (shop / target[0]).exists():
            (shop / target[0]).parent.mkdir(parents=True, exist_ok=True)
            (shop / target[0]).write_text(block.body)


def _console_check(block: Block, shop: Path, monkeypatch) -> None:
    _write_new_toml_examples(shop)
    for command in commands(block):
        if command.not_run:
            continue
        forms = command.forms()
        assert len(forms) == 1, f"{block.where}: a console example shows one command"
        argv = in_process(forms[0])
        assert argv and argv[0] == "listkit", f"{block.where}: run it in a ```sh block"
        code, output = _invoke(argv[1:], shop, monkeypatch)
        _assert_no_secret(shop, block.where, output)
        expected = "\n".join(command.output)
        diff = "\n".join(
            difflib.unified_diff(
                shape(expected), shape(output), "README (figures masked)", "printed", lineterm=""
            )
        )
        assert not diff, (
            f"{block.where}: `{forms[0]}` (exit {code}) prints otherwise:\n{diff}\n\n"
            f"It printed:\n{output}"
        )


def test_every_example_is_run_or_marked_not_run(capsys) -> None:
    """The inventory: what runs, what is marked not run (and why), what is no example."""
    ran, skipped, other, placeholders = Counter(), [], Counter(), []
    for block in ALL_BLOCKS:
        if block.lang not in RUN:
            other[block.lang or "(no language)"] += 1
        elif block.not_run:
            skipped.append(f"{block.where} (block): {block.not_run}")
        elif block.lang == "toml":
            ran["toml blocks"] += 1
        else:
            ran[f"{block.lang} blocks"] += 1
            for command in commands(block):
                if command.not_run:
                    skipped.append(f"{block.path.name}:{command.line}: {command.not_run}")
                else:
                    ran["commands"] += 1
                    ran["command forms"] += len(command.forms())
                    if "https://HOST" in command.text and not block.serve:
                        placeholders.append(f"{block.path.name}:{command.line}")
    assert ran["commands"] > 0
    assert not placeholders, f"https://HOST outside a block marked serve: {placeholders}"
    with capsys.disabled():
        print(
            "\ndocs examples: run "
            + ", ".join(f"{n} {what}" for what, n in sorted(ran.items()))
            + f"; not run ({len(skipped)}):"
        )
        for line in skipped:
            print(f"  {line}")
        print(
            "  other fenced blocks, not examples: "
            + ", ".join(f"{n} {lang}" for lang, n in sorted(other.items()))
        )


def test_every_known_failure_names_an_example() -> None:
    stale = [key for key in KNOWN_FAILURES if not any(key in b.body for b in RUNNABLE)]
    assert not stale, f"KNOWN_FAILURES entries that match no example: {stale}"


def _block(markdown: str, tmp_path: Path) -> Block:
    path = tmp_path / "doc.md"
    path.write_text(markdown)
    (found,) = [b for b in blocks(path) if b.lang]
    return found


def test_an_optional_part_is_included_and_each_alternative_runs_once(tmp_path) -> None:
    block = _block("```sh\nlistkit sales ls [--list blog] [--json|--csv]\n```\n", tmp_path)
    (command,) = commands(block)
    assert command.forms() == [
        "listkit sales ls --list blog --json",
        "listkit sales ls --list blog --csv",
    ]


def test_a_bar_with_spaces_or_in_quotes_is_no_alternative(tmp_path) -> None:
    block = _block(
        "```sh\nlistkit report --json | jq .\nlistkit subscribers ls --where 'bought=a|b'\n```\n",
        tmp_path,
    )
    pipe, quoted = commands(block)
    assert pipe.forms() == ["listkit report --json | jq ."]
    assert in_process(pipe.forms()[0]) is None
    assert quoted.forms() == ["listkit subscribers ls --where 'bought=a|b'"]
    assert in_process(quoted.forms()[0]) == [
        "listkit",
        "subscribers",
        "ls",
        "--where",
        "bought=a|b",
    ]


def test_a_line_marked_not_run_says_why_even_on_its_comments_next_line(tmp_path) -> None:
    block = _block(
        "```sh\nlistkit serve   # the service\n"
        "                # (not run: keeps running)\nlistkit form blog\n```\n",
        tmp_path,
    )
    serve, form = commands(block)
    assert serve.not_run == "keeps running"
    assert form.not_run is None


def test_continued_lines_are_one_command(tmp_path) -> None:
    block = _block("```sh\nlistkit sales import orders.csv \\\n    --currency EUR\n```\n", tmp_path)
    (command,) = commands(block)
    assert in_process(command.forms()[0]) == [
        "listkit",
        "sales",
        "import",
        "orders.csv",
        "--currency",
        "EUR",
    ]


def test_a_console_block_keeps_the_output_under_each_command(tmp_path) -> None:
    block = _block("```console\n$ listkit lists ls\nblog  3\n```\n", tmp_path)
    (command,) = commands(block)
    assert (command.text, command.output) == ("listkit lists ls", ["blog  3"])


def test_a_block_marker_must_say_why_or_the_docs_fail(tmp_path) -> None:
    path = tmp_path / "doc.md"
    path.write_text("<!-- example: skip -->\n```sh\nlistkit lists ls\n```\n")
    with pytest.raises(ValueError, match="unknown example marker 'skip'"):
        blocks(path)
    path.write_text("<!-- example: not run: starts a server -->\n```sh\nlistkit serve\n```\n")
    assert blocks(path)[0].not_run == "starts a server"


def test_the_shape_of_output_ignores_figures_and_column_widths() -> None:
    assert shape("blog    40  USD 69.60  9.38%  -\n") == shape("blog 1 USD 1,069.00 100.00% 7\n")
    assert shape("blog 40\n") != shape("podcast 40\n")
