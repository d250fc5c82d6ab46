"""Benchmark: a `listkit send --due` tick with sequences, and finding their due steps.

Builds the database of ``bench/big_db.py`` (1,000,000 subscribers on 20
lists, 50 campaigns with 5,000,000 deliveries, 50,000 sales; ``--scale``
shrinks it), then a workspace around it with three sequences (the shipped
``welcome`` on list1, a copy on list2, the shipped ``after-purchase``
triggered by any purchase), recorded by listkit itself (``sync_all``), and
200,000 readers enrolled in bulk (``--scale`` shrinks them too): 50,000 in
each ``joined:`` sequence (every member of its list), 100,000 in
``after-purchase``; of them 80% active, their next step due from tomorrow
on over 30 days, the rest finished, exited or held out. (The steps' messages
are not added to the outbox: a tick reads the outbox through the index on
campaign and state, whatever it holds, and this bench stays independent of
the deliveries row's layout.)

Then in the same run, on the same file, warm, each several times:

(a) a `listkit send --due` tick now, when nothing is due (a subprocess),
    against the same start-up without the tick: a process that imports the
    `send` command's module (the command line loads it when the command is
    called) and opens the workspace's database; `listkit --version` beside
    them. Wall and CPU time (user + system) of each process: on a loaded
    machine the wall time is mostly waiting for a core. Goal: the tick under
    50 ms beyond the start-up;
(b) at a moment when 1 day of the 30 is due (about 5,300 readers), the
    library call a tick finds the due steps with (``sequence_due.due_steps``,
    for each sequence: enrolment, reader, list and step) against one
    ``SELECT COUNT(*)`` of the due enrolments through the index on the due
    time; and due_steps' SQL alone (its rows counted where they are read, not
    handed to Python). Goal: at most 3x.

    .venv/bin/python bench/sequences.py [--scale 0.1] [--repeat 5] [--keep DB]
"""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from big_db import LISTS, arguments, ensure  # the database bench/report.py uses too

from listkit.db import open_db
from listkit.send.sequence_due import due_steps
from listkit.send.sequence_files import sync_all
from listkit.workspace import Workspace, init_workspace

REPO = Path(__file__).resolve().parent.parent
DAY = 86400
SPREAD = 30  # days over which the active readers' next steps fall due
# Now and tomorrow when the database is built: no reader is due before then.
NOW = int(datetime.now(UTC).timestamp())
FROM = NOW + DAY


def workspace(root: Path, db_path: Path) -> None:
    """A workspace on the built database: the three sequences, no campaign files
    (the tick then has only sequences to look at), LISTKIT_DB pointing at the file."""
    init_workspace(root)
    for f in (root / "campaigns").glob("*.toml"):
        f.unlink()
    seqs = root / "sequences"
    seqs.mkdir(exist_ok=True)
    welcome = (REPO / "sequences" / "welcome.toml").read_text()
    (seqs / "welcome.toml").write_text(welcome.replace("joined:blog", "joined:list1"))
    (seqs / "welcome-two.toml").write_text(welcome.replace("joined:blog", "joined:list2"))
    shutil.copyfile(REPO / "sequences" / "after-purchase.toml", seqs / "after-purchase.toml")
    for name in ("welcome-download", "welcome-story", "purchase-help", "field-guide-workbook"):
        if not (root / "offers" / name).exists():
            shutil.copytree(REPO / "offers" / name, root / "offers" / name)
    with (root / ".env").open("a") as env:
        env.write(f"\nLISTKIT_DB={db_path}\n")


