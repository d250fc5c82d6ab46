"""Benchmark: bytes per delivery, and the time of the ``m020_lean_deliveries`` migration.

In one run, on databases of 1,000,000 subscribers and 5,000,000 deliveries
(``bench/big_db.py``; ``--scale`` shrinks it):

- before: the database as git revision ``--before`` (default ``ec47523``, the
  last before m020) builds it, with that revision's own code and big_db.py;
- migrated: that same file opened by today's listkit, which converts it in
  place (m020): the time it takes, against a bare ``sqlite3`` copy of the
  same rows into a table with the same columns in one ``INSERT ... SELECT``
  (no index, one transaction, on the same file) as the baseline;
- fresh: the database today's big_db.py builds (tokens derived, none stored).

Bytes per delivery count the ``deliveries`` table and all its indexes, page
by page, from SQLite's ``dbstat`` (a page counts whole: what the file holds).

    .venv/bin/python bench/deliveries.py [--scale 0.1] [--before REV] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from big_db import build  # the database bench/report.py and bench/audience.py use
from serve import extract  # one extract of a revision's code

from listkit.db import open_db

ROOT = Path(__file__).resolve().parent.parent


def footprint(path: Path) -> tuple[int, int, int]:
    """(deliveries, bytes of the table, bytes of its indexes)."""
    conn = sqlite3.connect(path)
    try:
        (rows,) = conn.execute("SELECT count(*) FROM deliveries").fetchone()
        indexes = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries'"
            )
        ]
        sizes = dict(
            conn.execute(
                "SELECT name, sum(pgsize) FROM dbstat WHERE name IN "
                f"({', '.join('?' * (len(indexes) + 1))}) GROUP BY name",
                ["deliveries", *indexes],
            )
        )
    finally:
        conn.close()
    table = sizes.pop("deliveries", 0)
    return rows, table, sum(sizes.values())


def show(label: str, path: Path, before: float | None = None) -> float:
    rows, table, indexes = footprint(path)
    per = (table + indexes) / rows
    ratio = f"  {per / before:.2f}x before" if before else ""
    print(
        f"{label:<9} {rows:>10,} deliveries  table {table / 1e6:7.1f} MB  indexes "
        f"{indexes / 1e6:7.1f} MB  {per:6.1f} bytes/delivery{ratio}",
        flush=True,
    )
    return per


def build_before(rev: str, path: Path, scale: float, code: Path) -> None:
    """The database of ``bench/big_db.py`` at ``rev``, built by ``rev``'s listkit."""
    if not code.exists():
        extract(rev, code)
        big_db = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:bench/big_db.py"],
            check=True,
            capture_output=True,
        ).stdout
        (code / "big_db.py").write_bytes(big_db)
    script = f"import big_db, pathlib; big_db.build(pathlib.Path({str(path)!r}), {scale!r})"
    env = {**os.environ, "PYTHONPATH": str(code)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=code)


def baseline_copy(path: Path) -> float:
    """Seconds of one bare INSERT ... SELECT of every delivery into a plain table."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("CREATE TABLE bench_copy AS SELECT * FROM deliveries WHERE 0")
        start = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute("INSERT INTO bench_copy SELECT * FROM deliveries")
        conn.execute("COMMIT")
        took = time.perf_counter() - start
        conn.execute("DROP TABLE bench_copy")
        return took
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--before", default="ec47523", help="git revision before m020")
    parser.add_argument("--rounds", type=int, default=1, help="migrations timed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="listkit-bench-deliveries-") as tmp:
        tmp_path = Path(tmp)
        fresh = tmp_path / "fresh" / "listkit.db"
        fresh.parent.mkdir()
        build(fresh, args.scale)
        migrations, baselines = [], []
        for n in range(args.rounds):
            old = tmp_path / f"old{n}" / "listkit.db"
            old.parent.mkdir()
            build_before(args.before, old, args.scale, tmp_path / "code")
            if n == 0:
                before = show("before", old)
            baselines.append(baseline_copy(old))
            start = time.perf_counter()
            open_db(old).close()  # today's listkit: m020 converts it in place
            migrations.append(time.perf_counter() - start)
            if n == 0:
                show("migrated", old, before)
                show("fresh", fresh, before)
            old.unlink()
            print(
                f"round {n + 1}: migration {migrations[-1]:.1f} s, bare copy "
                f"{baselines[-1]:.1f} s: {migrations[-1] / baselines[-1]:.1f}x",
                flush=True,
            )
        ratios = sorted(m / b for m, b in zip(migrations, baselines, strict=True))
        print(
            f"migration of {args.scale * 5_000_000:,.0f} deliveries: min/median/max "
            f"{min(migrations):.1f}/{statistics.median(migrations):.1f}/{max(migrations):.1f} s; "
            f"against the bare copy {ratios[0]:.1f}/{statistics.median(ratios):.1f}/"
            f"{ratios[-1]:.1f}x"
        )


if __name__ == "__main__":
    main()
