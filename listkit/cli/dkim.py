"""`listkit dkim`: make the signing key and show the DNS record to publish."""

from __future__ import annotations

import click

from listkit.cli import cli, pass_workspace
from listkit.cli.output import emit_json, json_option
from listkit.errors import ConfigError
from listkit.mail import dkim
from listkit.workspace import Workspace


@cli.group("dkim")
def dkim_group() -> None:
    """DKIM signing: make a key, show the record to publish.

    \b
    Example:
        listkit dkim keygen
        listkit dkim record
    """


def _domain(ws: Workspace, domain: str | None) -> str:
    if domain:
        return domain
    if ws.settings.dkim_domain:
        return ws.settings.dkim_domain
    return ws.settings.sender_address()[1].rpartition("@")[2]


@dkim_group.command()
@click.option("--selector", help="Selector to publish the key under.  [default: listkitYYYYMM]")
@click.option("--domain", help="Signing domain.  [default: LISTKIT_DKIM_DOMAIN or the From domain]")
@click.option(
    "--bits", type=int, default=2048, show_default=True, help="RSA key size, 2048 to 4096."
)
@json_option
@pass_workspace
def keygen(ws: Workspace, selector: str | None, domain: str | None, bits: int, json_: bool):
    """Write a new DKIM key into the workspace (mode 600) and print its DNS record.

    The key goes to dkim-SELECTOR.pem; an existing file is never overwritten.
    Publish the TXT record, add the two settings printed to .env, then check
    with `listkit doctor`.

    \b
    Example:
        listkit dkim keygen --selector news2611
    """
    new = dkim.keygen(ws.root, domain=_domain(ws, domain), selector=selector, bits=bits)
    rel = new.path.relative_to(ws.root)
    if json_:
        emit_json(
            {
                "key": str(new.path),
                "selector": new.selector,
                "domain": new.domain,
                "record_name": new.record_name,
                "record_value": new.record_value,
            }
        )
        return
    click.echo(f"Wrote {new.bits}-bit key {new.path} (mode 600; keep it secret).")
    click.echo("")
    click.echo(f"1. Publish this TXT record in the DNS of {new.domain}:")
    click.echo(f"   name:  {new.record_name}")
    click.echo(f"   value: {new.record_value}")
    click.echo("   As a zone-file line:")
    click.echo(f"   {new.zone_line}")
    click.echo("")
    click.echo(f"2. Add to {ws.root / '.env'}:")
    click.echo(f"   {dkim.KEY_SETTING}={rel}")
    click.echo(f"   {dkim.SELECTOR_SETTING}={new.selector}")
    if domain:
        click.echo(f"   {dkim.DOMAIN_SETTING}={new.domain}")
    click.echo("")
    click.echo("3. Once the record is visible, `listkit doctor` checks it matches this key.")


@dkim_group.command()
@pass_workspace
def record(ws: Workspace) -> None:
    """Print the DNS TXT record for the configured key.

    \b
    Example:
        listkit dkim record
    """
    signer = dkim.signer_for(ws.settings, ws.settings.sender_address()[1])
    if signer is None:
        raise ConfigError(
            f"{dkim.KEY_SETTING} is not set: make a key with `listkit dkim keygen` first"
        )
    value = dkim.txt_value(signer.key)
    click.echo(f"name:  {signer.selector}._domainkey.{signer.domain}")
    click.echo(f"value: {value}")
    click.echo(dkim.zone_line(signer.selector, signer.domain, value))