def enrol(root: Path, db_path: Path, scale: float) -> int:
    """Record the sequences (as listkit reads their files) and enrol the readers in bulk."""
    ws = Workspace(root)
    loaded = sync_all(ws.db, ws.sequences_dir, ws.offers_dir, at=datetime(2026, 1, 1, tzinfo=UTC))
    assert not loaded.errors, loaded.errors
    ids = {slug: sid for slug, (sid, _seq) in loaded.sequences.items()}
    ws.close()
    subscribers = int(1_000_000 * scale)
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA synchronous = OFF")  # building the fixture only
    # Who: every member of list1 and list2 (ids 20k and 20k+1 with 20 lists), and
    # 100,000 others (ids 20k+2 and 20k+3) for the purchase sequence.
    who = (
        (ids["welcome"], f"id % {LISTS} = 0"),
        (ids["welcome-two"], f"id % {LISTS} = 1"),
        (ids["after-purchase"], f"id % {LISTS} IN (2, 3)"),
    )
    # State by reader: 80% active (next step due from FROM over SPREAD days; step
    # passed: the first, for half of them), then finished, exited, held out.
    n = f"(s.id / {LISTS})"  # a reader's number within their list
    state = f"""CASE WHEN {n} % 10 < 8 THEN 'active' WHEN {n} % 10 = 8 THEN 'finished'
                     WHEN {n} % 20 = 9 THEN 'exited' ELSE 'held_out' END"""
    with conn:
        for sid, where in who:
            steps = [
                r[0]
                for r in conn.execute(
                    "SELECT step FROM campaigns WHERE sequence_id = ? ORDER BY id", [sid]
                )
            ]
            first, second, last = steps[0], steps[1], steps[-1]
            conn.execute(
                f"""INSERT INTO enrollments (sequence_id, subscriber_id, list_id, state,
                       trigger_at, trigger_ref, step, step_at, next_step, next_due, created)
                    SELECT ?, s.id, 1 + s.id % {LISTS}, {state}, ?, 'bench',
                           CASE WHEN {state} = 'finished' THEN ?
                                WHEN {state} = 'active' AND {n} % 2 = 0 THEN ?
                                WHEN {state} = 'exited' THEN ? END,
                           ?,
                           CASE WHEN {state} = 'active' THEN
                                CASE WHEN {n} % 2 = 0 THEN ? ELSE ? END END,
                           CASE WHEN {state} = 'active'
                                THEN ? + (s.id * 7919) % ({SPREAD} * {DAY}) END,
                           ?
                    FROM subscribers s WHERE s.id <= ? AND {where}""",
                [
                    sid,
                    NOW - DAY,
                    last,
                    first,
                    first,
                    NOW - DAY,
                    second,
                    first,
                    FROM,
                    NOW,
                    subscribers,
                ],
            )
    conn.execute("ANALYZE")
    enrolled = conn.execute("SELECT COUNT(*) FROM enrollments").fetchone()[0]
    conn.close()
    return enrolled


