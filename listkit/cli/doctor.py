"""`listkit doctor`: check DNS and the unsubscribe service before a big send."""

from __future__ import annotations

import click

from listkit.cli import cli, pass_workspace
from listkit.cli.output import emit_json, json_option
from listkit.mail.doctor import FAIL, WARN, diagnose
from listkit.workspace import Workspace

LABELS = {"ok": "ok  ", WARN: "WARN", FAIL: "FAIL"}


MAX_TIMEOUT = 300.0


def _seconds(ctx: click.Context, param: click.Parameter, value: float) -> float:
    # nan or inf would wait for ever on a server that never answers.
    if not 0 < value <= MAX_TIMEOUT:
        raise click.BadParameter(
            f"{value:g} is not a number of seconds from more than 0 to {MAX_TIMEOUT:g}"
        )
    return value


@cli.command()
@click.option(
    "--dns",
    "dns_server",
    metavar="SERVER[:PORT]",
    help="DNS server to ask.  [default: LISTKIT_DNS, else the system's resolvers]",
)
@click.option(
    "--relay-ip",
    "relay_ips",
    multiple=True,
    metavar="ADDRESS",
    help="Public address your relay sends from (repeatable).  [default: the SMTP host's]",
)
@click.option(
    "--timeout",
    type=float,
    callback=_seconds,
    default=5.0,
    show_default=True,
    help="Seconds to wait for each answer (DNS, HTTPS).",
)
@json_option
@pass_workspace
def doctor(
    ws: Workspace, dns_server: str | None, relay_ips: tuple[str, ...], timeout: float, json_: bool
) -> None:
    """Check what mailbox providers check before they trust a bulk sender.

    For the domain of LISTKIT_FROM: SPF allows the relay, the DKIM key
    published for the selector is this workspace's key, DMARC is published
    and aligned, and the unsubscribe service answers over HTTPS (one GET of
    LISTKIT_BASE_URL/healthz). Says what to publish where. Exit status 1 when
    any check fails.

    \b
    Example:
        listkit doctor
        listkit doctor --dns 1.1.1.1 --relay-ip 203.0.113.7
    """
    report = diagnose(ws.settings, dns_server=dns_server, relay_ips=relay_ips, timeout=timeout)
    if json_:
        emit_json(report.as_dict())
    else:
        relay = f", relay {report.relay}" if report.relay else ""
        click.echo(f"Checking {report.domain}{relay} (DNS: {report.dns})")
        for check in report.checks:
            click.echo(f"{LABELS[check.status]}  {check.name:<12} {check.summary}")
            for line in check.advice:
                click.echo(f"{'':18}-> {line}")
        failed = [c.name for c in report.checks if c.status == FAIL]
        if failed:
            click.echo(
                f"{len(failed)} of {len(report.checks)} checks failed ({', '.join(failed)}): "
                "mailbox providers may send your mail to spam or refuse it until they pass."
            )
        else:
            click.echo("All checks passed.")
    if not report.ok:
        raise SystemExit(1)
