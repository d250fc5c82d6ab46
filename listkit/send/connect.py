"""Opening an SMTP connection: TCP or implicit TLS, EHLO, STARTTLS, one login.

The rule: what retrying cannot fix (a refused login, a refused or missing
STARTTLS, a certificate that is not trusted, a TLS port spoken to in plain
text) is a ``SendError`` that says what to change in LISTKIT_SMTP_URL (its
password masked), met once; anything else (refused greeting, timeout,
network) is raised as it is, for the caller to retry. A wrong password is
tried once, with one mechanism.

aiosmtplib opens and authenticates the connection; ``smtp.Connection`` then
takes over its transport for the transactions.
"""

from __future__ import annotations

import ssl

import aiosmtplib

from listkit.config import SMTPSettings
from listkit.errors import SendError
from listkit.send.smtp import Connection


async def open_connection(smtp: SMTPSettings) -> Connection:
    """An open, authenticated connection, ready for ``smtp.transact``."""
    return Connection(await connect(smtp), smtp.timeout)


def _smtp_client(smtp: SMTPSettings) -> aiosmtplib.SMTP:
    # No credentials here: aiosmtplib would try every AUTH mechanism the server
    # offers with a wrong password; ``connect`` makes exactly one attempt.
    return aiosmtplib.SMTP(
        hostname=smtp.host,
        port=smtp.port,
        use_tls=smtp.tls == "tls",
        start_tls=smtp.tls == "starttls",
        timeout=smtp.timeout,
        cert_bundle=smtp.ca_file,
        local_hostname=smtp.ehlo_name or "localhost",
    )


# AUTH mechanisms in the order listkit uses them: one of them, once.
_AUTH_MECHANISMS = ("plain", "login", "cram-md5")
# OpenSSL verify codes (X509_V_ERR_*) that mean "no trusted CA signed this".
_UNTRUSTED = {2, 18, 19, 20, 21}


def _ssl_error(e: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``e``, if any (aiosmtplib wraps it)."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, ssl.SSLError):
            return e
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def _tls_problem(smtp: SMTPSettings, e: ssl.SSLError) -> str:
    """Why the TLS handshake failed, and what to do, for the three usual causes."""
    if isinstance(e, ssl.SSLCertVerificationError):
        code = e.verify_code
        if code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
            return (
                f"the server's TLS certificate is not for {smtp.host} ({e.verify_message}); "
                "use the host name the certificate names in LISTKIT_SMTP_URL"
            )
        if code in _UNTRUSTED:
            return (
                f"the server's TLS certificate is not trusted ({e.verify_message}); if it "
                "uses a private CA, set LISTKIT_SMTP_CA to that CA's PEM file"
            )
        if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
            return f"the server's TLS certificate has expired ({e.verify_message})"
        return f"the server's TLS certificate was refused ({e.verify_message})"
    reason = (e.reason or str(e)).upper()
    if smtp.tls == "tls" and any(
        r in reason for r in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH")
    ):
        return (
            f"port {smtp.port} does not speak TLS from the start (it answered in plain "
            "text): for a STARTTLS port such as 587 use smtp+starttls://, smtps:// is for "
            "implicit TLS (port 465)"
        )
    return f"TLS failed: {e.reason or e}"


async def connect(smtp: SMTPSettings) -> aiosmtplib.SMTP:
    """An open, authenticated connection; SendError for what retrying cannot fix."""
    client = _smtp_client(smtp)
    where = f"LISTKIT_SMTP_URL ({smtp.masked()})"
    try:
        await client.connect()
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()  # so that supports_extension() answers before the first MAIL
        if smtp.username:
            await _login(client, smtp, where)
    except SendError:
        client.close()
        raise
    except aiosmtplib.SMTPConnectResponseError:
        client.close()
        raise  # a greeting refused (421 busy, ...): retried
    except aiosmtplib.SMTPConnectTimeoutError as e:
        client.close()
        if smtp.tls != "tls" and "ready message" in str(e):
            # Connected, and silence: a port that waits for a TLS handshake
            # first (465) never greets in plain text; retrying cannot help.
            raise SendError(
                f"{where}: connected, but the server sent no greeting within "
                f"{smtp.timeout:g} s; if port {smtp.port} expects TLS from the start "
                "(implicit TLS, usually 465), use smtps://"
            ) from None
        raise
    except aiosmtplib.SMTPResponseException as e:
        # aiosmtplib's STARTTLS refused: the only reply its connect() checks
        # besides the greeting (handled above), EHLO (rare) and AUTH (ours).
        client.close()
        if smtp.tls == "starttls" and not isinstance(e, aiosmtplib.SMTPHeloError):
            raise SendError(
                f"{where}: the server refused STARTTLS: {e.code} {e.message}; nothing is "
                "sent without it"
            ) from None
        raise
    except aiosmtplib.SMTPNotSupported as e:
        client.close()
        raise SendError(f"{where}: {e}") from None
    except (aiosmtplib.SMTPException, OSError) as e:
        client.close()
        tls_error = _ssl_error(e)
        if tls_error is not None:
            raise SendError(f"{where}: {_tls_problem(smtp, tls_error)}") from None
        if "STARTTLS" in str(e).upper() and "not supported" in str(e).lower():
            raise SendError(
                f"{where}: the server does not offer STARTTLS; use smtps:// for implicit "
                "TLS, or smtp:// only on a trusted local network"
            ) from None
        raise
    return client


async def _login(client: aiosmtplib.SMTP, smtp: SMTPSettings, where: str) -> None:
    """One AUTH attempt with one mechanism: a wrong password is tried once, not per
    mechanism (servers count failures, and fail2ban or the provider locks the account)."""
    if not client.supports_extension("auth"):
        hint = (
            ""
            if client.get_transport_info("sslcontext")
            else ("; many servers offer AUTH only over TLS: try smtp+starttls:// or smtps://")
        )
        raise SendError(f"{where}: the server does not offer AUTH{hint}")
    offered = [m for m in _AUTH_MECHANISMS if m in client.server_auth_methods]
    if not offered:
        raise SendError(
            f"{where}: the server offers no AUTH mechanism listkit knows "
            f"(it offers {', '.join(client.server_auth_methods) or 'none'}; "
            "listkit knows PLAIN, LOGIN, CRAM-MD5)"
        )
    method = getattr(client, "auth_" + offered[0].replace("-", ""))
    try:
        await method(smtp.username, smtp.password or "")
    except aiosmtplib.SMTPAuthenticationError as e:
        raise SendError(
            f"{where}: the server refused the login for user {smtp.username!r}: "
            f"{e.code} {e.message}; check the user name and password (listkit tried once, "
            "to keep the account from being locked)"
        ) from None