def main() -> None:
    args = arguments(__doc__)
    with tempfile.TemporaryDirectory(prefix="listkit-bench-sequences-") as tmp:
        path = args.keep or Path(tmp) / "listkit.db"
        root = path.parent / "bench-sequences-workspace"
        built = not path.exists()
        ensure(path, args.scale)
        if built or not root.exists():
            shutil.rmtree(root, ignore_errors=True)
            workspace(root, path)
            print(f"enrolled {enrol(root, path, args.scale):,} readers", flush=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTKIT_")}

        tick = [sys.executable, "-m", "listkit", "--workspace", str(root), "send", "--due"]
        # The same start-up: Python, the `send` command's module with all it imports
        # (the command line loads a command's module when it is called), the
        # workspace's settings and its database opened (pragmas, migrations checked).
        startup = [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; import listkit.cli.send; "
            "from listkit.workspace import Workspace; "
            "Workspace(Path(sys.argv[1])).db.execute('SELECT 1')",
            str(root),
        ]
        version = [sys.executable, "-m", "listkit", "--version"]

        def run(cmd: list[str]) -> tuple[float, float]:
            """Wall and CPU seconds (user + system) of one process."""
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if out.returncode:
                sys.exit(f"{' '.join(cmd[2:])} failed:\n{out.stdout}{out.stderr}")
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            return wall, cpu

        conn = sqlite3.connect(path)
        due_sql = (
            "SELECT COUNT(*) FROM enrollments INDEXED BY enrollments_due "
            "WHERE state = 'active' AND next_due <= ?"
        )
        if conn.execute(due_sql, [int(datetime.now(UTC).timestamp())]).fetchone()[0]:
            sys.exit(f"{path}: readers are due now (a database kept from days ago); rebuild it")
        # Tomorrow as the database was built: the first readers due.
        first_due = conn.execute(
            "SELECT min(next_due) FROM enrollments WHERE state = 'active'"
        ).fetchone()[0]
        run(tick)  # records the files once and warms the page cache
        procs: dict[str, list[tuple[float, float]]] = {"tick": [], "startup": [], "version": []}
        for _ in range(args.repeat):  # alternated, so that load hits them alike
            for name, cmd in (("tick", tick), ("startup", startup), ("version", version)):
                procs[name].append(run(cmd))

        db = open_db(path)
        sequences = [r[0] for r in db.execute("SELECT id FROM sequences ORDER BY id")]
        moment = first_due + DAY
        at = datetime.fromtimestamp(moment, UTC)
        due = conn.execute(due_sql, [moment]).fetchone()[0]
        found = sum(len(due_steps(db, sid, at)) for sid in sequences)
        assert found == due, (found, due)

        # The SQL of due_steps alone, its rows counted where they are read rather
        # than handed to Python: the query's shape, without Python's cost per row.
        sql_alone = (
            "SELECT COUNT(*) FROM (SELECT e.id, e.subscriber_id, e.list_id, e.next_step "
            "FROM enrollments e INDEXED BY enrollments_step_due WHERE e.state = 'active' "
            "AND e.sequence_id = ? AND e.next_due <= ?)"
        )

        def baseline() -> None:
            conn.execute(due_sql, [moment]).fetchone()

        def library() -> None:
            for sid in sequences:
                due_steps(db, sid, at)

        def query() -> None:
            for sid in sequences:
                conn.execute(sql_alone, [sid, moment]).fetchone()

        inproc: dict[str, list[tuple[float, float]]] = {"base": [], "lib": [], "sql": []}
        for _ in range(max(args.repeat, 7)):
            for name, fn in (("base", baseline), ("lib", library), ("sql", query)):
                cpu, start = time.process_time(), time.perf_counter()
                fn()
                inproc[name].append((time.perf_counter() - start, time.process_time() - cpu))
        enrolled = conn.execute("SELECT COUNT(*) FROM enrollments").fetchone()[0]
        db.close()
        conn.close()

    med = statistics.median

    def figures(runs: list[tuple[float, float]]) -> str:
        wall, cpu = [r[0] for r in runs], [r[1] for r in runs]
        return f"{min(wall) * 1000:9.2f}{med(wall) * 1000:9.2f}{med(cpu) * 1000:9.2f}"

    def ratio(a: list, b: list, i: int) -> float:
        return med(r[i] for r in a) / med(r[i] for r in b)

    def beyond(i: int) -> float:
        return (med(r[i] for r in procs["tick"]) - med(r[i] for r in procs["startup"])) * 1000

    print(f"{enrolled:,} readers enrolled in {len(sequences)} sequences; {due:,} due at the moment")
    print(f"{'':58}{'best ms':>9}{'median':>9}{'cpu med':>9}")
    for name, runs in (
        ("listkit --version (process)", procs["version"]),
        ("start-up: import `send`, open the database (process)", procs["startup"]),
        ("listkit send --due, nothing due (process)", procs["tick"]),
        (f"SELECT COUNT(*) of the {due:,} due enrolments (index)", inproc["base"]),
        ("due_steps() for each sequence (library, rows to Python)", inproc["lib"]),
        ("due_steps()'s SQL alone, for each sequence", inproc["sql"]),
    ):
        print(f"{name:58}{figures(runs)}")
    print(
        f"(a) the tick beyond start-up: {beyond(0):.1f} ms wall, {beyond(1):.1f} ms CPU "
        "(medians; goal < 50 ms)"
    )
    lib, sql, base = inproc["lib"], inproc["sql"], inproc["base"]
    print(
        f"(b) finding the due steps / one indexed COUNT(*): {ratio(lib, base, 0):.2f}x wall, "
        f"{ratio(lib, base, 1):.2f}x CPU; the query alone {ratio(sql, base, 0):.2f}x wall "
        "(medians; goal <= 3x)"
    )
    print(f"machine load: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (1, 5, 15 min)")


if __name__ == "__main__":
    main()
