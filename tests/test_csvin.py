"""Every CSV listkit reads: one reader, physical line numbers, no process-wide state."""

import io
import json
import subprocess
import sys


def test_importing_and_using_the_readers_leaves_the_process_field_size_limit_alone():
    # A fresh interpreter: another test may already have imported the modules.
    code = """
import csv, io
before = csv.field_size_limit()
import listkit.audience.imports, listkit.sales.sales, listkit.cli
from listkit.csvin import records
text = io.StringIO("email,bio\\na@example.com," + "x" * 500_000 + "\\n", newline="")
rows = list(records(text, "t"))
assert rows[1][0] == 2 and len(rows[1][1][1]) == 500_000, rows[1][0]
print(before, csv.field_size_limit())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = out.stdout.split()
    assert before == after == str(128 * 1024)


def test_a_field_over_the_readers_limit_rejects_its_line_and_keeps_the_next_rows():
    from listkit.csvin import records

    text = io.StringIO("email,bio\na@example.com," + "x" * 1_100_000 + "\nb@example.com,B\n")
    got = list(records(text, "t"))
    assert got[1] == (2, "too large: a field is over 1 MB (or a quote is not closed)")
    assert got[2] == (3, ["b@example.com", "B"])


def test_sales_import_rejects_an_unclosed_quote_and_keeps_the_orders_after_it(run, tmp_path):
    f = tmp_path / "orders.csv"
    f.write_text(
        "order,email,amount,currency,date\n"
        '1,"a@example.com,5,USD,2026-11-01\n'
        "2,b@example.com,5,USD,2026-11-01\n"
        "3,c@example.com,5,USD,2026-11-01\n"
    )
    s = json.loads(run("sales", "import", str(f), "--format", "csv", "--json").output)
    assert (s["imported"], s["rejected"]) == (2, 1)
    assert s["errors"][0]["line"] == 2 and "quote" in s["errors"][0]["reason"]


def test_suppress_import_names_the_physical_line_of_a_record_after_a_multiline_one(run, tmp_path):
    table = tmp_path / "s.csv"
    table.write_text('email,note\na@example.com,"two\nlines"\nnot valid,x\n')
    result = run("suppress", "import", str(table), "--json")
    summary = json.loads(result.output)
    assert summary["rejected"] == 1
    assert summary["errors"][0]["line"] == 4


def test_suppress_import_rejects_an_unclosed_quote_without_losing_the_other_addresses(
    run, tmp_path
):
    table = tmp_path / "s.csv"
    table.write_text('email,note\na@example.com,"open\nb@example.com,x\nc@example.com,y\n')
    result = run("suppress", "import", str(table), "--json")
    summary = json.loads(result.output)
    assert (summary["suppressed"], summary["rejected"]) == (2, 1)
    assert summary["errors"][0]["line"] == 2
    assert summary["errors"][0]["reason"] == "unclosed quote"
