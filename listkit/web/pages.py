"""The reader's pages: one-click unsubscribe, signup with double opt-in, click redirects.

The rules: GET and HEAD show and never change anything (mail scanners prefetch
every link); only a POST unsubscribes or confirms. A tampered, unknown or
malformed token gets a 4xx (for an unsubscribe or click link, a page that
says what to do instead) and changes nothing. A reader's page links back to
the site, and says what an unsubscribe did (or had done): the list left, the
campaign stopped with its follow-ups, and "everything" while there is more. A
signup answers the same page and status whoever the address is, in the same
time: the request only records it, the mailer (``ConfirmationMailer``) decides
and mails off the request path, and the answer leaves no sooner than
``ANSWER_FLOOR`` after the request came. A click redirects only to the link
the offer itself contains for that delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from listkit.audience import signups
from listkit.audience.lists import get_list
from listkit.audience.subscribers import (
    delivery_standing,
    describe_unsubscribe,
    unsubscribe_delivery,
)
from listkit.db import now
from listkit.errors import ConfigError, InputError, ListkitError, NotFound
from listkit.inbox import clicks
from listkit.mail.tracking import (
    CONFIRM_DAYS,
    is_link_id,
    is_token,
    parse_confirm_token,
    track,
    verify_click,
    verify_unsubscribe,
)
from listkit.mail.verp import envelope_sender
from listkit.send.single import send_one
from listkit.web.common import client_ip, read_body, read_form
from listkit.workspace import Workspace

log = logging.getLogger("listkit.serve")

FORM_LIMIT = 8 * 1024  # a signup or unsubscribe form is a few hundred bytes
# A per-address limit on signups: this many in WINDOW seconds, then 429.
SIGNUP_LIMIT = 5
SIGNUP_WINDOW = 600
# A signup is answered this long after it came, at the soonest (seconds).
ANSWER_FLOOR = 0.05
ONE_CLICK = "List-Unsubscribe=One-Click"

_env = SandboxedEnvironment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    auto_reload=False,  # the package's own templates: no file check on every page
)
# Pages carry tokens in their URL: never let them leak through a Referer or a cache.
_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
}


def page(
    name: str, status: int = 200, *, request: Request | None = None, **context
) -> HTMLResponse:
    """Render a page; with the ``request``, it links back to the site (``LISTKIT_SITE_URL``)."""
    if request is not None and "site" not in context:
        url = request.app.state.ws.settings.reader_site_url()
        context["site"] = {"url": url, "name": urlsplit(url).hostname} if url else None
    return HTMLResponse(_env.get_template(name).render(context), status, headers=_HEADERS)


def broken_link(request: Request, heading: str, text: str) -> HTMLResponse:
    """A 404 page for a link that is cut, changed or no longer known: what to do instead."""
    try:
        _name, contact = request.app.state.ws.settings.sender_address()
    except ListkitError:
        contact = None
    return page("broken.html", 404, request=request, heading=heading, text=text, contact=contact)


def signup_form(action: str, form_name: str) -> Markup:
    """The HTML form that signs up to a list (also what `listkit form` prints).

    Its element ids are its own (the form's name and a random suffix), so that
    two forms pasted into one page never share one and each label finds its field.
    """
    stem = re.sub(r"[^a-z0-9]+", "-", form_name.lower()).strip("-")[:40] or "form"
    prefix = f"lk-{stem}-{secrets.token_hex(3)}"
    return Markup(
        _env.get_template("form.html").render(action=action, form_name=form_name, prefix=prefix)
    )


def _agent(request: Request) -> str | None:
    return request.headers.get("user-agent")


# --- unsubscribe -------------------------------------------------------------


def _unsubscribe_token(request: Request) -> str | None:
    token, sig = request.path_params["token"], request.path_params["sig"]
    secret = request.app.state.ws.settings.secret_key()
    if not is_token(token) or not verify_unsubscribe(secret, token, sig):
        return None
    return token


def _broken_unsubscribe(request: Request) -> HTMLResponse:
    return broken_link(
        request,
        "This unsubscribe link does not work",
        "It may have been cut or changed on its way here (a long link split over two "
        "lines does that), or it names a message we have no record of. Open the message "
        "again and use its Unsubscribe link, or your mail program's Unsubscribe button.",
    )


async def unsubscribe_page(request: Request) -> Response:
    token = _unsubscribe_token(request)
    if token is None:
        return _broken_unsubscribe(request)
    db = request.app.state.db
    if request.method in ("GET", "HEAD"):
        secret = request.app.state.ws.settings.secret_key()
        standing = await db.read(delivery_standing, secret, token)
        if standing is None:
            return _broken_unsubscribe(request)
        if standing["already"]:
            return _unsubscribed(request, standing)
        return page(
            "unsubscribe.html",
            request=request,
            email=standing["email"],
            list_name=standing["list_title"] or standing["list"],
        )
    body = await read_body(request, FORM_LIMIT)
    everything = _unsubscribe_scope(request, body)
    result = await db.write(
        partial(
            unsubscribe_delivery,
            secret=request.app.state.ws.settings.secret_key(),
            token=token,
            everything=everything,
            ip=client_ip(request),
            agent=_agent(request),
        )
    )
    if result is None:
        return _broken_unsubscribe(request)
    return _unsubscribed(request, result)


def _unsubscribed(request: Request, result: dict) -> HTMLResponse:
    """What the unsubscribe did (or had done), and "everything" while there is more to leave."""
    heading, lines = describe_unsubscribe(result)
    return page(
        "unsubscribed.html",
        request=request,
        heading=heading,
        lines=lines,
        email=result["email"],
        everything=result["everything"] or result["suppressed"],
    )


def _unsubscribe_scope(request: Request, body: bytes) -> bool:
    """True for "from everything"; the RFC 8058 one-click body (urlencoded or
    multipart) and the page's "this list" button mean the delivery's list."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    text = body.decode("utf-8", "replace")
    if ctype == "multipart/form-data":
        if 'name="List-Unsubscribe"' in text and "One-Click" in text:
            return False
        raise HTTPException(400, f"Expected the body {ONE_CLICK}.")
    fields = dict(parse_qsl(text, keep_blank_values=True, max_num_fields=10))
    if fields.get("List-Unsubscribe") == "One-Click":
        return False
    scope = fields.get("scope")
    if scope in ("list", "all"):
        return scope == "all"
    raise HTTPException(400, f"Expected the body {ONE_CLICK} or the page's form.")


# --- signup and confirmation ---------------------------------------------------


class SignupLimiter:
    """At most ``limit`` signups per client address in ``window`` seconds."""

    def __init__(self, limit: int = SIGNUP_LIMIT, window: float = SIGNUP_WINDOW):
        self.limit, self.window = limit, window
        self.hits: dict[str, deque[float]] = {}

    def allow(self, ip: str | None) -> bool:
        key = ip or "?"
        t = time.monotonic()
        if len(self.hits) > 10_000:  # forget old addresses instead of growing without bound
            self.hits = {k: v for k, v in self.hits.items() if v and v[-1] > t - self.window}
        hits = self.hits.setdefault(key, deque())
        while hits and hits[0] <= t - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(t)
        return True


class ConfirmationMailer:
    """Mails confirmations off the request path, one task per app.

    Every signup is a ``signups`` row in state ``new``; the task decides
    each (``signups.claim_confirmations``: the daily and hourly limits, who
    is already a member or suppressed), claims those to be mailed (committed
    before sending, so a crash never mails twice), sends each through the
    workspace's SMTP settings (``send_one``: the campaigns' transaction, DKIM
    when configured, the bounce address as envelope sender), and records the
    answer. It starts with the app: rows left ``sending`` by a run that
    stopped become ``unknown`` (never mailed again), rows still ``new`` are
    decided then; it looks again on each signup and every ``PERIOD`` seconds.

    After a confirmation it also mails the first step of the list's ``joined:``
    sequences that go at once (``after = "0m"``, the lead magnet), through the
    sequences' outbox and the campaigns' send (``sequence_due.send_sequences``
    with ``first_only``, in a thread, under the send lock); what it cannot send
    (the server down, a `send` holding the lock) `listkit send --due` sends.
    """

    PERIOD = 60.0
    GATHER = 1.0  # seconds of signups decided and mailed together
    BATCH = 200  # signups decided in one write, their answers recorded in one

    def __init__(self, app, clock: Callable[[], datetime] | None = None) -> None:
        self.app = app
        # The time the limits count from (a test passes its own clock).
        self.clock = clock or (lambda: datetime.now(UTC))
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.stopping = False
        self._mail: tuple[tuple, signups.ConfirmationMail] | None = None
        self.joined = True  # a confirmation may have enrolled a reader: look at sequences

    async def start(self) -> None:
        self.stopping = False
        cut_off = await self.app.state.db.write(signups.settle_cut_off)
        if cut_off:
            log.warning("%d confirmation(s) cut off by a stop marked unknown, not resent", cut_off)
        self.poke()

    async def stop(self) -> None:
        # The flag ends the loop even if a cancellation is lost on the way (as
        # asyncio.wait_for loses one that arrives as its awaited event is set);
        # asyncio.wait neither swallows a cancellation of stop() itself.
        self.stopping = True
        self.wake.set()
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait({self.task})

    def poke(self) -> None:
        if self.stopping:
            return
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        self.wake.set()

    async def _run(self) -> None:
        while not self.stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.PERIOD):
                    await self.wake.wait()
            # The signups of the next moment are decided and mailed together:
            # the work lands on few requests' time, whichever kind woke it.
            await asyncio.sleep(self.GATHER)
            self.wake.clear()
            if self.stopping:
                return
            try:
                await self._mail_due()
            except Exception as e:  # the database, say: tried again at the next wake
                log.error("confirmations not mailed now: %s", type(e).__name__)
            if self.joined:
                self.joined = False
                try:
                    await asyncio.to_thread(self._lead_magnets)
                except Exception as e:  # `send --due` sends what is left
                    log.error("sequence first steps not sent now: %s", type(e).__name__)

    def confirmed(self) -> None:
        """A reader confirmed: their sequences' first steps may go now."""
        self.joined = True
        self.poke()

    def _lead_magnets(self) -> None:
        """The first steps due now of ``joined:`` sequences that go at once."""
        ws = self.app.state.ws
        if not ws.sequences_dir.is_dir():
            return
        # Lazy: the campaign sender, loaded only by a service whose workspace has sequences.
        from listkit.send.sequence_due import send_sequences

        mine = Workspace(ws.root, _settings=ws.settings)
        try:
            for outcome in send_sequences(mine, at=self.clock(), first_only=True):
                if outcome.action != "sent":
                    log.warning("sequence %s: %s now", outcome.step, outcome.action)
        finally:
            mine.close()

    async def _mail_due(self) -> None:
        ws, db = self.app.state.ws, self.app.state.db
        while True:
            try:
                per_hour = ws.settings.confirm_per_hour
            except ConfigError as e:  # the signups wait for the setting to be fixed
                log.error("confirmations not mailed now: %s", e)
                return
            batch, more = await db.write(
                partial(
                    signups.claim_confirmations,
                    at=self.clock(),
                    per_hour=per_hour,
                    limit=self.BATCH,
                )
            )
            if not batch:
                if more:
                    continue
                return
            try:
                mail = self._confirmation_mail()
                smtp = ws.settings.smtp()
                bounces = ws.settings.bounce_address
            except ListkitError as e:  # a setting or the template: none can be mailed
                log.error("confirmations not sent: %s", e)
                answers = [(signup["id"], False, str(e)) for signup in batch]
            else:
                answers = [await self._mail_one(mail, smtp, bounces, s) for s in batch]
            # One commit for the batch: the service's writes stay few. A stop
            # before it leaves these 'sending', and so 'unknown', never resent.
            await db.write(_mark_all, answers)

    def _confirmation_mail(self) -> signups.ConfirmationMail:
        """The confirmation message's templates, read again only when a file of
        ``offers/_confirm/`` changed (reading them costs more than a message)."""
        ws = self.app.state.ws
        folder = ws.offers_dir / signups.CONFIRM_DIR
        try:
            key = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()))
        except OSError:
            key = None
        if key is None or self._mail is None or self._mail[0] != key:
            mail = signups.ConfirmationMail(ws.settings, ws.offers_dir)
            self._mail = (key, mail) if key is not None else None
            return mail
        return self._mail[1]

    async def _mail_one(
        self, mail, smtp, bounces: str | None, signup: dict
    ) -> tuple[int, bool, str]:
        """Mail one claimed confirmation; (signup, sent, reply). The log names the
        signup, never the address (the reason, with the reply, is in ``signups``)."""
        # VERP as campaigns: the signup's own token names what bounced.
        envelope = envelope_sender(bounces, mail.sender_address, signup["nonce"])
        try:
            reply = await send_one(smtp, envelope, signup["email"], mail.build(signup))
            return signup["id"], True, reply
        except Exception as e:  # ListkitError says why; anything else: recorded, not retried
            reply = str(e) if isinstance(e, ListkitError) else f"{type(e).__name__}: {e}"
            log.error("confirmation of signup %d not sent: %s", signup["id"], type(e).__name__)
            return signup["id"], False, reply


