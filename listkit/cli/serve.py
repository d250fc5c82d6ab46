"""``listkit serve``: the web service for unsubscribes, signups, clicks and webhooks."""

from __future__ import annotations

import logging

import click

from listkit.audience.lists import get_list
from listkit.cli import cli, pass_workspace
from listkit.workspace import Workspace

# Seconds a request has to arrive whole (see listkit.web.server).
REQUEST_TIMEOUT = 10.0


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (your proxy forwards LISTKIT_BASE_URL here).",
)
@click.option(
    "--forwarded-allow-ips",
    metavar="IPS",
    help="Proxies whose X-Forwarded-For and X-Forwarded-Proto are believed, comma-separated "
    "(127.0.0.1 behind a proxy on this machine). Default: none, the peer is the client.",
)
@click.option(
    "--request-timeout",
    type=click.FloatRange(0, min_open=True),
    default=REQUEST_TIMEOUT,
    show_default=True,
    help="Seconds a request's headers and body have to arrive; slower ones get 408 and are closed.",
)
@click.option("--quiet", "-q", is_flag=True, help="Log only warnings and errors.")
@pass_workspace
def serve(
    ws: Workspace,
    host: str,
    port: int,
    forwarded_allow_ips: str | None,
    request_timeout: float,
    quiet: bool,
) -> None:
    """Serve unsubscribe links, signups, clicks and webhooks over HTTP.

    Run it behind a TLS reverse proxy (Caddy, nginx) that forwards
    LISTKIT_BASE_URL to it, and name that proxy with --forwarded-allow-ips:
    the client address is consent evidence and the key of the signup limit,
    and X-Forwarded-For is believed only from the proxies named (see
    docs/serve.md). It uses the workspace's database beside the CLI: an
    unsubscribe is honoured by a send that is running.

    \b
    Example:
        listkit serve --port 8080 --forwarded-allow-ips 127.0.0.1
    """
    # Lazy: uvicorn and Starlette load for `listkit serve` alone.
    import uvicorn

    from listkit.web import create_app
    from listkit.web.server import protocol

    # Opens (and migrates) the database and checks the settings before listening.
    ws.db  # noqa: B018
    ws.settings.reader_site_url()  # the reader's pages link there: a bad value stops us here
    ws.settings.confirm_per_hour  # noqa: B018 (a bad value stops us here too)
    app = create_app(ws)
    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("listkit").setLevel(level)
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=protocol(request_timeout),
        access_log=False,  # it prints paths, which carry tokens and webhook secrets
        log_level="warning" if quiet else "info",
        # Without proxies named, uvicorn reads no proxy header at all (it would
        # otherwise believe one from 127.0.0.1, or from $FORWARDED_ALLOW_IPS).
        proxy_headers=bool(forwarded_allow_ips),
        forwarded_allow_ips=forwarded_allow_ips or "",
        server_header=False,
        date_header=True,
    )


@cli.command("form")
@click.argument("list_slug", metavar="LIST")
@click.option(
    "--name",
    "form_name",
    help="Names this form in the consent evidence (default: the list), e.g. sidebar.",
)
@pass_workspace
def form(ws: Workspace, list_slug: str, form_name: str | None) -> None:
    """Print an HTML signup form for LIST, to paste into a blog or site.

    It posts to LISTKIT_BASE_URL/s/LIST on `listkit serve`, which mails a
    confirmation (double opt-in); the address joins the list as pending and
    becomes active only when its owner confirms. The form has a hidden field
    that scripts fill in and people do not (a honeypot).

    \b
    Example:
        listkit form blog --name sidebar > signup-form.html
    """
    from listkit.web.pages import signup_form  # lazy: Starlette, for `listkit form` alone

    lst = get_list(ws.db, list_slug)
    action = f"{ws.settings.public_base_url()}/s/{lst['slug']}"
    click.echo(signup_form(action, form_name or lst["slug"]))
