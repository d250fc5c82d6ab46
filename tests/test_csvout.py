"""Every CSV listkit writes: a cell a spreadsheet would run as a formula is neutralised."""

import csv
import io
import json

import pytest

from tests.world import World

FORMULAS = [
    '=HYPERLINK("http://evil.example/?x","click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1)",
    "\t=1+1",
    "\r=1+1",
]


def read_csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("value", FORMULAS)
def test_a_cell_starting_like_a_formula_gets_a_leading_apostrophe(value):
    from listkit.csvout import safe_cell

    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["-5.00", "+3", "-12", "0.5", "ann@example.com", "", "'x", "a=b"])
def test_numbers_and_plain_text_are_written_as_they_are(value):
    from listkit.csvout import safe_cell

    assert safe_cell(value) == value


def test_subscribers_ls_csv_neutralises_names_and_fields_from_subscribers(run):
    run("lists", "create", "blog")
    run("subscribers", "add", "ann@example.com", "--list", "blog", "--name", FORMULAS[0])
    run("subscribers", "add", "--list", "blog", "--field", "plan=@SUM(1)", "--", "-bob@example.com")
    out = run("subscribers", "ls", "--list", "blog", "--csv").output
    rows = {r["email"]: r for r in read_csv(out)}
    assert rows["ann@example.com"]["name"] == "'" + FORMULAS[0]
    assert "'-bob@example.com" in rows
    assert json.loads(rows["'-bob@example.com"]["fields"]) == {"plan": "@SUM(1)"}
    # JSON is for scripts: the exact values.
    data = json.loads(run("subscribers", "ls", "--list", "blog", "--json").output)
    assert {r["email"] for r in data} == {"ann@example.com", "-bob@example.com"}


def test_sales_ls_csv_neutralises_text_and_keeps_negative_amounts_numeric(run, ws):
    run(
        "sales",
        "add",
        "--order",
        "=1+1",
        "--email",
        "ann@example.com",
        "--amount",
        "29.00",
        "--currency",
        "USD",
        "--coupon",
        "@SUM(1)",
    )
    ws.db.execute("UPDATE sales SET amount = -500")
    ws.db.conn.commit()
    row = read_csv(run("sales", "ls", "--csv").output)[0]
    assert (row["order"], row["coupon"], row["amount"]) == ("'=1+1", "'@SUM(1)", "-500")


def test_import_errors_file_neutralises_the_rejected_rows_columns(run, tmp_path):
    run("lists", "create", "blog")
    f = tmp_path / "people.csv"
    f.write_text(f"email,name\n=cmd|' /C calc'!A0,{FORMULAS[3]}\nok@example.com,Ok\n")
    errors = tmp_path / "rejected.csv"
    run("subscribers", "import", str(f), "--list", "blog", "--errors", str(errors))
    rows = list(csv.reader(errors.open()))
    assert rows[1][0] == "2"
    assert rows[1][2:] == ["'=cmd|' /C calc'!A0", "'@SUM(1)"]


def test_report_csv_goes_through_the_same_writer(run, ws, monkeypatch):
    import listkit.csvout

    w = World(ws.db)
    c = w.campaign("t")
    w.deliver(c, "a@example.com", "blog")
    seen = []
    real = listkit.csvout.safe_cell
    monkeypatch.setattr(listkit.csvout, "safe_cell", lambda v: seen.append(v) or real(v))
    run("report", "--csv")
    assert "blog" in seen


def test_import_errors_file_holds_personal_data_and_is_created_0600(run, tmp_path):
    import os
    import stat

    run("lists", "create", "blog")
    f = tmp_path / "people.csv"
    f.write_text("email,name\nnot-an-address,Ann\n")
    errors = tmp_path / "rejected.csv"
    errors.write_text("old")
    errors.chmod(0o644)
    run("subscribers", "import", str(f), "--list", "blog", "--errors", str(errors))
    assert stat.S_IMODE(os.stat(errors).st_mode) == 0o600
    assert "not-an-address" in errors.read_text()


def test_an_errors_file_that_cannot_be_written_is_named_in_the_error(run, tmp_path):
    run("lists", "create", "blog")
    f = tmp_path / "people.csv"
    f.write_text("email\nann@example.com\n")
    where = tmp_path / "no-such-folder" / "rejected.csv"
    result = run(
        "subscribers", "import", str(f), "--list", "blog", "--errors", str(where), ok=False
    )
    assert result.output == (f"Error: {where}: cannot be written (No such file or directory)\n")