def _mark_all(db, answers: list[tuple[int, bool, str]]) -> None:
    for signup_id, ok, reply in answers:
        signups.mark_mailed(db, signup_id, ok, reply)


@contextlib.asynccontextmanager
async def lifespan(app):
    """Start the confirmation mailer with the app (mailing what waited), stop it with it."""
    mailer = _state_mailer(app)
    await mailer.start()
    try:
        yield
    finally:
        await mailer.stop()


def _state_mailer(app) -> ConfirmationMailer:
    state = app.state
    if getattr(state, "mailer", None) is None:
        state.mailer = ConfirmationMailer(app)
        state.limiter = SignupLimiter()
    return state.mailer


def _mailer(request: Request) -> ConfirmationMailer:
    return _state_mailer(request.app)


async def signup(request: Request) -> Response:
    slug = request.path_params["list"]
    db = request.app.state.db
    try:
        lst = await db.read(get_list, slug)
    except (NotFound, InputError):
        raise HTTPException(404, "There is no such list.") from None
    list_name = lst["title"] or lst["slug"]
    if request.method in ("GET", "HEAD"):
        return page("signup.html", list_name=list_name, form=signup_form("", slug))
    arrived = time.monotonic()
    mailer = _mailer(request)
    form = await read_form(request, FORM_LIMIT)
    ip = client_ip(request)
    if not request.app.state.limiter.allow(ip):
        raise HTTPException(429, "Too many signups from your address. Try again in a while.")
    done = page("signup_done.html", list_name=list_name, days=CONFIRM_DAYS)
    if form.get("website"):  # the honeypot: a person never fills it in
        await _not_before(arrived + ANSWER_FLOOR)
        return done
    try:
        await db.write(
            partial(
                signups.record_signup,
                list_slug=slug,
                email=form.get("email", ""),
                name=form.get("name"),
                ip=ip,
                agent=_agent(request),
                page=request.headers.get("referer") or form.get("page"),
                form=form.get("form") or slug,
            )
        )
    except InputError:
        return page(
            "notice.html",
            400,
            heading="That is not an email address",
            text="Go back and check the address you typed.",
        )
    mailer.poke()  # whoever it is: the mailer decides, after the answer
    await _not_before(arrived + ANSWER_FLOOR)
    return done


