"""What a mail server's refusal says about the address it was for: hard, soft or nothing.

One verdict for one answer, wherever listkit reads it: the reply its own SMTP
client gets at send time (code, text, the command refused) and the same reply
quoted in a delivery report later (``Status``, ``Diagnostic-Code``, "in reply to
RCPT TO command"). ``send/`` and ``inbox/`` both ask ``classify``.

The rule: a refusal is hard (the address is suppressed at once) only when the
server says, permanently, that the recipient's mailbox or domain does not
exist or has moved, and says it about the recipient: an answer to MAIL FROM or
to the message's content (after DATA), an answer about the sender, a policy,
a block list, a rate or a full mailbox is soft, counted, and may pass. In
doubt: soft (the reader stays until enough soft bounces agree).
"""

from __future__ import annotations

import re

# What a refusal comes to.
HARD, SOFT, IGNORED = "hard", "soft", "ignored"

ENHANCED_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
# A reply code at the start of the text or after a word: "550 ...", "550-5.1.1", "550:".
_REPLY_CODE = re.compile(r"(?<![\d.#\w-])([245]\d\d)(?=[ \-:]|$)")

# The enhanced codes that are about the recipient's address (RFC 3463): bad mailbox
# (5.1.1), bad system (5.1.2), bad syntax (5.1.3), moved (5.1.6), and Microsoft's
# 5.1.10 (RecipientNotFound). 5.1.7 and 5.1.8 are the *sender's* address.
_HARD_STATUSES = {"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"}

# Words that say the recipient's mailbox or domain does not exist.
_NO_SUCH_RECIPIENT = re.compile(
    r"user unknown|unknown user|unknown (?:local[- ]part|recipient|or illegal user)|"
    r"recipient unknown|user (?:not found|not exist|does not exist)|"
    r"no such (?:user|mailbox|recipient|address|account|domain)|no mailbox here|"
    r"(?:mailbox|account|address|user|recipient)(?: that you tried to reach)? "
    r"(?:does not|doesn't|did not) exist|"
    r"recipient ?not ?found|recipientnotfound|invalid (?:recipient|mailbox)|"
    r"recipient name is not recognized|this user doesn't have an? \S+ account|"
    r"unrouteable address|host or domain name not found|host not found|"
    r"domain (?:does not exist|not found)|no mx record|"
    r"couldn't find a mail exchanger|adresse destinataire invalide",
    re.IGNORECASE,
)
_MAILBOX_FULL = re.compile(
    r"mailbox (?:is )?full|over ?quota|quota exceeded|exceeded (?:the )?(?:storage|quota)|"
    r"insufficient (?:storage|disk space)|mailbox size limit",
    re.IGNORECASE,
)
# Words that put the refusal on the sender, the content, a policy or a rate, whatever
# code came with them: never a reason to drop the reader.
_NOT_THE_ADDRESS = re.compile(
    r"sender|mail from|envelope from|\bspf\b|\bdkim\b|\bdmarc\b|spam|black ?list|"
    r"block ?list|\bblocked\b|\brbl\b|reputation|policy|too many|rate limit|"
    r"relay(?:ing)? (?:denied|not permitted|access denied)|not permitted to relay|"
    r"authenticat|content|virus|\bptr\b|reverse dns|try again|temporar(?:y|ily)",
    re.IGNORECASE,
)
# Which command a report says the refusal answered.
_IN_REPLY_TO = re.compile(
    r"(?:in reply to|after|response to|during)\s+(?:the\s+)?(?:end of\s+)?"
    r"(MAIL FROM|RCPT TO|DATA|end of data|RCPT|MAIL)\b",
    re.IGNORECASE,
)


def reply_parts(text: str | None) -> tuple[int | None, str | None]:
    """(reply code, enhanced status) as written in a server's reply text, or None each."""
    text = text or ""
    code = _REPLY_CODE.search(text)
    status = ENHANCED_STATUS.search(text)
    return (
        int(code.group(1)) if code else None,
        ".".join(status.groups()) if status else None,
    )


def classify(
    code: int | None,
    text: str | None,
    *,
    status: str | None = None,
    action: str | None = None,
    command: str | None = None,
) -> str:
    """hard, soft or ignored for one recipient's refusal.

    ``code`` is the SMTP reply code and ``text`` the reply's words (at send time),
    or the report's Diagnostic-Code (later: its code is read from the text);
    ``status`` is an enhanced status given apart from the text (a report's
    ``Status``); ``action`` a report's ``Action``; ``command`` the command refused
    (``MAIL FROM``, ``RCPT TO``, ``DATA``, "the final dot"), else read from the text."""
    action = (action or "").strip().lower()
    if action in ("delivered", "relayed", "expanded", "delayed"):
        return IGNORED  # a success, or a warning that delivery is still being tried
    text = text or ""
    text_code, text_status = reply_parts(text)
    code = code or text_code
    # The remote server's own words win over the status a reporting MTA put beside them.
    status = text_status or status
    if (status and status.startswith("2.")) or (code and 200 <= code < 300):
        return IGNORED
    # No code at all (a report's words alone) leaves the words to decide.
    permanent = status.startswith("5.") if status else code is None or code >= 500
    if not permanent:
        return SOFT
    if command is None:
        m = _IN_REPLY_TO.search(text)
        command = m.group(1) if m else None
    command = (command or "").upper()
    if command.startswith("MAIL"):
        return SOFT  # about the sender
    if (status and status[2:] == "2.2") or _MAILBOX_FULL.search(text):
        return SOFT  # a full mailbox may empty again
    if _NOT_THE_ADDRESS.search(text):
        return SOFT
    if status in _HARD_STATUSES:
        return HARD
    if "DATA" in command or "DOT" in command:
        # A refusal of the content: "user unknown" there is a filter's word (Japanese
        # carriers answer so), unless the status says the address.
        return SOFT
    if status == "5.4.1" and re.search(r"recipient address rejected", text, re.IGNORECASE):
        return HARD  # Exchange Online: the domain has no such recipient
    if _NO_SUCH_RECIPIENT.search(text):
        return HARD
    return SOFT
