"""CLI commands: offers."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

from listkit.audience.lists import get_list
from listkit.audience.subscribers import find_subscriber, iter_members
from listkit.cli import cli, pass_workspace
from listkit.cli.output import emit_json, emit_table, json_option
from listkit.errors import ListkitError, TemplateError
from listkit.files import write_private
from listkit.mail.compose import PREVIEW_TOKEN, SAMPLE_SUBSCRIBER, Composer, check_offer
from listkit.mail.offers import list_offers, load_offer
from listkit.workspace import Workspace


@cli.group()
def offers() -> None:
    """Write, check and preview offers (offers/<slug>/)."""


@offers.command("ls")
@json_option
@pass_workspace
def offers_ls(ws: Workspace, json_: bool) -> None:
    """Show the offers in offers/, with product, price and coupon.

    \b
    Example:
        listkit offers ls
    """
    rows = []
    for item in list_offers(ws.offers_dir):
        if isinstance(item, TemplateError):
            rows.append({"slug": "?", "product": f"ERROR: {item}"})
            continue
        rows.append(
            {
                "slug": item.slug,
                "product": item.product,
                "price": f"{item.currency} {item.price}",
                "coupon": item.coupon,
                "html": "yes" if item.has_html else "no",
                "expires": item.expires,
            }
        )
    if json_:
        emit_json(rows)
        return
    emit_table(
        rows,
        ["slug", "product", "price", "coupon", "html", "expires"],
        empty=f"No offers in {ws.offers_dir}.",
    )


def _composer(ws: Workspace, slug: str, campaign: str = "preview") -> Composer:
    offer = load_offer(ws.offers_dir, slug)
    return Composer(offer, ws.settings, campaign=campaign, offers_dir=ws.offers_dir)


@offers.command("check")
@click.argument("slug")
@click.option("--list", "list_", help="Render for every active subscriber of this list.")
@pass_workspace
def offers_check(ws: Workspace, slug: str, list_: str | None) -> None:
    """Render offer SLUG for every subscriber of a list (or a sample) and report problems.

    Each missing variable or template error is reported with its template,
    line and subscriber. Exit status 1 when anything fails.

    \b
    Examples:
        listkit offers check launch
        listkit offers check launch --list blog
    """
    composer = _composer(ws, slug)
    if list_ is not None:
        lst = get_list(ws.db, list_)
        recipients = ((s, lst["slug"], lst["title"]) for s in iter_members(ws.db, list_))
    else:
        recipients = iter([(SAMPLE_SUBSCRIBER, "sample", "Sample list")])
    checked, problems = check_offer(composer, recipients)
    for p in problems:
        click.echo(f"{p.subscriber}: {p.message}", err=True)
    who = f"{checked} subscribers of {list_}" if list_ else "the sample subscriber"
    if problems:
        raise ListkitError(f"offer {slug}: {len(problems)} of {who} failed to render")
    click.echo(f"Offer {slug}: renders for {'all ' if list_ else ''}{who}.")


def _can_open_a_browser() -> bool:
    """Whether a browser can show a page: one is found, and it is not a text browser
    (lynx, w3m: all webbrowser finds on a server) on a machine without a display."""
    import webbrowser

    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    if sys.platform in ("darwin", "win32") or os.environ.get("BROWSER"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@offers.command("preview")
@click.argument("slug")
@click.option("--email", help="Render for this subscriber (default: a sample subscriber).")
@click.option(
    "--eml",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the whole message to this .eml file instead of printing it.",
)
@click.option(
    "--open",
    "open_",
    is_flag=True,
    help="Also write the HTML part to a private temporary file and open it in a browser "
    "(without one, say where the file is).",
)
@pass_workspace
def offers_preview(
    ws: Workspace, slug: str, email: str | None, eml: Path | None, open_: bool
) -> None:
    """Show offer SLUG as one subscriber would get it: headers, text and HTML parts.

    \b
    Examples:
        listkit offers preview launch
        listkit offers preview launch --email ann@example.com --eml launch.eml
        listkit offers preview launch --open
    """
    composer = _composer(ws, slug)
    subscriber, lst = dict(SAMPLE_SUBSCRIBER), {"slug": "sample", "title": "Sample list"}
    if email is not None:
        found = find_subscriber(ws.db, email)
        if found is None:
            subscriber = {**SAMPLE_SUBSCRIBER, "email": email.strip(), "key": email.strip()}
        else:
            subscriber, first_list = found
            lst = first_list or lst
    message = composer.compose(
        subscriber=subscriber, list_slug=lst["slug"], list_title=lst["title"], token=PREVIEW_TOKEN
    )
    if message.leftover is not None:
        click.echo(f"Warning: {message.leftover}", err=True)
    if open_:
        if message.html is None:
            raise ListkitError(f"offer {slug} has no HTML part (offers/{slug}/html.j2) to open")
        import webbrowser

        # mkstemp creates the file readable by its owner only: it holds a subscriber's data.
        fd, name = tempfile.mkstemp(prefix=f"listkit-{slug}-", suffix=".html")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(message.html)
        if _can_open_a_browser() and webbrowser.open(Path(name).as_uri()):
            click.echo(f"Opened {name} in a browser.")
        else:
            click.echo(
                f"No browser can be opened here (no graphical display): the HTML part is in {name}"
            )
    if eml is not None:
        ws.refuse_own_file(eml, "--eml")
        write_private(eml, message.data)
        click.echo(f"Wrote {eml} ({len(message.data):,} bytes).")
        return
    head = message.data.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    click.echo(head.replace("\r\n", "\n"))
    click.echo()
    click.echo(message.text, nl=False)
    if message.html is not None:
        click.echo("\n--- HTML part ---")
        click.echo(message.html, nl=not message.html.endswith("\n"))