async def _not_before(when: float) -> None:
    """Wait until ``when`` (``time.monotonic()``): what varies beneath the floor
    (a commit that waits for the writer, the mailer busy with an earlier
    signup, a loaded machine) does not show in the answer's time."""
    await asyncio.sleep(max(0.0, when - time.monotonic()))


def _confirm_nonce(request: Request) -> str:
    secret = request.app.state.ws.settings.secret_key()
    parsed = parse_confirm_token(secret, request.path_params["token"])
    if parsed is None:
        raise HTTPException(
            404, "This confirmation link is not valid. Use the link in the message."
        )
    nonce, expires = parsed
    if time.time() > expires:
        raise HTTPException(
            410, f"This confirmation link has expired (after {CONFIRM_DAYS} days). Sign up again."
        )
    return nonce


async def confirm(request: Request) -> Response:
    nonce = _confirm_nonce(request)
    db = request.app.state.db
    found = await db.read(signups.signup_by_nonce, nonce)
    if found is None:
        raise HTTPException(404, "This confirmation link is not valid any more.")
    list_name = found["list_title"] or found["list"]
    if request.method in ("GET", "HEAD"):
        return page("confirm.html", list_name=list_name, email=found["email"])
    await read_body(request, FORM_LIMIT)
    result = await db.write(
        partial(signups.confirm_signup, nonce=nonce, ip=client_ip(request), agent=_agent(request))
    )
    if result == "suppressed":
        raise HTTPException(
            409, "This address cannot be subscribed (it bounced or was blocked). Contact us."
        )
    if result == "confirmed":
        _mailer(request).confirmed()  # the lead magnet, off the request path
    return page("confirmed.html", list_name=list_name, email=found["email"])


