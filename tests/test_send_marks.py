"""The marks file: what it says survives a crash, and only for the claim it was written for."""

import zlib

from listkit.send.marks import ZEROS, MarkFile, fold_marks, marks_path, read_marks
from listkit.send.outbox import recover
from listkit.workspace import Workspace
from tests.test_send import claimed, setup_campaign

ADDRS = [f"m{i}@example.com" for i in range(5)]


def line(run_id: str, delivery_id: int) -> bytes:
    body = f"{run_id} {delivery_id}".encode()
    return body + b" %08x\n" % zlib.crc32(body)


def test_only_whole_lines_with_their_checksum_count(tmp_path):
    path = tmp_path / "listkit.db-marks"
    assert read_marks(path) == []  # no file: nothing marked
    path.write_bytes(
        line("111-aa", 1)
        + line("111-aa", 2).replace(b" 2 ", b" 3 ")  # the id changed: checksum fails
        + b"garbage\n"
        + b"\xff\xfe 4 00000000\n"
        + line("111-aa", 5)
        + line("111-aa", 60)[:-1]  # cut short by a crash: never synced
    )
    assert read_marks(path) == [("111-aa", 1), ("111-aa", 5)]


def test_mark_file_appends_synced_lines(tmp_path):
    db_path = tmp_path / "listkit.db"
    marks = MarkFile(db_path)
    marks.mark("7-ab", [3, 4])
    marks.mark("7-ab", [])
    marks.mark("7-ab", [9])
    assert read_marks(marks_path(db_path)) == [("7-ab", 3), ("7-ab", 4), ("7-ab", 9)]
    marks.clear()
    assert read_marks(marks_path(db_path)) == []
    marks.close()


def test_folded_marks_make_a_dead_runs_rows_unknown_and_the_rest_pending(run, workspace):
    setup_campaign(run, workspace, 25, ADDRS)
    ws = Workspace(workspace)
    try:
        # A run that died: it claimed every row and marked two as going out.
        _, cid, rows = claimed(ws, "100-dead", 10)
        ids = {r.email: r.id for r in rows}
        marks = MarkFile(ws.settings.db_path)
        marks.mark("100-dead", [ids["m1@example.com"], ids["m3@example.com"]])
        # A line of an older claim of another row says nothing about this claim.
        marks.mark("99-older", [ids["m4@example.com"]])
        marks.close()

        assert fold_marks(ws.db, ws.settings.db_path) == 2
        assert marks_path(ws.settings.db_path).stat().st_size == 0
        assert recover(ws.db, cid) == {"pending": 3, "unknown": 2}
        states = dict(
            ws.db.execute(
                "SELECT s.email, d.state FROM deliveries d"
                " JOIN subscribers s ON s.id = d.subscriber_id"
            ).fetchall()
        )
        assert states == {
            "m0@example.com": "pending",
            "m1@example.com": "unknown",
            "m2@example.com": "pending",
            "m3@example.com": "unknown",
            "m4@example.com": "pending",
        }
        # Folding again (a crash after the commit, before the file was emptied) changes nothing.
        assert fold_marks(ws.db, ws.settings.db_path) == 0
    finally:
        ws.close()


def test_a_finished_run_leaves_the_marks_file_empty(run, workspace):
    from tests import smtp_server

    controller, handler = smtp_server.start()
    try:
        setup_campaign(run, workspace, controller.port, ADDRS)
        run("send", "t", "--yes")
    finally:
        controller.stop()
    assert handler.recipients() == {a: 1 for a in ADDRS}
    assert (workspace / "listkit.db-marks").read_bytes() == b""


def test_marks_are_written_over_zeros_laid_ahead_and_only_whole_lines_are_read(tmp_path):
    db_path = tmp_path / "listkit.db"
    marks = MarkFile(db_path)
    marks.mark("7-ab", [3])
    data = marks_path(db_path).read_bytes()
    assert data.startswith(line("7-ab", 3)) and len(data) >= len(line("7-ab", 3)) + ZEROS
    assert data[len(line("7-ab", 3)) :] == bytes(len(data) - len(line("7-ab", 3)))
    many = list(range(10, 10 + 2 * ZEROS // len(line("7-ab", 10))))
    marks.mark("7-ab", many)  # past the zeros laid ahead: more are laid
    assert read_marks(marks_path(db_path)) == [("7-ab", i) for i in [3, *many]]
    marks.clear()
    assert marks_path(db_path).read_bytes() == b""
    marks.close()


def test_lines_written_after_a_line_cut_short_are_whole(tmp_path):
    db_path = tmp_path / "listkit.db"
    marks_path(db_path).write_bytes(line("5-aa", 1) + line("5-aa", 2)[:7])
    marks = MarkFile(db_path)
    marks.mark("6-bb", [3, 4])
    marks.close()
    assert read_marks(marks_path(db_path)) == [("5-aa", 1), ("6-bb", 3), ("6-bb", 4)]
