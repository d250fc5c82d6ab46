"""Email addresses: the one rule for the key that identifies a subscriber.

``email_key`` is the identity of an address everywhere in listkit (subscribers,
suppressions, sales): the trimmed address, case-folded.
"""

from __future__ import annotations


def email_key(address: str) -> str:
    """The case-folded key of an address: ``' Ann@Example.COM '`` -> ``'ann@example.com'``."""
    return address.strip().casefold()
