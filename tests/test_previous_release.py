"""A database written by the previous release (tests/fixtures/previous-release.db,
made by scripts/previous_release_db.py with that release's own code) opens with
today's code: every schema step runs, nothing is lost, reports and sends work."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from listkit.db import migrations, open_db
from tests.databases import query, replace_database

FIXTURE = Path(__file__).parent / "fixtures" / "previous-release.db"


@pytest.fixture
def old_db(workspace: Path) -> Path:
    """The workspace, its database replaced by the previous release's."""
    return replace_database(workspace, FIXTURE)


def test_the_previous_release_fixture_is_small_and_from_before_todays_schema():
    assert FIXTURE.stat().st_size < 200_000
    steps = {name for (name,) in query(FIXTURE, "SELECT name FROM _sqlite_migrations")}
    assert steps and steps <= {m.name for m in migrations._migrations}


def test_a_previous_release_database_migrates_and_keeps_everything(run, old_db):
    lists = json.loads(run("lists", "ls", "--json").output)  # the first command migrates
    assert query(old_db, "PRAGMA integrity_check") == [("ok",)]
    assert query(old_db, "PRAGMA foreign_key_check") == []
    steps = [name for (name,) in query(old_db, "SELECT name FROM _sqlite_migrations")]
    assert sorted(steps) == sorted(m.name for m in migrations._migrations)
    # gus is suppressed: counted as such, not as active (lists ls since this release).
    assert [(x["slug"], x["active"], x["suppressed"], x["unsubscribed"]) for x in lists] == [
        ("blog", 3, 0, 1),
        ("customers", 3, 1, 0),
    ]
    assert query(old_db, "SELECT count(*) FROM subscribers") == [(8,)]
    uni = json.loads(run("subscribers", "show", "ünï@bücher.example", "--json").output)
    assert (uni["name"], uni["fields"]) == ("Uni", {"city": "Lyon"})
    gus = json.loads(run("subscribers", "show", "gus@example.com", "--json").output)
    assert gus["suppressed"]["reason"] == "manual"
    status = json.loads(run("status", "launch", "--json").output)
    assert (status["state"], status["counts"]["sent"]) == ("done", 7)
    events = query(old_db, "SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind")
    assert events == [("click", 1), ("click_bot", 1), ("unsubscribe", 1)]
    sales = query(old_db, "SELECT order_id, method, amount, currency FROM sales ORDER BY order_id")
    assert sales == [
        ("o-1", "token", 2030, "EUR"),
        ("o-2", "email", 2030, "EUR"),
        ("o-3", "none", 1500, "USD"),
    ]


def test_reports_read_a_previous_release_database(run, old_db, tmp_path):
    report = json.loads(run("report", "--by", "list", "--json").output)
    blog = next(r for r in report["rows"] if r["list"] == "blog")
    assert (blog["sent"], blog["clicks"], blog["orders"], blog["revenue"]) == (
        4,
        1,
        2,
        {"EUR": 4060},
    )
    assert blog["methods"] == {"email": 1, "token": 1}
    assert report["totals"]["unattributed"] == {"orders": 1, "revenue": {"USD": 1500}}
    assert [r["list"] for r in report["lists_without_revenue"]] == ["customers"]
    by_campaign = json.loads(run("report", "--by", "campaign", "--json").output)
    assert [(r["campaign"], r["orders"]) for r in by_campaign["rows"]] == [("launch", 2)]
    html = tmp_path / "report.html"
    run("report", "--html", str(html))
    assert "blog" in html.read_text()


def test_a_previous_release_database_sends_a_new_campaign_and_never_mails_the_suppressed(
    run, workspace, old_db, server
):
    controller, handler = server
    env = (workspace / ".env").read_text()
    env = env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{controller.port}")
    (workspace / ".env").write_text(env)
    (workspace / "campaigns" / "next.toml").write_text(
        'offer = "launch"\nlists = ["blog", "customers"]\n'
    )
    run("send", "next", "--yes")
    # Not gus (suppressed), not bob (unsubscribed from blog through the old service).
    assert sorted(handler.recipients()) == [
        "ann@example.com",
        "cat@example.com",
        "dan@example.com",
        "eve@example.com",
        "fay@example.com",
        "Ünï@bücher.example",
    ]


