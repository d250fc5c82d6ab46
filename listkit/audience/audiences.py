"""Audience rules: narrowing a campaign's recipients (or `subscribers ls`) by what people did.

A rule is a name and one or more values, written in a campaign's ``[where]``
table or as ``--where NAME=VALUE``; rules combine with AND, the values of one
rule with OR. Users never write SQL: each rule is turned here into one
condition on the subscriber (alias ``s``), a non-correlated ``s.id IN (...)``
set where it can be, so that SQLite builds each set once.

The rule that matters: a rule naming a campaign, product, offer or custom
field that does not exist is an error naming it, never an empty audience.

A purchase is an order (paid or partly refunded) whose buyer address is the
subscriber's, or that is attributed to a delivery to the subscriber (the same
person buying under another address through a tracked link).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlite_utils import Database

from listkit.audience.lists import get_list
from listkit.audience.provenance import (
    CONSENT_SOURCE,
    MEMBER_CREATED,
    SUBSCRIBER_CREATED,
    SUBSCRIBER_SOURCE,
)
from listkit.errors import InputError
from listkit.vocab import ORDER_SQL

BOUGHT_KINDS = ("product", "offer", "campaign")
DATE_RULES = ("signed_up_after", "signed_up_before", "last_purchase_after", "last_purchase_before")
RULES = (
    "bought",
    "not_bought",
    "mailed_by",
    "not_mailed_by",
    "clicked_in",
    "not_clicked_in",
    "source",
    *DATE_RULES,
    "field.NAME",
)
FIELD_NAME = re.compile(r"[^\x00-\x1f\"\\]{1,128}")

# One row per purchase and the subscriber it belongs to (by address, or by the
# delivery a sale is attributed to); used as a set, so the overlap is harmless.
PURCHASES = f"""
    SELECT p.id AS sid, x.at AS at, x.product AS product, x.offer AS offer,
           x.campaign_id AS campaign_id
    FROM sales x JOIN subscribers p ON p.key = x.email_key
    WHERE x.status IN {ORDER_SQL}
    UNION ALL
    SELECT d.subscriber_id, x.at, x.product, x.offer, x.campaign_id
    FROM sales x JOIN deliveries d ON d.id = x.delivery_id
    WHERE x.status IN {ORDER_SQL}"""

# When a subscriber signed up: the earliest consent time any list recorded
# (exports carry the original signup time), else when listkit first saw them.
SIGNUP = f"""coalesce((SELECT min(coalesce(m.consent_at, {MEMBER_CREATED})) FROM memberships m
                       WHERE m.subscriber_id = s.id), {SUBSCRIBER_CREATED})"""


@dataclass(frozen=True)
class Rule:
    name: str
    values: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.name}={'|'.join(self.values)}"


def _values(raw: object, where: str, name: str) -> tuple[str, ...]:
    if isinstance(raw, str | int | float | date) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{where}: rule {name} takes a value or a list of values")
    out = []
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, str | int | float | date):
            raise InputError(f"{where}: rule {name} has a value of the wrong type ({value!r})")
        text = value.isoformat() if isinstance(value, date) else str(value)
        if not text.strip():
            raise InputError(f"{where}: rule {name} has an empty value")
        out.append(text.strip())
    return tuple(out)


def parse_rules(items: Iterable[tuple[str, object]], where: str) -> tuple[Rule, ...]:
    """Check names and value shapes (not yet against the database)."""
    rules = []
    for name, raw in items:
        name = name.strip()
        if name.startswith("field."):
            if not FIELD_NAME.fullmatch(name[6:]):
                raise InputError(f"{where}: rule {name!r} needs a field name after 'field.'")
        elif name not in RULES:
            raise InputError(f"{where}: unknown rule {name!r} (rules: {', '.join(RULES)})")
        values = _values(raw, where, name)
        if name in ("bought", "not_bought"):
            for v in values:
                kind, sep, arg = v.partition(":")
                if v != "anything" and (not sep or kind not in BOUGHT_KINDS or not arg.strip()):
                    raise InputError(
                        f"{where}: rule {name} takes 'anything', 'product:NAME', 'offer:SLUG' "
                        f"or 'campaign:SLUG', not {v!r}"
                    )
        if name in DATE_RULES:
            if len(values) != 1:
                raise InputError(f"{where}: rule {name} takes one date")
            try:
                date.fromisoformat(values[0][:10])
            except ValueError:
                raise InputError(
                    f"{where}: rule {name}: {values[0]!r} is not a date such as 2026-11-01"
                ) from None
        rules.append(Rule(name, values))
    return tuple(rules)


def rules_from_table(table: object, where: str) -> tuple[Rule, ...]:
    """A campaign's ``[where]`` table; ``[where.field]`` holds custom-field rules."""
    if not isinstance(table, Mapping):
        raise InputError(f"{where}: must be a table of rules, e.g. [where] not_bought = 'anything'")
    items: list[tuple[str, object]] = []
    for name, value in table.items():
        if name == "field" and isinstance(value, Mapping):
            items += [(f"field.{k}", v) for k, v in value.items()]
        else:
            items.append((name, value))
    return parse_rules(items, where)


