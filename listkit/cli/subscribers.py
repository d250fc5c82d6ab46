"""CLI commands: subscribers, unsubscribe, suppress."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import click

from listkit import csvin, csvout
from listkit.addresses import normalize_address
from listkit.audience.audiences import matching_subscribers, rules_from_options
from listkit.audience.enrollments import reader_enrollments
from listkit.audience.imports import FORMATS, import_subscribers
from listkit.audience.subscribers import (
    add_subscriber,
    describe_unsubscribe,
    find_subscriber,
    get_subscriber,
    list_members,
    set_subscriber,
    unsubscribe,
    unsubscribe_by_link,
)
from listkit.audience.suppressions import list_suppressions, suppress, suppress_many
from listkit.cli import cli, pass_workspace
from listkit.cli.output import (
    emit_csv,
    emit_json,
    emit_table,
    format_option,
    input_name,
    json_option,
)
from listkit.errors import InputError
from listkit.sales.money import format_amounts, format_minor
from listkit.sales.stats import purchases
from listkit.text import one_line
from listkit.vocab import SUPPRESSION_REASONS
from listkit.workspace import Workspace

RESULT_TEXT = {
    "added": "Added {email} to {list}.",
    "joined": "Added {email} (already known) to {list}.",
    "updated": "Updated {email} on {list}.",
    "suppressed": "{email} is suppressed: kept off {list}, not made active.",
    "unsubscribed": "{email} unsubscribed from {list} earlier: not made active again.",
    "bounced": "{email} bounced on {list} earlier: not made active again.",
    "complained": "{email} complained on {list} earlier: not made active again.",
    "pending": "{email} has not confirmed on {list} yet: not made active.",
    "pruned": "{email} was pruned from {list} as silent: not made active again.",
}


def _fields(values: tuple[str, ...]) -> dict[str, str]:
    fields = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"--field takes key=value, not {item!r}")
        fields[key.strip()] = value
    return fields


def _name_options(command):
    """--name, --first-name, --last-name and --field, as add and set take them."""
    for option in reversed(
        (
            click.option("--name", help="The full name (first and last are split from it)."),
            click.option("--first-name", help="The first name; the name becomes first and last."),
            click.option("--last-name", help="The last name; the name becomes first and last."),
            click.option(
                "--field", "fields", multiple=True, metavar="KEY=VALUE", help="A custom field."
            ),
        )
    ):
        command = option(command)
    return command


@cli.group()
def subscribers() -> None:
    """Add, import, list and show subscribers."""


@subscribers.command("add")
@click.argument("email")
@click.option("--list", "list_", required=True, help="The list to add to.")
@_name_options
@pass_workspace
def subscribers_add(
    ws: Workspace,
    email: str,
    list_: str,
    name: str | None,
    first_name: str | None,
    last_name: str | None,
    fields: tuple[str, ...],
) -> None:
    """Add EMAIL to a list (or update it). Suppressed addresses stay suppressed.

    \b
    Examples:
        listkit subscribers add ann@example.com --list blog --name Ann --field plan=pro
        listkit subscribers add uma@example.com --list blog --first-name Uma --last-name Smith
    """
    result = add_subscriber(
        ws.db,
        email,
        list_,
        name=name,
        first_name=first_name,
        last_name=last_name,
        fields=_fields(fields),
    )
    click.echo(RESULT_TEXT[result["result"]].format(**result))


@subscribers.command("set")
@click.argument("subscriber")
@_name_options
@pass_workspace
def subscribers_set(
    ws: Workspace,
    subscriber: str,
    name: str | None,
    first_name: str | None,
    last_name: str | None,
    fields: tuple[str, ...],
) -> None:
    """Change the name or custom fields of SUBSCRIBER (an address, or the id an
    error message names). Lists and consent are not touched; an empty value
    (--last-name "") clears a name.

    \b
    Examples:
        listkit subscribers set uma@example.com --first-name Uma --last-name Smith
        listkit subscribers set 42 --name "Ann Lee"
        listkit subscribers set ann@example.com --field plan=pro
    """
    if name is None and first_name is None and last_name is None and not fields:
        raise click.UsageError("give --name, --first-name, --last-name or --field")
    result = set_subscriber(
        ws.db,
        subscriber,
        name=name,
        first_name=first_name,
        last_name=last_name,
        fields=_fields(fields),
    )

    def shown(value: str | None, what: str) -> str:
        return f"{what} {value!r}" if value else f"no {what}"

    click.echo(
        f"Updated {result['email']}: {shown(result['name'], 'name')} "
        f"({shown(result['first_name'], 'first')}, {shown(result['last_name'], 'last')})."
    )


def _same_file(file, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(file.fileno()), os.stat(path))
    except (OSError, ValueError):  # no such file yet, or an input without a descriptor
        return False


@subscribers.command("import")
@click.argument("file", type=click.File("rb"))
@click.option("--list", "list_", required=True, help="The list to import into.")
@format_option(FORMATS)
@click.option("--email-column", help="Generic CSV: the column holding the address.")
@click.option("--name-column", help="Generic CSV: the column holding the name.")
@click.option("--encoding", default="utf-8", show_default=True, help="The file's text encoding.")
@click.option(
    "--errors",
    "errors_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every rejected row here, with its line number and reason.",
)
@json_option
@pass_workspace
def subscribers_import(
    ws: Workspace,
    file,
    list_: str,
    fmt: str,
    email_column: str | None,
    name_column: str | None,
    encoding: str,
    errors_file: Path | None,
    json_: bool,
) -> None:
    """Import subscribers from FILE (or - for stdin) into a list.

    Recognises Mailchimp (subscribed, unsubscribed, cleaned), Substack, Kit,
    Ghost and Beehiiv exports by their headers; any other CSV needs a column
    called email (or --email-column). Unsubscribed, cleaned and bounced rows
    become suppressions. A bad row is reported and never stops the good ones.

    \b
    Examples:
        listkit subscribers import members_export.csv --list blog
        listkit subscribers import people.csv --list blog --email-column Mail --errors bad.csv
        listkit subscribers import old.csv --list blog --encoding latin-1
    """
    name = input_name(file)
    if errors_file is not None and _same_file(file, errors_file):
        # Opening it for writing would empty the export before it is read.
        raise InputError(
            f"--errors {errors_file} is the file being imported: name another file for the "
            "rejected rows; nothing was imported"
        )
    if errors_file is not None:
        ws.refuse_own_file(errors_file, "--errors")
    errors_out = csvout.create(errors_file) if errors_file else None
    try:
        summary = import_subscribers(
            ws.db,
            file,
            list_,
            name=name,
            fmt=fmt,
            encoding=encoding,
            email_column=email_column,
            name_column=name_column,
            errors_to=errors_out,
            errors_name=str(errors_file) if errors_file else None,
        )
    finally:
        if errors_out is not None:
            # The import flushed it before committing; a failure to write it
            # has already been reported (and nothing was imported).
            with contextlib.suppress(OSError):
                errors_out.close()
    if errors_file:
        summary.errors_file = str(errors_file)
    if json_:
        emit_json(summary.as_dict())
        return
    s = summary
    skipped = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in s.skipped.items() if n)
    click.echo(
        f"{s.file} ({s.format}) -> {s.list}: {s.imported} imported, {s.updated} updated, "
        + (f"{s.pending} pending (not mailed until they confirm), " if s.pending else "")
        + f"{s.suppressed} suppressed, {s.rejected} rejected"
        + (f"; skipped {skipped}" if skipped else "")
    )
    for err in s.errors:
        click.echo(f"  line {err['line']}: {err['reason']}", err=True)
    if s.rejected > len(s.errors):
        hint = f" (all in {errors_file})" if errors_file else "; use --errors FILE to see them all"
        click.echo(f"  ... {s.rejected - len(s.errors)} more rejected{hint}", err=True)


@subscribers.command("ls")
@click.option("--list", "list_", help="The list to show (required without --where).")
@click.option(
    "--where",
    "where",
    multiple=True,
    metavar="RULE=VALUE",
    help="Audience rule, as in a campaign's [where] (repeat to combine; a|b for either).",
)
@json_option
@click.option("--csv", "csv_", is_flag=True, help="Output CSV.")
@pass_workspace
def subscribers_ls(
    ws: Workspace, list_: str | None, where: tuple[str, ...], json_: bool, csv_: bool
) -> None:
    """Show the members of a list, with status and consent evidence; or the
    subscribers audience rules select (--where), to look at an audience first.

    \b
    Examples:
        listkit subscribers ls --list blog --csv > blog.csv
        listkit subscribers ls --list blog --where not_bought=anything --where field.plan=pro
        listkit subscribers ls --where mailed_by=launch --where not_clicked_in=launch
    """
    if where:
        _ls_where(ws, list_, where, json_, csv_)
        return
    if list_ is None:
        raise click.UsageError("name a list with --list, or select with --where")
    rows = list_members(ws.db, list_)
    columns = ["email", "name", "status", "joined", "consent_at", "confirmed_at", "consent_ip"]
    if json_:
        emit_json(list(rows))
    elif csv_:
        emit_csv(rows, [*columns, "consent_source", "fields"])
    else:
        emit_table(list(rows), columns[:4], empty=f"List {list_} has no members.")


def _ls_where(
    ws: Workspace, list_: str | None, where: tuple[str, ...], json_: bool, csv_: bool
) -> None:
    rows = matching_subscribers(ws.db, rules_from_options(where), list_, ws.offers_dir)
    columns = ["email", "name", "lists", "signed_up", "source", "suppressed"]
    if json_:
        emit_json(rows)
    elif csv_:
        emit_csv(rows, [*columns, "fields"])
    else:
        emit_table(rows, columns, empty="No subscriber matches.")
        click.echo(f"{len(rows)} subscribers match.")


@subscribers.command("show")
@click.argument("email")
@json_option
@pass_workspace
def subscribers_show(ws: Workspace, email: str, json_: bool) -> None:
    """Show one subscriber: fields, lists, consent, suppression, deliveries, purchases
    and lifetime revenue.

    \b
    Example:
        listkit subscribers show ann@example.com
    """
    sub = get_subscriber(ws.db, email)
    if sub.get("id") is not None:
        sid = sub.pop("id")
        sub.update(purchases(ws.db, sid))
        sub["sequences"] = reader_enrollments(ws.db, sid)
    if json_:
        emit_json(sub)
        return
    click.echo(f"{sub['email']}" + (f" ({sub['name']})" if sub.get("name") else ""))
    if sub["suppressed"]:
        s = sub["suppressed"]
        by = f", campaign {s['campaign']}" if s["campaign"] else ""
        click.echo(f"  SUPPRESSED: {s['reason']} since {s['at']}{by}")
    for key, value in (sub.get("fields") or {}).items():
        click.echo(f"  {key}: {value}")
    for m in sub["lists"]:
        consent = ", ".join(
            f"{k} {m[k]}" for k in ("consent_at", "confirmed_at", "consent_ip") if m.get(k)
        )
        click.echo(f"  list {m['list']}: {m['status']}" + (f" ({consent})" if consent else ""))
    if sub["deliveries"]:
        click.echo("  deliveries: " + ", ".join(f"{n} {s}" for s, n in sub["deliveries"].items()))
    for o in sub.get("purchases", []):
        via = f", campaign {o['campaign']}" if o["campaign"] else ""
        paid = format_minor(o["amount"] - o["refunded"], o["currency"])
        click.echo(
            f"  bought {o['product'] or '?'}: {paid}"
            f" on {o['at'][:10]} (order {o['order']}, {o['status']}{via})"
        )
    if sub.get("lifetime_revenue"):
        click.echo(f"  lifetime revenue: {format_amounts(sub['lifetime_revenue'])}")
    for e in sub.get("sequences", []):
        passed = f"passed {e['step']}" if e["step"] else "passed no step yet"
        if e["state"] == "active":
            where = f"{passed}, next {e['next_step']} due {e['next_due']}"
        elif e["state"] == "exited":
            where = f"exited ({e['exit_reason']}), {passed}"
        else:
            where = e["state"].replace("_", " ")
        click.echo(f"  sequence {e['sequence']}: {where}")


@cli.command("unsubscribe")
@click.argument("email")
@click.option("--list", "list_", help="Only from this list (default: from everything).")
@click.option(
    "--everything", is_flag=True, help="With a link: from every list, and suppress the address."
)
@pass_workspace
def unsubscribe_cmd(ws: Workspace, email: str, list_: str | None, everything: bool) -> None:
    """Unsubscribe EMAIL from one list, or from everything (which also suppresses it).

    EMAIL may also be a one-click unsubscribe link from a message listkit sent
    (its signature is checked). It does what the link does for its reader:
    leaves the list the message was sent through, stops that campaign and its
    follow-ups for them on every list, and records the campaign as the cause;
    --everything leaves every list and suppresses the address. It says what
    happened in the words the unsubscribe page uses.

    \b
    Examples:
        listkit unsubscribe ann@example.com --list blog
        listkit unsubscribe ann@example.com
        listkit unsubscribe https://example.com/listkit/u/abcdefghijklmnop/SIGNATURE
        listkit unsubscribe https://example.com/listkit/u/abcdefghijklmnop/SIGNATURE --everything
    """
    if list_ is not None and everything:
        raise click.UsageError("give --list or --everything, not both")
    if email.startswith(("http://", "https://")):
        if list_ is not None:
            raise click.UsageError(
                "a link unsubscribes from the list its message was sent through: drop --list "
                "(or add --everything)"
            )
        result = unsubscribe_by_link(ws.db, ws.settings.secret_key(), email, everything=everything)
        heading, lines = describe_unsubscribe(result)
        click.echo(f"{result['email']}: {heading}.")
        for line in lines:
            click.echo(f"  {line}")
        if not (result["everything"] or result["suppressed"]):
            click.echo("  (listkit unsubscribe URL --everything: from every list, and suppressed)")
        return
    if find_subscriber(ws.db, email) is None:
        # A typo must not pass for success while the real address stays mailable.
        try:
            normalize_address(email)
        except InputError as e:
            raise InputError(
                f"{email.strip()!r} is not an email address ({e}): nothing was unsubscribed"
            ) from None
    result = unsubscribe(ws.db, email, list_)
    where = ", ".join(result["lists"]) or "no active list"
    click.echo(f"Unsubscribed {result['email']} from {where}.")
    if list_ is None:
        click.echo(
            f"{result['email']} is suppressed: no campaign will mail it."
            if result["suppressed"]
            else f"{result['email']} was already suppressed."
        )


reason_option = click.option(
    "--reason",
    type=click.Choice(SUPPRESSION_REASONS),
    default="manual",
    show_default=True,
    help="Why the address is suppressed, as reports count it.",
)


@cli.group("suppress")
def suppress_group() -> None:
    """Addresses that never receive a campaign, whatever a list says."""


@suppress_group.command("add")
@click.argument("email")
@reason_option
@pass_workspace
def suppress_add(ws: Workspace, email: str, reason: str) -> None:
    """Suppress EMAIL.

    \b
    Example:
        listkit suppress add angry@example.com --reason complaint
    """
    address = normalize_address(email)
    if suppress(ws.db, address, reason, source="manual"):
        click.echo(f"Suppressed {address} ({reason}).")
    else:
        click.echo(f"{address} was already suppressed.")


@suppress_group.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8-sig"))
@reason_option
@json_option
@pass_workspace
def suppress_import(ws: Workspace, file, reason: str, json_: bool) -> None:
    """Suppress every address in FILE: one per line, or a CSV with an email column.

    \b
    Example:
        listkit suppress import bounces.txt --reason hard_bounce
    """
    text = file.read()
    lines = text.splitlines()
    rows: list[tuple[int, str]] = []
    broken: list[dict] = []
    if lines and "," in lines[0]:
        records = csvin.records(io.StringIO(text, newline=""), file.name)
        _, first = next(records)
        if isinstance(first, str):
            raise click.ClickException(f"{file.name}: the header row is unreadable ({first})")
        header = [c.strip().lower() for c in first]
        col = next(
            (header.index(c) for c in ("email", "email address", "e-mail") if c in header), None
        )
        if col is None:
            raise click.ClickException(f"{file.name}: the header has no email column")
        for line, r in records:
            if isinstance(r, str):  # a broken record: its line only
                broken.append({"line": line, "value": "", "reason": r})
            elif r:
                rows.append((line, r[col] if col < len(r) else ""))
    else:
        rows = [(n + 1, line) for n, line in enumerate(lines) if line.strip()]
    summary = suppress_many(ws.db, rows, reason, source=f"import:{one_line(file.name)}")
    if broken:
        summary["rejected"] += len(broken)
        summary["errors"] = sorted([*summary["errors"], *broken], key=lambda e: e["line"])
    if json_:
        emit_json(summary)
        return
    click.echo(
        f"{summary['suppressed']} suppressed, {summary['already']} already suppressed, "
        f"{summary['rejected']} rejected"
    )
    for err in summary["errors"]:
        click.echo(f"  line {err['line']}: {err['reason']}", err=True)


@suppress_group.command("ls")
@json_option
@pass_workspace
def suppress_ls(ws: Workspace, json_: bool) -> None:
    """Show suppressed addresses, why and since when.

    \b
    Example:
        listkit suppress ls --json
    """
    rows = list(list_suppressions(ws.db))
    if json_:
        emit_json(rows)
    else:
        emit_table(rows, ["email", "reason", "created", "campaign"], empty="No suppressions.")
