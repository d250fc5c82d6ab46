"""Building a campaign's outbox: short transactions, and a build cut short is completed."""

import contextlib

from listkit.send import outbox
from listkit.send.prepare import prepare
from listkit.workspace import Workspace
from tests.test_send import setup_campaign


def build(ws, p, cid):
    return outbox.build_outbox(ws.db, cid, p.campaign)


def _outbox_setup(run, workspace, port=25):
    from listkit.send.campaigns import register

    setup_campaign(run, workspace, port, [f"o{i}@example.com" for i in range(7)])
    ws = Workspace(workspace)
    p = prepare(ws, "t")
    cid = register(ws.db, p.campaign, digest="x", coupon=None)
    return ws, p, cid


def test_an_outbox_is_built_in_short_transactions_leaving_the_lock_free_between(
    run, workspace, monkeypatch
):
    import sqlite3

    ws, p, cid = _outbox_setup(run, workspace)
    monkeypatch.setattr(outbox, "FILL_CHUNK", 2)
    made, other_wrote = [], []
    real_held_out = outbox.held_out

    def held_out(*args):
        made.append(1)
        if len(made) == 3:  # making the second chunk: the first is committed
            other = sqlite3.connect(ws.settings.db_path, timeout=0)
            other.execute("BEGIN IMMEDIATE")  # "database is locked" if the build held it
            other.execute("ROLLBACK")
            other.close()
            other_wrote.append(True)
        return real_held_out(*args)

    monkeypatch.setattr(outbox, "held_out", held_out)
    try:
        assert build(ws, p, cid) == 7
    finally:
        ws.close()
    assert other_wrote == [True]


def test_an_outbox_build_cut_short_is_completed_by_the_next_send(
    run, workspace, monkeypatch, server
):
    ws, p, cid = _outbox_setup(run, workspace)
    monkeypatch.setattr(outbox, "FILL_CHUNK", 2)
    real_held_out, made = outbox.held_out, []

    def dies_on_the_fifth(*args):
        made.append(1)
        if len(made) == 5:
            raise KeyboardInterrupt  # the process dies while building the third chunk
        return real_held_out(*args)

    monkeypatch.setattr(outbox, "held_out", dies_on_the_fifth)
    with contextlib.suppress(KeyboardInterrupt):
        build(ws, p, cid)
    assert ws.db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 4
    ws.close()
    monkeypatch.setattr(outbox, "held_out", real_held_out)

    controller, handler = server
    env = (workspace / ".env").read_text()
    (workspace / ".env").write_text(
        env.replace("smtp://127.0.0.1:25", f"smtp://127.0.0.1:{controller.port}")
    )
    run("send", "t", "--yes")
    run("send", "t", "--yes")
    assert handler.recipients() == {f"o{i}@example.com": 1 for i in range(7)}
    ws = Workspace(workspace)
    try:
        # Started now: the audience is fixed, a later build adds nobody.
        assert build(ws, p, cid) == 0
        assert ws.db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 7
    finally:
        ws.close()
