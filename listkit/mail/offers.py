"""Offers: ``offers/<slug>/offer.toml`` plus Jinja2 templates, rendered safely.

An offer is what gets sold: subject (a template), preheader, product, price,
currency, buy link, optional coupon and expiry; ``text.j2`` (required) and
``html.j2`` (optional), which may extend layouts in ``offers/_layouts/``.

The rule: templates render in Jinja's sandbox with undefined variables as
errors, HTML autoescaped and text not; every error names the template, the
line and (when rendering for one) the subscriber. The subject, a header, sees
the subscriber's values on one line: data never puts a line break in a header.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from listkit.errors import NotFound, TemplateError
from listkit.names import clean_name, name_parts
from listkit.text import CONTROL, one_line

REQUIRED = ("subject", "url", "product", "price", "currency")
OPTIONAL = ("preheader", "coupon", "expires")
SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# A price as people write it: digits, an optional decimal point and up to four
# decimals; at most a billion. No exponents, infinities or NaN.
PRICE = re.compile(r"\d{1,9}(\.\d{1,4})?")
# Template syntax that should never reach a reader: a sign that text was not
# rendered (a field used as plain text, or escaped twice).
LEFTOVER_SYNTAX = re.compile(r"\{\{|\{%|\{#|%\}")


def leftover_syntax(text: str) -> str | None:
    """The first bit of Jinja syntax left in rendered ``text``, with its context."""
    found = LEFTOVER_SYNTAX.search(text)
    if found is None:
        return None
    start = max(found.start() - 20, 0)
    return text[start : found.end() + 20].replace("\n", " ").strip()


@dataclass(frozen=True)
class Offer:
    slug: str
    subject: str
    url: str
    product: str
    price: str
    currency: str
    preheader: str = ""
    coupon: str | None = None
    expires: str | None = None
    path: Path = field(default=Path("."), compare=False)
    has_html: bool = False
    digest: str = ""

    def as_context(self) -> dict[str, Any]:
        """What templates see as ``offer``."""
        return {
            "slug": self.slug,
            "subject": self.subject,
            "preheader": self.preheader,
            "url": self.url,
            "product": self.product,
            "price": self.price,
            "currency": self.currency,
            "coupon": self.coupon,
            "expires": self.expires,
        }


def subscriber_context(subscriber: dict) -> dict[str, Any]:
    """What templates see as ``subscriber``: each custom field by its name, then
    ``email``, ``name`` (the full name, one line), ``first_name`` and
    ``last_name`` (as stored, else split from the name: ``names``) and
    ``fields``. A name that is not there is None."""
    fields = subscriber.get("fields") or {}
    name = clean_name(subscriber.get("name"))
    first, last = name_parts(
        name, clean_name(subscriber.get("first_name")), clean_name(subscriber.get("last_name"))
    )
    return {
        **fields,
        "email": subscriber["email"],
        "name": name,
        "first_name": first,
        "last_name": last,
        "fields": fields,
    }


def _one_line_fields(subscriber: dict[str, Any]) -> dict[str, Any]:
    """``subscriber`` (a ``subscriber_context``) with every custom field on one line,
    for the subject; the same object when no field holds a control character."""
    fields = subscriber["fields"]
    if not any(isinstance(v, str) and CONTROL.search(v) for v in fields.values()):
        return subscriber
    flat = {k: one_line(v) if isinstance(v, str) else v for k, v in fields.items()}
    own = {k: subscriber[k] for k in ("email", "name", "first_name", "last_name")}
    return {**flat, **own, "fields": flat}


def load_offer(offers_dir: Path, slug: str) -> Offer:
    """Read and check ``offers/<slug>/``; errors name the file and the field."""
    folder = offers_dir / slug
    toml_path = folder / "offer.toml"
    if not SLUG.fullmatch(slug) or not toml_path.is_file():
        known = ", ".join(o.name for o in _offer_dirs(offers_dir)) or "none"
        raise NotFound(f"no offer {slug!r} in {offers_dir} (offers: {known})")
    try:
        data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise TemplateError(f"{toml_path}: {e}") from None
    except UnicodeDecodeError:
        raise TemplateError(f"{toml_path}: not UTF-8 text") from None
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise TemplateError(
            f"{toml_path}: unknown field {', '.join(unknown)} "
            f"(known: {', '.join(REQUIRED + OPTIONAL)})"
        )
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise TemplateError(f"{toml_path}: missing field {', '.join(missing)}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "price" and isinstance(value, int | float):
            value = str(value)
        if not isinstance(value, str):
            raise TemplateError(f"{toml_path}: field {key} must be a string, not {value!r}")
        values[key] = value.strip() if key != "subject" else value
    if not PRICE.fullmatch(values["price"]):
        raise TemplateError(
            f'{toml_path}: field price must be a decimal such as "29.00", not '
            f"{values['price']!r} (at most 9 digits before the point and 4 after)"
        )
    if values.get("expires") is not None:
        values["expires"] = _check_expires(values["expires"], toml_path)
    if not re.fullmatch(r"[A-Za-z]{3}", values["currency"]):
        raise TemplateError(
            f"{toml_path}: field currency must be a 3-letter code such as USD, "
            f"not {values['currency']!r}"
        )
    values["currency"] = values["currency"].upper()
    if not re.match(r"https?://", values["url"]):
        raise TemplateError(
            f"{toml_path}: field url must be an http(s) link, not {values['url']!r}"
        )
    if not (folder / "text.j2").is_file():
        raise TemplateError(f"{folder / 'text.j2'} is missing: every offer needs a text part")
    has_html = (folder / "html.j2").is_file()
    return Offer(
        slug=slug,
        path=folder,
        has_html=has_html,
        digest=_digest(offers_dir, folder),
        **values,
    )


def _check_expires(value: str, toml_path: Path) -> str:
    """``expires`` as written, once it is known to be an ISO date or date and time."""
    try:
        if len(value) == 10:
            date.fromisoformat(value)
        else:
            datetime.fromisoformat(value)
    except ValueError:
        raise TemplateError(
            f"{toml_path}: field expires must be a date such as 2026-12-31 "
            f"(or a date and time such as 2026-12-31T23:59:00+01:00), not {value!r}"
        ) from None
    return value


def _offer_dirs(offers_dir: Path) -> list[Path]:
    if not offers_dir.is_dir():
        return []
    return sorted(p for p in offers_dir.iterdir() if p.is_dir() and (p / "offer.toml").is_file())


def list_offers(offers_dir: Path) -> list[Offer | TemplateError]:
    """Every offer in the folder; one that cannot be loaded is returned as its error."""
    result: list[Offer | TemplateError] = []
    for folder in _offer_dirs(offers_dir):
        try:
            result.append(load_offer(offers_dir, folder.name))
        except TemplateError as e:
            result.append(e)
    return result


def _digest(offers_dir: Path, folder: Path) -> str:
    """sha256 over the offer's files and the shared layouts: what was sent."""
    h = hashlib.sha256()
    layouts = offers_dir / "_layouts"
    files = sorted(folder.rglob("*")) + (sorted(layouts.rglob("*")) if layouts.is_dir() else [])
    for path in files:
        if path.is_file():
            h.update(str(path.relative_to(offers_dir)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


# What a subject or preheader may read and still be the same for every reader of
# a list: no reader data, no link (it carries the reader's token), no coupon.
PER_LIST_NAMES = frozenset({"offer", "campaign", "list", "postal_address"})
_PER_LIST_KEPT = 256  # rendered subjects and preheaders kept, at the most


def renders_once_per_list(env: jinja2.Environment, source: str) -> bool:
    """Whether a template's output depends on ``PER_LIST_NAMES`` alone: it reads
    no other variable and no global (``range``, ``lipsum``), uses no ``random``
    filter, and includes, imports or extends no other template."""
    ast = env.parse(source)
    if next(ast.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)), None):
        return False
    if any(f.name == "random" for f in ast.find_all(nodes.Filter)):
        return False
    # find_undeclared_variables leaves out the environment's globals.
    if any(n.name in env.globals for n in ast.find_all(nodes.Name) if n.ctx == "load"):
        return False
    return meta.find_undeclared_variables(ast) <= PER_LIST_NAMES


