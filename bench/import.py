"""Benchmark: `listkit subscribers import` against a bare sqlite3 executemany.

Generates a CSV of N rows (address, first and last name, one custom field),
then, in the same run:

- baseline: a bare ``sqlite3`` ``executemany`` of the same rows (already parsed,
  no validation) into an equivalent table with a unique key, in one
  transaction, with the same pragmas listkit uses (WAL, synchronous=FULL);
- bare into listkit's tables: the same rows, parsed beforehand, inserted bare
  into a database listkit made, a subscriber and a membership each with their
  indexes (as an import into a new list writes them), to tell what listkit's
  tables cost from what its code costs;
- listkit: the real ``listkit subscribers import`` command in a subprocess,
  reading and validating the file, writing subscribers and memberships.

The two alternate for ``--rounds`` rounds (3 by default; this machine's disk
and CPU speed drift between runs) and the ratio is of the medians. Prints rows
per second for both, the ratio, and the peak RSS of listkit's processes (a
large file is read in a second process while the first writes).
Goal: ratio >= 0.6, peak RSS < 200 MB.

On a shared machine the wall-clock ratio moves with the load, so the run also
prints the load average before and after, and the CPU seconds of both sides
(listkit's two processes added up; the bare side's parsing, which is not
timed, is left out): a ratio of CPU seconds that the load moves less.

    .venv/bin/python bench/import.py            # 1,000,000 rows, 3 rounds
    .venv/bin/python bench/import.py --rows 100000 --rounds 1
    .venv/bin/python bench/import.py --shape mailchimp   # a Mailchimp export: times and IPs

``--shape mailchimp`` writes the rows as Mailchimp's subscribed export (the
same addresses, names and a merge field, plus opt-in and confirm times and
IPs, which listkit keeps as consent evidence, times converted to UTC).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from listkit.audience.imports import MAILCHIMP_SUBSCRIBED

FIRST = ["Ann", "Bob", "Chloé", "Dmitri", "Eve", "Fatima", "Günter", "Hana", "Ivan", "Jo"]
LAST = ["Lee", "Smith", "Müller", "García", "Kim", "Novak", "Okafor", "Rossi", "Tanaka", "Ng"]
ASCII = str.maketrans("éüí", "eui")
DOMAINS = ["example.com", "mail.example.org", "example.net", "shop.example.co.uk"]


# The importer's subscribed-export columns, with an audience merge field (PLAN)
# where Mailchimp puts merge fields, after the names, and TAGS last: the
# importer keeps both as custom fields, so neither is in its list.
MAILCHIMP = [*MAILCHIMP_SUBSCRIBED[:3], "PLAN", *MAILCHIMP_SUBSCRIBED[3:], "TAGS"]


def generate(path: Path, rows: int, shape: str = "csv") -> None:
    rng = random.Random(42)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            MAILCHIMP if shape == "mailchimp" else ["email", "first_name", "last_name", "plan"]
        )
        for i in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            # Addresses are ASCII, as nearly all are; names keep their accents.
            local = f"{first}.{last}".lower().translate(ASCII)
            email = f"{local}.{i}@{rng.choice(DOMAINS)}"
            plan = rng.choice(["free", "pro", "team"])
            if shape == "mailchimp":
                t = f"2024-{1 + i % 12:02d}-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:{i % 59:02d}"
                ip = f"198.51.100.{i % 250}"
                w.writerow([email, first, last, plan, 2, t, ip, t, ip, *[""] * 7, t, i, "", "", ""])
            else:
                w.writerow([email, first, last, plan])


def baseline(db_path: Path, csv_path: Path) -> tuple[float, float]:
    """Seconds and CPU seconds for the bare insert of the file's rows, parsed
    beforehand (not timed).

    Runs in its own process (see main), so that the rows it holds do not
    count in listkit's peak RSS.
    """
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        rows = [
            (email, email.casefold(), f"{first} {last}", f'{{"plan": "{plan}"}}')
            for email, first, last, plan, *_ in reader
        ]
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE subscribers (id INTEGER PRIMARY KEY, email TEXT NOT NULL, "
        "key TEXT NOT NULL UNIQUE, name TEXT, fields TEXT)"
    )
    start, cpu = time.perf_counter(), time.process_time()
    with conn:
        conn.executemany(
            "INSERT INTO subscribers (email, key, name, fields) VALUES (?, ?, ?, ?)", rows
        )
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    conn.close()
    return elapsed, cpu


def schema_baseline(db_path: Path, csv_path: Path) -> tuple[float, float]:
    """Seconds and CPU seconds for a bare insert of the same rows into listkit's own
    tables: a subscriber row and a membership row for each, with their indexes,
    as an import of a new list writes them (rows parsed beforehand, not timed).

    The gap between this and the bare baseline is what listkit's schema costs;
    the gap between this and listkit is what its code costs (reading,
    validating, the second process).
    """
    from listkit.db import open_db

    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        rows = [
            (email, email.casefold(), f"{first} {last}", first, last, f'{{"plan": "{plan}"}}')
            for email, first, last, plan, *_ in reader
        ]
    db = open_db(db_path)
    db.execute("INSERT INTO lists (slug, created) VALUES ('bench', '2026-01-01T00:00:00+00:00')")
    db.execute("INSERT INTO imports (at, source, list_id) VALUES ('2026-01-01', 'import:x', 1)")
    db.conn.commit()
    conn = db.conn
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("PRAGMA cache_size = -65536")  # as listkit's import has it
    start, cpu = time.perf_counter(), time.process_time()
    conn.execute("BEGIN IMMEDIATE")
    for i in range(0, len(rows), 1000):
        conn.executemany(
            "INSERT INTO subscribers (email, key, name, first_name, last_name, fields, "
            "import_id) VALUES (?, ?, ?, ?, ?, ?, 1)",
            rows[i : i + 1000],
        )
        # Each chunk's memberships while its subscribers' pages are in the cache;
        # OR ROLLBACK as listkit's: no statement journal to undo half a statement.
        conn.execute(
            "INSERT OR ROLLBACK INTO memberships (list_id, subscriber_id, status, import_id) "
            "SELECT 1, id, 'active', 1 FROM subscribers WHERE id > ?",
            [i],
        )
    conn.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    conn.close()
    return elapsed, cpu


def listkit_import(workdir: Path, csv_path: Path) -> tuple[float, float, int, str]:
    """Seconds, CPU seconds (both processes), peak RSS (the larger of listkit's two
    processes) and the summary line."""
    listkit = [sys.executable, "-m", "listkit", "--workspace", str(workdir)]
    subprocess.run([*listkit, "init", str(workdir)], check=True, capture_output=True)
    subprocess.run([*listkit, "lists", "create", "bench"], check=True, capture_output=True)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*listkit, "subscribers", "import", str(csv_path), "--list", "bench"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    output = proc.stdout.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"listkit import failed:\n{output}")
    cpu = usage.ru_utime + usage.ru_stime  # the reader process's included: it was joined
    return elapsed, cpu, usage.ru_maxrss * 1024, output.strip()


def in_own_process(flag: str, csv_path: Path, db_path: Path) -> tuple[float, float]:
    """A baseline's seconds and CPU seconds, run in a process of its own (see baseline)."""
    out = subprocess.run(
        [sys.executable, __file__, flag, str(csv_path), str(db_path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    seconds, cpu = map(float, out.split())
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", choices=("csv", "mailchimp"), default="csv")
    parser.add_argument("--baseline-only", nargs=2, metavar=("CSV", "DB"), help=argparse.SUPPRESS)
    parser.add_argument("--schema-only", nargs=2, metavar=("CSV", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_only:
        print(*baseline(Path(args.baseline_only[1]), Path(args.baseline_only[0])))
        return
    if args.schema_only:
        print(*schema_baseline(Path(args.schema_only[1]), Path(args.schema_only[0])))
        return
    base_times, lk_times, base_cpus, lk_cpus, rss = [], [], [], [], 0
    schema_times = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="listkit-bench-import-") as tmp:
        tmp_path = Path(tmp)
        csv_path = tmp_path / "subscribers.csv"
        print(f"generating {args.rows:,} rows ...", flush=True)
        generate(csv_path, args.rows, args.shape)
        size = csv_path.stat().st_size
        print(f"file: {args.rows:,} rows, {size / 1e6:.1f} MB")
        for n in range(1, args.rounds + 1):
            bare_db, schema_db = tmp_path / "bare.db", tmp_path / "schema.db"
            bare_s, bare_cpu = in_own_process("--baseline-only", csv_path, bare_db)
            base_times.append(bare_s)
            base_cpus.append(bare_cpu)
            schema_s, _ = in_own_process("--schema-only", csv_path, schema_db)
            schema_times.append(schema_s)
            workdir = tmp_path / "ws"
            lk_s, lk_cpu, lk_rss, output = listkit_import(workdir, csv_path)
            lk_times.append(lk_s)
            lk_cpus.append(lk_cpu)
            rss = max(rss, lk_rss)
            for path in (bare_db, schema_db, *tmp_path.glob("bare.db-*")):
                path.unlink()
            for path in tmp_path.glob("schema.db-*"):
                path.unlink()
            shutil.rmtree(workdir)
            print(
                f"round {n}: bare {bare_s:.2f} s ({bare_cpu:.2f} CPU s), "
                f"bare into listkit's tables {schema_s:.2f} s, "
                f"listkit {lk_s:.2f} s ({lk_cpu:.2f} CPU s)",
                flush=True,
            )
    base_s, lk_s = statistics.median(base_times), statistics.median(lk_times)
    base_cpu, lk_cpu = statistics.median(base_cpus), statistics.median(lk_cpus)
    base_rate, lk_rate = args.rows / base_s, args.rows / lk_s
    print(f"listkit output: {output}")
    print(f"medians of {args.rounds} rounds:")
    print(f"{'':28}{'seconds':>10}{'rows/s':>12}")
    print(f"{'bare sqlite3 executemany':28}{base_s:10.2f}{base_rate:12,.0f}")
    schema_s = statistics.median(schema_times)
    print(f"{'bare, into listkit tables':28}{schema_s:10.2f}{args.rows / schema_s:12,.0f}")
    print(f"{'listkit subscribers import':28}{lk_s:10.2f}{lk_rate:12,.0f}")
    print(f"ratio (listkit / bare): {lk_rate / base_rate:.2f}x   (goal >= 0.6x)")
    print(
        f"  of which the tables (bare into listkit's / bare): {base_s / schema_s:.2f}x; "
        f"the code (listkit / bare into listkit's): {schema_s / lk_s:.2f}x"
    )
    print(f"CPU seconds: bare {base_cpu:.2f}, listkit {lk_cpu:.2f}: ratio {base_cpu / lk_cpu:.2f}x")
    print(f"listkit peak RSS: {rss / 2**20:.0f} MB   (goal < 200 MB)")
    load = " ".join(f"{x:.1f}" for x in (*load_before, *os.getloadavg()))
    print(f"load average (1, 5, 15 min) before and after: {load}  ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
