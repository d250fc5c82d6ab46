"""The words the layers share: what the database stores as a delivery's state, a
membership's status, a suppression's reason, an event's kind, a sale's status and
an attribution's method.

The rule: a word that more than one layer reads or writes is spelled here, once,
at the bottom, and imported from here; no layer imports such a word from a
layer above it, nor keeps a second spelling of a set of them. SQL that needs a
set as literals (``status IN ('paid', ...)``) uses the ``*_SQL`` form, made from
the same tuple. Words one module alone uses stay in that module.
"""

from __future__ import annotations

# deliveries.state: pending -> sending -> sent; from sending also deferred
# (retried), failed, unknown (the server may have it: never retried by itself);
# skipped and held_out are never mailed; reserved waits for an offer test's winner;
# held_back waits (until next_unix) for the reader's quiet period or frequency cap.
PENDING = "pending"
SENDING = "sending"
SENT = "sent"
DEFERRED = "deferred"
FAILED = "failed"
UNKNOWN = "unknown"
SKIPPED = "skipped"
HELD_OUT = "held_out"
RESERVED = "reserved"
HELD_BACK = "held_back"
DELIVERY_STATES = (
    PENDING,
    SENDING,
    SENT,
    DEFERRED,
    FAILED,
    UNKNOWN,
    SKIPPED,
    HELD_OUT,
    RESERVED,
    HELD_BACK,
)
# Why a selling message is held back (deliveries.last_reply of a held_back row), or
# skipped when it could not fit before its deadline (of a skipped one).
QUIET_AFTER_PURCHASE = "quiet after purchase"
FREQUENCY_CAP = "frequency cap"
RESPECT_REASONS = (QUIET_AFTER_PURCHASE, FREQUENCY_CAP)

# memberships.status (pending: a signup waiting for its confirmation).
ACTIVE = "active"
UNSUBSCRIBED = "unsubscribed"
BOUNCED = "bounced"
COMPLAINED = "complained"

# suppressions.reason: every reason a suppression row can carry, the one list
# `suppress add --reason`, imports and the bounce effects validate against.
HARD_BOUNCE = "hard_bounce"
SOFT_BOUNCE = "soft_bounce"
COMPLAINT = "complaint"
MANUAL = "manual"
SUPPRESSION_REASONS = (UNSUBSCRIBED, HARD_BOUNCE, SOFT_BOUNCE, COMPLAINT, MANUAL)
# The reasons that count as bounced in reports.
BOUNCE_REASONS = (HARD_BOUNCE, SOFT_BOUNCE)

# events.kind: what came back about a delivery: click, click_bot (a link scanner's
# fetch, no person's click), unsubscribe, bounce, complaint (a suppression reason too).
CLICK = "click"
CLICK_BOT = "click_bot"
BOUNCE = "bounce"

# sales.status: an order counts while paid or partly refunded; revenue sums the
# amount less the refund over refunded ones too (pending and the rest count nowhere).
PAID = "paid"
PARTIALLY_REFUNDED = "partially_refunded"
REFUNDED = "refunded"
ORDER_STATUSES = (PAID, PARTIALLY_REFUNDED)
REVENUE_STATUSES = (PAID, PARTIALLY_REFUNDED, REFUNDED)

# sales.method: how a sale was tied to a delivery, in the order attribution tries.
ATTRIBUTION_METHODS = ("token", "coupon", "utm", "click", "email", "none")


def sql_in(words: tuple[str, ...]) -> str:
    """``words`` as an SQL list of literals: ``('paid', 'partially_refunded')``.
    For the words above only (they hold no quote); values from outside are bound."""
    assert words and all("'" not in w for w in words)
    return "(" + ", ".join(f"'{w}'" for w in words) + ")"


ORDER_SQL = sql_in(ORDER_STATUSES)
REVENUE_SQL = sql_in(REVENUE_STATUSES)

# enrollments.state: a reader's place in a sequence. active (a next step, due at
# next_due); finished (every step passed); exited (an exit event, an unsubscribe,
# a bounce or a complaint ended it: exit_reason says which); held_out (kept back
# to measure the sequence's lift; never mailed).
FINISHED = "finished"
EXITED = "exited"
ENROLLMENT_STATES = (ACTIVE, FINISHED, EXITED, HELD_OUT)
RESPECT_SQL = sql_in(RESPECT_REASONS)