def schema(path: Path) -> dict[str, list]:
    """Every table's columns (in order) and every index's definition."""
    conn = sqlite3.connect(path)
    try:
        tables = [
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        shape = {t: conn.execute(f"PRAGMA table_info([{t}])").fetchall() for t in tables}
        shape["indexes"] = sorted(
            conn.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index'")
        )
        shape.pop("_sqlite_migrations")
        return shape
    finally:
        conn.close()


def test_schema_steps_are_registered_in_the_order_of_their_numbers():
    # sqlite-utils applies the steps a database lacks in the order they are registered.
    names = [m.name for m in migrations._migrations]
    assert names == sorted(names)


def test_a_fresh_database_and_a_migrated_previous_release_have_the_same_schema(
    run, workspace, old_db, tmp_path
):
    fresh = tmp_path / "fresh.db"
    open_db(fresh).conn.close()
    run("lists", "ls")  # migrates the previous release's database
    assert schema(fresh) == schema(old_db)


def test_an_import_as_the_first_command_on_a_previous_release_database(run, old_db, tmp_path):
    """The step that lets an import leave a row's time and source to its imports row
    runs in the same process as the import that then does so."""
    f = tmp_path / "new.csv"
    f.write_text("email\nnew.reader@example.com\neve@example.com\n")
    run("subscribers", "import", str(f), "--list", "blog")
    assert query(old_db, "PRAGMA integrity_check") == [("ok",)]
    new = json.loads(run("subscribers", "show", "new.reader@example.com", "--json").output)
    (at,) = query(old_db, "SELECT at FROM imports")[0]
    assert (new["created"], new["source"]) == (at, "import:new.csv")
    assert [(m["list"], m["joined"], m["consent_method"]) for m in new["lists"]] == [
        ("blog", at, "import")
    ]
    # A subscriber the previous release stored keeps its own time and source, and
    # its membership from then its own consent; the new one is the import's.
    before = query(FIXTURE, "SELECT created, source FROM subscribers WHERE key = 'eve@example.com'")
    eve = json.loads(run("subscribers", "show", "eve@example.com", "--json").output)
    assert [(eve["created"], eve["source"])] == before
    assert [(m["list"], m["consent_source"]) for m in eve["lists"]] == [
        ("blog", "import:new.csv"),
        ("customers", "import:customers.csv"),
    ]


def test_m025_stopped_half_way_leaves_the_database_as_it_was_and_runs_again(old_db, monkeypatch):
    """m025 is one transaction with its record: stopped after its first table's
    edit (here by an error where a kill would stop it), nothing of it stays."""
    import listkit.db as dbmod

    real, calls = dbmod._drop_not_null, []

    def stop_at_the_second(conn, table, column):
        calls.append(table)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a Ctrl-C there would
        real(conn, table, column)

    monkeypatch.setattr(dbmod, "_drop_not_null", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        open_db(old_db)
    assert calls == ["subscribers", "memberships"]
    assert query(old_db, "SELECT name FROM sqlite_master WHERE name = 'imports'") == []
    assert query(old_db, "SELECT name FROM _sqlite_migrations WHERE name LIKE 'm025%'") == []
    notnull = {r[1]: r[3] for r in query(old_db, "PRAGMA table_info(subscribers)")}
    assert notnull["created"] == 1 and "import_id" not in notnull
    monkeypatch.setattr(dbmod, "_drop_not_null", real)
    db = open_db(old_db)
    db.conn.close()
    assert query(old_db, "PRAGMA integrity_check") == [("ok",)]
    assert query(old_db, "SELECT name FROM _sqlite_migrations WHERE name LIKE 'm025%'") == [
        ("m025_imports",)
    ]
    for table in ("subscribers", "memberships"):
        notnull = {r[1]: r[3] for r in query(old_db, f"PRAGMA table_info({table})")}
        assert notnull["created"] == 0 and "import_id" in notnull
