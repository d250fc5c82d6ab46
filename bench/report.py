"""Benchmark: `listkit report --by list --json` against one plain GROUP BY.

Builds the listkit database of ``bench/big_db.py`` (through ``open_db``, so with
listkit's schema and indexes) holding 1,000,000 subscribers on 20 lists, 50
campaigns with 5,000,000 deliveries and 50,000 sales (``--scale`` shrinks all
of it), then in the same run, on the same file, warm, best of several runs each:

- baseline: ``SELECT list_id, COUNT(*) FROM deliveries GROUP BY list_id`` in
  ``sqlite3``;
- listkit: the real ``listkit report --by list --json`` command (a
  subprocess: Python start-up included), and the library call alone.

Goal: the full report at most 3x the one query.

    .venv/bin/python bench/report.py [--scale 0.1] [--keep DB]
"""

from __future__ import annotations

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


def main() -> None:
    args = arguments(__doc__)
    with tempfile.TemporaryDirectory(prefix="listkit-bench-report-") as tmp:
        path = args.keep or Path(tmp) / "listkit.db"
        ensure(path, args.scale)
        workspace = path.parent
        conn = sqlite3.connect(path)

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
            subprocess.run(one_shot, check=True)

        cli = [
            sys.executable,
            "-m",
            "listkit",
            "--workspace",
            str(workspace),
            "report",
            "--by",
            "list",
            "--json",
        ]
        env_db = {"LISTKIT_DB": str(path)}

        def listkit_cli() -> None:
            import os

            subprocess.run(cli, check=True, capture_output=True, env={**os.environ, **env_db})

        db = open_db(path)

        def library() -> None:
            build_report(db, "list")

        baseline()
        listkit_cli()
        library()  # warm the page cache for all of them
        base = timed(baseline, args.repeat)
        base_proc = timed(baseline_process, args.repeat)
        lk = timed(listkit_cli, args.repeat)
        lib = timed(library, args.repeat)
        rows = len(build_report(db, "list")["rows"])
        db.close()
        conn.close()
    print(f"{'':40}{'best s':>8}{'median s':>10}")
    name = "same query, from a new python process"
    print(f"{name:40}{min(base_proc):8.3f}{statistics.median(base_proc):10.3f}")
    print(
        f"{'SELECT list_id, COUNT(*) GROUP BY':40}{min(base):8.3f}{statistics.median(base):10.3f}"
    )
    print(
        f"{'listkit report --by list --json (CLI)':40}{min(lk):8.3f}{statistics.median(lk):10.3f}"
    )
    name = "build_report(db, list) (library)"
    print(f"{name:40}{min(lib):8.3f}{statistics.median(lib):10.3f}")
    med = statistics.median
    print(
        f"ratios (median; goal <= 3x): CLI / query from a new process "
        f"{med(lk) / med(base_proc):.2f}x; library / query in process {med(lib) / med(base):.2f}x; "
        f"CLI / query in process {med(lk) / med(base):.2f}x; {rows} list rows"
    )


if __name__ == "__main__":
    main()
