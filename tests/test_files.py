"""Files holding secrets or personal data are created private (0600), whatever the umask."""

import os
import stat

import pytest
from click.testing import CliRunner

from listkit.cli import cli
from listkit.send.sender import LOCK_NAME
from tests.test_send import ADDRS, setup_campaign


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def open_umask():
    old = os.umask(0o022)  # the usual umask: files readable by everyone unless made private
    yield
    os.umask(old)


def test_init_creates_env_and_database_private_and_so_are_wal_and_shm(tmp_path):
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "shop")])
    assert result.exit_code == 0, result.output
    root = tmp_path / "shop"
    assert mode(root / ".env") == 0o600
    assert mode(root / "listkit.db") == 0o600
    runner = CliRunner()
    # While a command has the database open, its WAL and SHM files exist.
    from listkit.workspace import Workspace

    ws = Workspace(root)
    with ws.db.conn:
        ws.db.execute("INSERT INTO lists (slug, created) VALUES ('x', 'now')")
    assert mode(root / "listkit.db-wal") == 0o600
    assert mode(root / "listkit.db-shm") == 0o600
    ws.close()
    assert runner.invoke(cli, ["-w", str(root), "lists", "ls"]).exit_code == 0


def test_a_database_made_by_its_first_command_is_private(tmp_path):
    (tmp_path / ".env").write_text("LISTKIT_DB=other.db\n")
    result = CliRunner().invoke(cli, ["-w", str(tmp_path), "lists", "create", "blog"])
    assert result.exit_code == 0, result.output
    assert mode(tmp_path / "other.db") == 0o600


def test_errors_file_eml_output_send_lock_and_marks_are_private(run, workspace, tmp_path, server):
    run("lists", "create", "blog")
    source = tmp_path / "in.csv"
    source.write_text("email,name\nann@example.com,Ann\nnot-an-address,Bob\n")
    errors = tmp_path / "rejected.csv"
    run("subscribers", "import", str(source), "--list", "blog", "--errors", str(errors))
    assert "not-an-address,Bob" in errors.read_text()
    assert mode(errors) == 0o600
    preview = tmp_path / "preview.eml"
    run("offers", "preview", "launch", "--email", "ann@example.com", "--eml", str(preview))
    assert mode(preview) == 0o600
    controller, _handler = server
    setup_campaign(run, workspace, controller.port, ADDRS[:2], lists=("news",))
    out = tmp_path / "out"
    run("send", "t", "--dry-run", str(out))
    assert [mode(p) for p in sorted(out.iterdir())] == [0o600, 0o600]
    run("send", "t", "--yes")
    assert mode(workspace / LOCK_NAME) == 0o600
    assert mode(workspace / "listkit.db-marks") == 0o600
