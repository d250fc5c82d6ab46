"""The VERP envelope: each delivery's MAIL FROM names its token."""

import pytest

from listkit.config import Settings
from listkit.errors import ConfigError
from listkit.mail.verp import token_from_address, verp_address
from tests import smtp_server
from tests.test_send import ADDRS, setup_campaign


class EnvelopeHandler(smtp_server.FaultHandler):
    """Records each message's MAIL FROM beside its recipient."""

    def __init__(self):
        super().__init__(pipelining=True)
        self.envelopes: dict[str, str] = {}

    async def handle_DATA(self, server, session, envelope):
        self.envelopes[envelope.rcpt_tos[0]] = envelope.mail_from
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def smtp_handler():
    """`server` records with an EnvelopeHandler."""
    return EnvelopeHandler()


def delivery_tokens(workspace):
    from listkit.workspace import Workspace
    from tests.world import tokens

    ws = Workspace(workspace)
    try:
        return tokens(ws.db)
    finally:
        ws.close()


def test_with_a_bounce_address_each_message_has_its_own_envelope_sender(
    run, workspace, server, monkeypatch
):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS[:3])
    monkeypatch.setenv("LISTKIT_BOUNCE_ADDRESS", "bounces@example.com")
    run("send", "t", "--yes")
    tokens = delivery_tokens(workspace)
    assert handler.envelopes == {
        email: f"bounces+{token}@example.com" for email, token in tokens.items()
    }


def test_without_a_bounce_address_the_envelope_sender_is_the_from_address(run, workspace, server):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS[:2])
    run("send", "t", "--yes")
    from_address = (workspace / ".env").read_text().split("LISTKIT_FROM=")[1].split("\n")[0]
    assert set(handler.envelopes) == set(ADDRS[:2])
    for envelope in handler.envelopes.values():
        assert envelope in from_address and "+" not in envelope


def test_a_verp_address_gives_back_its_token_whatever_the_case():
    address = verp_address("bounces@example.com", "abcdefgh234567ab")
    assert address == "bounces+abcdefgh234567ab@example.com"
    assert token_from_address(address) == "abcdefgh234567ab"
    assert token_from_address("Bounces+ABCDEFGH234567AB@Example.com") == "abcdefgh234567ab"
    assert token_from_address("bounces@example.com") is None
    assert token_from_address("bounces+nottoken@example.com") is None


def bounce_address(value: str) -> str | None:
    """``value`` as LISTKIT_BOUNCE_ADDRESS is read (``settings.bounce_address``)."""
    setting = Settings.bounce_address
    return setting.kind.read(value, setting.name)


def test_a_bounce_address_with_a_plus_or_without_a_domain_is_refused():
    with pytest.raises(ConfigError, match=r"^LISTKIT_BOUNCE_ADDRESS must be"):
        bounce_address("bounces+x@example.com")
    with pytest.raises(ConfigError, match=r"^LISTKIT_BOUNCE_ADDRESS must be"):
        bounce_address("bounces")
    assert bounce_address(" ") is None
    assert bounce_address(" Bounces@Example.com ") == "Bounces@example.com"


@pytest.mark.parametrize("bad", ["bo\x01unces@example.com", "bounces@exa\x7fmple.com"])
def test_a_bounce_address_with_a_control_character_is_refused_before_any_message(bad):
    # Found per message, SMTP's check would mark every recipient failed.
    with pytest.raises(ConfigError, match=r"^LISTKIT_BOUNCE_ADDRESS must be a plain address"):
        bounce_address(bad)


def test_a_bounce_address_with_a_non_ascii_local_part_is_refused():
    # Without SMTPUTF8 it could not be sent, and it is every message's MAIL FROM.
    with pytest.raises(ConfigError, match=r"^LISTKIT_BOUNCE_ADDRESS must be a plain address"):
        bounce_address("rücklauf@example.com")