def rules_from_options(options: Iterable[str]) -> tuple[Rule, ...]:
    """``--where NAME=VALUE`` options (``VALUE`` may be ``a|b`` for either)."""
    items = []
    for text in options:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--where takes NAME=VALUE (e.g. not_bought=anything), not {text!r}")
        items.append((name, [v for v in value.split("|")]))
    return parse_rules(items, "--where")


class Resolver:
    """Turns rules into SQL conditions, checking names against the database."""

    def __init__(
        self,
        db: Database,
        *,
        products: Iterable[str] = (),
        offers: Iterable[str] = (),
        offers_dir: Path | None = None,
    ):
        self.db = db
        self.extra_products = set(products)
        self.extra_offers = set(offers)
        self.offers_dir = offers_dir
        self._campaigns: dict[str, int] | None = None

    def _from_offers(self) -> None:
        """Add the offers in the workspace (and their products) to the known names, once."""
        if self.offers_dir is None:
            return
        # Lazy: Jinja loads only for rules that name offers, not for every command.
        from listkit.mail.offers import list_offers

        for offer in list_offers(self.offers_dir):
            if not isinstance(offer, Exception):
                self.extra_offers.add(offer.slug)
                self.extra_products.add(offer.product)
        self.offers_dir = None

    def campaign_id(self, slug: str, rule: str) -> int:
        if self._campaigns is None:
            self._campaigns = dict(self.db.execute("SELECT slug, id FROM campaigns").fetchall())
        if slug not in self._campaigns:
            known = ", ".join(sorted(self._campaigns)) or "none yet"
            raise InputError(
                f"rule {rule}: no campaign {slug!r} has been sent (campaigns: {known})"
            )
        return self._campaigns[slug]

    def _known(self, column: str, value: str, rule: str, what: str, extra: set[str]) -> None:
        if value not in extra:
            self._from_offers()
        if value in extra:
            return
        if self.db.execute(f"SELECT 1 FROM sales WHERE {column} = ? LIMIT 1", [value]).fetchone():
            return
        if (
            column == "offer"
            and self.db.execute(
                "SELECT 1 FROM campaigns WHERE offer = ? LIMIT 1", [value]
            ).fetchone()
        ):
            return
        raise InputError(f"rule {rule}: no {what} {value!r} in the offers or the recorded sales")

    def _bought(self, values: tuple[str, ...], rule: str) -> tuple[str, list]:
        if "anything" in values:
            return f"s.id IN (SELECT sid FROM ({PURCHASES}))", []
        conds, params = [], []
        for v in values:
            kind, _, arg = v.partition(":")
            arg = arg.strip()
            if kind == "product":
                self._known("product", arg, rule, "product", self.extra_products)
                conds.append("product = ?")
                params.append(arg)
            elif kind == "offer":
                self._known("offer", arg, rule, "offer", self.extra_offers)
                conds.append("offer = ?")
                params.append(arg)
            else:
                conds.append("campaign_id = ?")
                params.append(self.campaign_id(arg, rule))
        return f"s.id IN (SELECT sid FROM ({PURCHASES}) WHERE {' OR '.join(conds)})", params

    def condition(self, rule: Rule) -> tuple[str, list]:
        """One SQL condition on ``s`` (subscribers) for the rule, and its parameters."""
        name, values, label = rule.name, rule.values, rule.label
        negate = name.startswith("not_")
        base = name[4:] if negate else name
        if base == "bought":
            sql, params = self._bought(values, label)
        elif base == "mailed_by":
            ids = [self.campaign_id(v, label) for v in values]
            sql = """s.id IN (SELECT subscriber_id FROM deliveries
                     WHERE campaign_id IN (SELECT value FROM json_each(?)) AND state = 'sent')"""
            params = [json.dumps(ids)]
        elif base == "clicked_in":
            ids = [self.campaign_id(v, label) for v in values]
            sql = """s.id IN (SELECT d.subscriber_id FROM deliveries d
                     JOIN events e ON e.delivery_id = d.id AND e.kind = 'click'
                     WHERE d.campaign_id IN (SELECT value FROM json_each(?)))"""
            params = [json.dumps(ids)]
        elif name == "source":
            sql = f"""({SUBSCRIBER_SOURCE} IN (SELECT value FROM json_each(?))
                      OR s.id IN (SELECT m.subscriber_id FROM memberships m
                                  WHERE {CONSENT_SOURCE} IN (SELECT value FROM json_each(?))))"""
            params = [json.dumps(values)] * 2
        elif name == "signed_up_after":
            sql, params = f"substr({SIGNUP}, 1, 10) >= ?", [values[0][:10]]
        elif name == "signed_up_before":
            sql, params = f"substr({SIGNUP}, 1, 10) < ?", [values[0][:10]]
        elif name in ("last_purchase_after", "last_purchase_before"):
            op = ">=" if name.endswith("after") else "<"
            sql = f"""s.id IN (SELECT sid FROM ({PURCHASES}) GROUP BY sid
                      HAVING substr(max(at), 1, 10) {op} ?)"""
            params = [values[0][:10]]
        else:  # field.NAME
            field = name[6:]
            path = "$." + json.dumps(field)
            if not self.db.execute(
                "SELECT 1 FROM subscribers WHERE json_type(fields, ?) IS NOT NULL LIMIT 1", [path]
            ).fetchone():
                raise InputError(f"rule {label}: no subscriber has a custom field {field!r}")
            sql = "json_extract(s.fields, ?) IN (SELECT value FROM json_each(?))"
            params = [path, json.dumps(values)]
        if negate:
            sql = f"NOT ({sql})"
        return sql, params

    def conditions(self, rules: Iterable[Rule]) -> tuple[str, list]:
        """All rules ANDed: ``AND cond AND cond`` (empty without rules)."""
        sql, params = "", []
        for rule in rules:
            cond, p = self.condition(rule)
            sql += f" AND {cond}"
            params += p
        return sql, params