# --- clicks ----------------------------------------------------------------------


async def click(request: Request) -> Response:
    token, link, sig = (request.path_params[k] for k in ("token", "link", "sig"))
    state = request.app.state
    ws = state.ws
    if not (is_token(token) and is_link_id(link)) or not verify_click(
        ws.settings.secret_key(), token, link, sig
    ):
        return _broken_click(request)
    agent, ip = _agent(request), client_ip(request)
    # The common case in one step on the writer: the link's destination is stored.
    secret = ws.settings.secret_key()
    found = await state.db.write(
        clicks.record_known_click, secret, token, link, request.method, agent, ip, now()
    )
    if found is None:
        return _broken_click(request)
    url = found["url"]
    if url is None:  # the campaign's first click on this link: render the offer to find it
        try:
            url = await _first_click(request, token, link, agent, ip)
        except HTTPException as e:
            if e.status_code != 404:
                raise
            return _broken_click(request)
    destination = track(
        url,
        campaign=found["campaign"],
        list_slug=found["list"],
        token=token,
        token_param=ws.settings.token_param,
    )
    return RedirectResponse(destination, 302, headers={"Referrer-Policy": "no-referrer"})


def _broken_click(request: Request) -> HTMLResponse:
    return broken_link(
        request,
        "This link does not work",
        "It may have been cut or changed on its way here (a long link split over two "
        "lines does that). Open the message again and use its link.",
    )


