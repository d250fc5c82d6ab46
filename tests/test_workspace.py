from pathlib import Path

from click.testing import CliRunner

from listkit.cli import cli
from listkit.config import load_settings, parse_smtp_url
from listkit.db import open_db


def test_init_creates_a_working_workspace(tmp_path: Path):
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "shop")])
    assert result.exit_code == 0, result.output
    root = tmp_path / "shop"
    assert (root / ".env").is_file()
    assert (root / "offers" / "launch" / "offer.toml").is_file()
    assert (root / "offers" / "launch" / "text.j2").is_file()
    assert (root / "campaigns" / "launch.toml").is_file()
    assert (root / "listkit.db").is_file()
    settings = load_settings(root, environ={})
    assert len(settings.secret) >= 32
    assert settings.sources["LISTKIT_SECRET"] == ".env"


def test_init_gives_each_workspace_its_own_secret(tmp_path: Path):
    runner = CliRunner()
    runner.invoke(cli, ["init", str(tmp_path / "a")])
    runner.invoke(cli, ["init", str(tmp_path / "b")])
    a = load_settings(tmp_path / "a", environ={}).secret
    b = load_settings(tmp_path / "b", environ={}).secret
    assert a != b


def test_init_refuses_to_overwrite_and_changes_nothing(tmp_path: Path):
    root = tmp_path / "shop"
    root.mkdir()
    (root / ".env").write_text("LISTKIT_FROM=Me <me@example.com>\n")
    result = CliRunner().invoke(cli, ["init", str(root)])
    assert result.exit_code == 1
    assert "already has" in result.output and ".env" in result.output
    assert "listkit init never overwrites files" in result.output
    assert (root / ".env").read_text() == "LISTKIT_FROM=Me <me@example.com>\n"
    assert not (root / "offers").exists()


def test_environment_wins_over_env_file(workspace: Path, monkeypatch):
    monkeypatch.setenv("LISTKIT_FROM", "Env <env@example.com>")
    settings = load_settings(workspace)
    assert settings.sender == ("Env", "env@example.com")
    assert settings.sources["LISTKIT_FROM"] == "environment"
    assert settings.sources["LISTKIT_POSTAL_ADDRESS"] == ".env"


def test_config_masks_secrets(run, workspace: Path, monkeypatch):
    monkeypatch.setenv("LISTKIT_SMTP_URL", "smtps://ann:hunter2secret@mail.example.com")
    result = run("config")
    secret = load_settings(workspace).secret
    assert secret not in result.output
    assert "hunter2secret" not in result.output
    assert "smtps://ann:****@mail.example.com" in result.output
    assert "LISTKIT_SECRET" in result.output and "****" in result.output


def test_smtp_url_forms():
    plain = parse_smtp_url("smtp://localhost:1025")
    assert (plain.host, plain.port, plain.tls, plain.username) == ("localhost", 1025, "plain", None)
    tls = parse_smtp_url("smtps://u%40x:p%3Aw@mail.example.com")
    assert (tls.port, tls.tls, tls.username, tls.password) == (465, "tls", "u@x", "p:w")
    assert parse_smtp_url("smtp+starttls://mail.example.com").port == 587


def test_malformed_smtp_url_names_the_setting(run, monkeypatch):
    from listkit.errors import ConfigError

    for bad in ("http://x", "smtp://", "smtp://host:notaport"):
        try:
            parse_smtp_url(bad)
        except ConfigError as e:
            assert "LISTKIT_SMTP_URL" in str(e)
        else:
            raise AssertionError(f"{bad} was accepted")


def test_missing_setting_is_named(workspace: Path):
    from listkit.errors import ConfigError

    (workspace / ".env").write_text("")
    settings = load_settings(workspace, environ={})
    try:
        settings.require("LISTKIT_FROM", "LISTKIT_BASE_URL")
    except ConfigError as e:
        assert str(e).startswith("LISTKIT_FROM, LISTKIT_BASE_URL are not set")
    else:
        raise AssertionError("missing settings were accepted")


def test_database_is_configured_for_durability(tmp_path: Path):
    db = open_db(tmp_path / "x.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert {"lists", "subscribers", "memberships", "suppressions", "deliveries", "sales"} <= set(
        db.table_names()
    )
    db.close()
    # Opening again applies nothing twice.
    open_db(tmp_path / "x.db").close()


def test_help_works_with_dash_h():
    result = CliRunner().invoke(cli, ["-h"])
    assert result.exit_code == 0
    assert "Usage: cli" in result.output or "Usage: listkit" in result.output


def test_init_env_has_commented_dkim_and_bounce_examples_that_work_when_uncommented(
    tmp_path: Path,
):
    root = tmp_path / "shop"
    CliRunner().invoke(cli, ["init", str(root)])
    env = (root / ".env").read_text()
    names = (
        "LISTKIT_DKIM_KEY",
        "LISTKIT_DKIM_SELECTOR",
        "LISTKIT_DKIM_DOMAIN",
        "LISTKIT_BOUNCE_ADDRESS",
        "LISTKIT_IMAP_URL",
        "LISTKIT_IMAP_DONE",
        "LISTKIT_SOFT_BOUNCES",
    )
    settings = load_settings(root, environ={})
    lines = env.splitlines()
    for name in names:
        assert settings.sources.get(name) != ".env", name  # only examples: nothing set
        [at] = [i for i, line in enumerate(lines) if line.startswith(f"# {name}=")]
        # Each example follows its own explanation (a comment that is not another example).
        above = lines[at - 1]
        assert above.startswith("# ") and "=" not in above.split()[1], (name, above)
    assert "listkit dkim keygen" in env
    (root / ".env").write_text(
        "\n".join(
            line[2:] if any(line.startswith(f"# {n}=") for n in names) else line for line in lines
        )
    )
    active = load_settings(root, environ={})
    assert active.bounce_address == "bounces@example.com"
    assert active.imap().host == "imap.example.com"
    assert active.imap_done == "Processed"
    assert active.soft_bounces.count == 3
