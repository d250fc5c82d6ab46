"""Benchmark: `listkit report --by list --json` against one plain GROUP BY.

Builds the listkit database of ``bench/big_db.py`` (through ``open_db``, so with
listkit's schema and indexes) holding 1,000,000 subscribers on 20 lists, 50
campaigns with 5,000,000 deliveries and 50,000 sales (``--scale`` shrinks all
of it, ``--deliveries 20000000`` sets the deliveries alone), and what readers
answered, at rates a newsletter sees: a person's click on 1 message in 37 and
a scanner's on 1 in 101, an unsubscribe on 1 in 499 (every other one also a
suppression naming its campaign), a hard bounce on 1 in 211, a complaint on 1
in 2,999 (1 in 401 in campaign c7, past the warning's limit), and two
campaigns with a holdout. Then in the same run, on the same file, warm:

- baseline: ``SELECT list_id, COUNT(*) FROM deliveries GROUP BY list_id`` in
  ``sqlite3``, in this process and from a new Python process;
- listkit: the real ``listkit report --by list --json`` command (a
  subprocess: Python start-up included), and the library call alone.

Goal: the command at most 2x the query from a new process at 5,000,000
deliveries, at most 3x at 20,000,000.

    .venv/bin/python bench/report.py [--scale 0.1] [--deliveries N] [--keep DB] [--repeat R]
                                     [--no-answers]

``--no-answers`` leaves the answers out (the database as ``big_db.py`` builds
it, as this bench measured before they were added).
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from big_db import arguments, ensure, timed  # the database bench/audience.py uses too

from listkit.db import open_db
from listkit.sales.reports import build_report

AT = "2026-10-20T10:00:00+00:00"


def add_answers(path: Path) -> None:
    """What readers answered (see the docstring), unless the file has it already: a
    database kept (``--keep``) from an earlier run is completed, not rebuilt."""
    conn = sqlite3.connect(path)
    if conn.execute("SELECT 1 FROM events LIMIT 1").fetchone():
        conn.close()
        return
    print("adding clicks, unsubscribes, bounces and complaints ...", flush=True)
    conn.execute("PRAGMA synchronous = OFF")  # building the fixture only
    (last,) = conn.execute("SELECT max(id) FROM deliveries").fetchone()

    def every(step: int, where: str = "") -> str:
        # The sent deliveries whose id is a multiple of ``step`` (and ``where``).
        return f"""WITH RECURSIVE n(i) AS (SELECT {step} UNION ALL
                       SELECT i + {step} FROM n WHERE i + {step} <= {last})
                   SELECT d.id, d.campaign_id, d.subscriber_id FROM n
                   JOIN deliveries d ON d.id = n.i WHERE d.state = 'sent' {where}"""

    def events(kind: str, step: int, detail: str = "{}", where: str = "") -> None:
        conn.execute(
            f"""INSERT INTO events (delivery_id, kind, at, detail)
                SELECT id, ?, ?, ? FROM ({every(step, where)})""",
            [kind, AT, detail],
        )

    def suppressions(reason: str, step: int, where: str = "") -> None:
        conn.execute(
            f"""INSERT OR IGNORE INTO suppressions (key, email, reason, created, campaign_id)
                SELECT s.key, s.email, ?, ?, d.campaign_id FROM ({every(step, where)}) d
                JOIN subscribers s ON s.id = d.subscriber_id""",
            [reason, AT],
        )

    with conn:
        events("click", 37)
        events("click_bot", 101)
        events("unsubscribe", 499)
        suppressions("unsubscribed", 998)
        events("bounce", 211, '{"outcome": "hard"}')
        suppressions("hard_bounce", 211)
        events("complaint", 2999)
        events("complaint", 401, where="AND d.campaign_id = 7")
        suppressions("complaint", 2999)
        conn.execute("UPDATE campaigns SET holdout = 0.03 WHERE id IN (3, 4)")
    conn.execute("ANALYZE")
    conn.close()


def main() -> None:
    # An option of this bench alone (big_db.arguments parses the shared ones).
    answers = "--no-answers" not in sys.argv
    if not answers:
        sys.argv.remove("--no-answers")
    args = arguments(__doc__)
    with tempfile.TemporaryDirectory(prefix="listkit-bench-report-") as tmp:
        path = args.keep or Path(tmp) / "listkit.db"
        ensure(path, args.scale, deliveries=args.deliveries)
        if answers:
            add_answers(path)
        workspace = path.parent
        conn = sqlite3.connect(path)
        (deliveries,) = conn.execute("SELECT max(id) FROM deliveries").fetchone()

        query = "SELECT list_id, COUNT(*) FROM deliveries GROUP BY list_id"

        def baseline() -> None:
            conn.execute(query).fetchall()

        # The same query from a fresh process, for a like-for-like comparison with
        # the CLI, which pays for starting Python too.
        one_shot = [
            sys.executable,
            "-c",
            f"import sqlite3; sqlite3.connect({str(path)!r}).execute({query!r}).fetchall()",
        ]

        def baseline_process() -> None:
            subprocess.run(one_shot, check=True, env=env)

        cli = [sys.executable, "-m", "listkit", "--workspace", str(workspace)]
        cli += ["report", "--by", "list", "--json"]
        # An installed listkit has its modules compiled (pip does it): the command is
        # timed with theirs, as a user runs it, even where the environment says not to
        # write them (the first run writes them).
        env = {**os.environ, "LISTKIT_DB": str(path)}
        env.pop("PYTHONDONTWRITEBYTECODE", None)

        def listkit_cli() -> None:
            subprocess.run(cli, check=True, capture_output=True, env=env)

        db = open_db(path)

        def library() -> None:
            build_report(db, "list")

        baseline()
        listkit_cli()
        library()  # warm the page cache for all of them
        # Interleaved, round by round, so that a burst of load on a shared machine
        # falls on all four alike.
        times: dict[str, list[float]] = {"base": [], "proc": [], "cli": [], "lib": []}
        for _ in range(args.repeat):
            for name, fn in (
                ("proc", baseline_process),
                ("cli", listkit_cli),
                ("base", baseline),
                ("lib", library),
            ):
                times[name] += timed(fn, 1)
        rows = len(build_report(db, "list")["rows"])
        db.close()
        conn.close()
    print(f"{deliveries:,} deliveries; {args.repeat} rounds")
    print(f"{'':42}{'min s':>8}{'median s':>10}{'max s':>8}")
    for name, label in (
        ("proc", "same query, from a new python process"),
        ("cli", "listkit report --by list --json (CLI)"),
        ("base", "SELECT list_id, COUNT(*) GROUP BY"),
        ("lib", "build_report(db, list) (library)"),
    ):
        t = times[name]
        print(f"{label:42}{min(t):8.3f}{statistics.median(t):10.3f}{max(t):8.3f}")
    med = statistics.median
    goal = "2x" if deliveries <= 5_000_000 else "3x"
    print(
        f"ratios (median; goal <= {goal}): CLI / query from a new process "
        f"{med(times['cli']) / med(times['proc']):.2f}x; library / query in process "
        f"{med(times['lib']) / med(times['base']):.2f}x; {rows} list rows"
    )


if __name__ == "__main__":
    main()