async def _first_click(request: Request, token: str, link: str, agent, ip) -> str:
    """Resolve a link the campaign has not stored yet, record the click; its destination.

    The clicks of a campaign's first minutes come together: one rendering of
    the offer (per offer of the campaign) finds and stores its links, and
    every click that came meanwhile waits for that one instead of rendering
    it again (which kept the service busy for a second).
    """
    state = request.app.state
    secret = state.ws.settings.secret_key()
    delivery = await state.db.read(clicks.delivery_for_click, secret, token)
    if delivery is None:
        raise HTTPException(404, "This link is not valid any more.")
    key = (delivery["campaign_id"], delivery["offer"])
    # One rendering per campaign and offer, kept by this app (and so of its
    # event loop): a click that comes after it finished finds its result here,
    # as later clicks find the stored links.
    renders = getattr(state, "link_renders", None)
    if renders is None:
        renders = state.link_renders = {}
    if key not in renders:
        renders[key] = asyncio.ensure_future(_store_links(state, delivery))
    try:
        url = (await asyncio.shield(renders[key])).get(link)
    except Exception:
        renders.pop(key, None)  # the next click tries again
        raise
    if url is None:  # not in that rendering: a link of this subscriber's own
        url = (await _store_links(state, delivery)).get(link)
    if url is None:
        raise HTTPException(404, "This link is not in the offer any more.")
    at = now()
    kind = clicks.click_kind(request.method, agent, delivery["sent_at"], at)
    await state.db.write(clicks.record_click, delivery["id"], kind, at, url, ip, agent)
    return url


async def _store_links(state, delivery: dict) -> dict[str, str]:
    """Render the delivery's offer and store the links it tracks; {link id: url}."""
    ws = state.ws
    try:
        rendered = await asyncio.to_thread(
            clicks.links_as_rendered, ws.settings, ws.offers_dir, delivery
        )
    except ListkitError as e:
        log.error("cannot render the offer of a clicked link: %s", e)
        return {}
    await state.db.write(clicks.store_links, delivery["campaign_id"], rendered)
    return rendered


routes = [
    Route("/u/{token}/{sig}", unsubscribe_page, methods=["GET", "HEAD", "POST"]),
    Route("/s/{list}", signup, methods=["GET", "HEAD", "POST"]),
    Route("/confirm/{token}", confirm, methods=["GET", "HEAD", "POST"]),
    Route("/c/{token}/{link}/{sig}", click, methods=["GET", "HEAD"]),
]