def matching_subscribers(
    db: Database,
    rules: tuple[Rule, ...],
    list_slug: str | None = None,
    offers_dir: Path | None = None,
) -> list[dict]:
    """Subscribers the rules select (active members of ``list_slug`` if given), in id order."""
    cond, params = Resolver(db, offers_dir=offers_dir).conditions(rules)
    where = "1"
    if list_slug is not None:
        where = """s.id IN (SELECT subscriber_id FROM memberships
                            WHERE list_id = ? AND status = 'active')"""
        params = [get_list(db, list_slug)["id"], *params]
    cursor = db.execute(
        f"""SELECT s.email, s.name, substr({SIGNUP}, 1, 10), {SUBSCRIBER_SOURCE},
                   (SELECT group_concat(l.slug, ' ') FROM memberships m
                    JOIN lists l ON l.id = m.list_id
                    WHERE m.subscriber_id = s.id AND m.status = 'active'),
                   EXISTS (SELECT 1 FROM suppressions x WHERE x.key = s.key), s.fields
            FROM subscribers s WHERE {where}{cond} ORDER BY s.id""",
        params,
    )
    keys = ("email", "name", "signed_up", "source", "lists", "suppressed")
    return [
        dict(zip(keys, row[:-1], strict=True))
        | {"suppressed": bool(row[5]), "fields": json.loads(row[-1])}
        for row in cursor
    ]