def _per_list_key(context: dict[str, Any]) -> tuple | None:
    """What a per-list template reads of ``context``, hashable; None if it cannot be."""
    key = tuple(
        tuple(value.items()) if isinstance(value, dict) else value
        for value in (context.get(name) for name in sorted(PER_LIST_NAMES))
    )
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _autoescape(name: str | None) -> bool:
    return name is not None and name.endswith("html.j2")


@dataclass(frozen=True)
class Rendered:
    subject: str
    preheader: str
    text: str
    html: str | None


class OfferTemplates:
    """An offer's templates, compiled once, rendered many times."""

    def __init__(self, offer: Offer, offers_dir: Path):
        self.offer = offer
        # Immutable: a template cannot change the offer, a list or a dict it is
        # given (``offer.update(...)`` would change it for every later recipient).
        self._globals: dict[int, dict[str, Any]] = {}
        self.env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(offers_dir)),
            undefined=jinja2.StrictUndefined,
            autoescape=_autoescape,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self.subject_name = f"{offer.slug}/offer.toml (subject)"
        self.preheader_name = f"{offer.slug}/offer.toml (preheader)"
        self.text_name = f"{offer.slug}/text.j2"
        self.html_name = f"{offer.slug}/html.j2"
        self.subject = self._compile(lambda: self.env.from_string(offer.subject), self.subject_name)
        self.preheader = self._compile(
            lambda: self.env.from_string(offer.preheader), self.preheader_name
        )
        self.text = self._compile(lambda: self.env.get_template(self.text_name), self.text_name)
        self.html = (
            self._compile(lambda: self.env.get_template(self.html_name), self.html_name)
            if offer.has_html
            else None
        )
        # A subject or preheader the same for a whole list is rendered once per list.
        self._per_list = {
            name: renders_once_per_list(self.env, source)
            for name, source in (
                (self.subject_name, offer.subject),
                (self.preheader_name, offer.preheader),
            )
        }
        self._per_list_rendered: dict[tuple, str] = {}

    @staticmethod
    def _compile(load: Callable[[], jinja2.Template], name: str) -> jinja2.Template:
        try:
            return load()
        except jinja2.TemplateSyntaxError as e:
            where = e.name or name
            raise TemplateError(f"{where}, line {e.lineno}: {e.message}") from None
        except jinja2.TemplateNotFound as e:
            raise TemplateError(f"{name}: template {e.name!r} not found") from None

    def render(self, context: dict[str, Any], who: str) -> Rendered:
        """Every part for one context; TemplateError names template, line, who.

        The subject and preheader are templates too: the bodies see them
        rendered, as ``subject`` and ``preheader`` and as ``offer.preheader``.
        The subject sees the subscriber's custom fields on one line.
        """
        subscriber = context.get("subscriber")
        one_line_subscriber = _one_line_fields(subscriber) if subscriber else subscriber
        key = _per_list_key(context) if any(self._per_list.values()) else None
        subject = self._render_part(
            self.subject,
            self.subject_name,
            context
            if one_line_subscriber is subscriber
            else {**context, "subscriber": one_line_subscriber},
            who,
            key,
        )
        preheader = self._render_part(self.preheader, self.preheader_name, context, who, key)
        context = {
            **context,
            "offer": {**context["offer"], "preheader": preheader},
            "preheader": preheader,
        }
        text = self._render(self.text, self.text_name, context, who)
        html = (
            self._render(self.html, self.html_name, {**context, "subject": subject}, who)
            if self.html is not None
            else None
        )
        return Rendered(subject=subject, preheader=preheader, text=text, html=html)

    def leftovers(self, rendered: Rendered) -> str | None:
        """Where rendered output still holds template syntax, as an error message."""
        for name, text in (
            (self.subject_name, rendered.subject),
            (self.preheader_name, rendered.preheader),
            (self.text_name, rendered.text),
            (self.html_name, rendered.html or ""),
        ):
            found = leftover_syntax(text)
            if found is not None:
                return f"{name}: template syntax left in the output: {found!r}"
        return None

    def _render_part(
        self, template: jinja2.Template, name: str, context: dict, who: str, key: tuple | None
    ) -> str:
        """The subject or the preheader: rendered once per list when it reads nothing
        else (``key``: what it reads of ``context``), else for each reader."""
        if key is None or not self._per_list[name]:
            return self._render(template, name, context, who)
        rendered = self._per_list_rendered.get((name, key))
        if rendered is None:
            rendered = self._render(template, name, context, who)
            if len(self._per_list_rendered) < _PER_LIST_KEPT:
                self._per_list_rendered[(name, key)] = rendered
        return rendered

    def _render(self, template: jinja2.Template, name: str, context: dict, who: str) -> str:
        # What Template.render does, with the template's globals merged into a
        # plain dict once per template instead of from a ChainMap on every
        # render (a sixth of the time of rendering a message).
        merged = self._globals.get(id(template))
        if merged is None:
            merged = self._globals[id(template)] = dict(template.globals)
        ctx = template.new_context({**merged, **context}, shared=True)
        try:
            try:
                return template.environment.concat(template.root_render_func(ctx))
            except Exception:
                template.environment.handle_exception()
        except SecurityError as e:
            where = _template_line(e, name)
            raise TemplateError(f"{where}: not allowed in the sandbox: {e} (for {who})") from None
        except jinja2.UndefinedError as e:
            where = _template_line(e, name)
            raise TemplateError(f"{where}: {e.message} (for {who})") from None
        except jinja2.TemplateError as e:
            where = _template_line(e, name)
            raise TemplateError(f"{where}: {e} (for {who})") from None
        except Exception as e:  # a filter or test failing on this subscriber's data
            where = _template_line(e, name)
            raise TemplateError(f"{where}: {type(e).__name__}: {e} (for {who})") from None


def _template_line(exc: BaseException, fallback: str) -> str:
    """'offers/x/text.j2, line 3' from the traceback Jinja rewrites to template lines."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".j2"):
            parts = Path(frame.filename).parts
            short = "/".join(parts[-2:])
            return f"{short}, line {frame.lineno}"
        if frame.filename == "<template>":
            return f"{fallback}, line {frame.lineno}"
    return fallback
