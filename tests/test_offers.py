"""Offers: loading, sandboxed rendering, composing, and the offers commands."""

import json
import re
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import jinja2.sandbox
import pytest

from listkit.config import load_settings
from listkit.errors import HeaderInjection, NotFound, TemplateError
from listkit.mail.compose import Composer
from listkit.mail.offers import list_offers, load_offer, renders_once_per_list
from listkit.mail.tracking import track


def write_offer(root: Path, slug="deal", toml=None, text="Hi {{ subscriber.name }}\n", html=None):
    folder = root / "offers" / slug
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "offer.toml").write_text(
        toml
        if toml is not None
        else 'subject = "Deal for {{ subscriber.name }}"\nurl = "https://shop.example.com/x"\n'
        'product = "Guide"\nprice = "19.00"\ncurrency = "usd"\ncoupon = "SAVE"\n'
    )
    (folder / "text.j2").write_text(text)
    if html is not None:
        (folder / "html.j2").write_text(html)
    return folder


def composer(workspace: Path, slug="deal"):
    return Composer(
        load_offer(workspace / "offers", slug),
        load_settings(workspace),
        campaign="spring",
        offers_dir=workspace / "offers",
    )


def compose(workspace, subscriber=None, slug="deal"):
    sub = {
        "id": 1,
        "email": "ann@example.com",
        "key": "ann@example.com",
        "name": "Ann",
        "fields": {},
    }
    sub.update(subscriber or {})
    return composer(workspace, slug).compose(
        subscriber=sub, list_slug="blog", list_title="Blog", token="abcdefghijklmnop"
    )


def test_shipped_example_offer_loads_and_composes(workspace):
    offer = load_offer(workspace / "offers", "launch")
    assert (offer.product, offer.price, offer.currency, offer.has_html) == (
        "The Field Guide to Selling (ebook)",
        "29.00",
        "USD",
        True,
    )
    message = compose(workspace, slug="launch")
    msg = message_from_bytes(message.data, policy=default)
    assert msg.defects == []
    assert "utm_campaign=spring" in message.text and "lk=abcdefghijklmnop" in message.text


def test_offer_toml_errors_name_the_file_and_field(workspace):
    folder = write_offer(workspace, toml='subject = "x"\nurl = "https://x.example"\n')
    with pytest.raises(TemplateError) as e:
        load_offer(workspace / "offers", "deal")
    assert str(e.value) == f"{folder / 'offer.toml'}: missing field product, price, currency"
    write_offer(
        workspace,
        toml='subject = "x"\nurl = "https://x"\nproduct="p"\nprice="abc"\ncurrency="USD"\n',
    )
    with pytest.raises(
        TemplateError, match=re.escape("field price must be a decimal such as \"29.00\", not 'abc'")
    ):
        load_offer(workspace / "offers", "deal")
    write_offer(workspace, toml='subject = "x"\nprize = 1\n')
    with pytest.raises(TemplateError, match="unknown field prize"):
        load_offer(workspace / "offers", "deal")
    write_offer(workspace, toml="subject = \n")
    with pytest.raises(TemplateError, match=r"offer\.toml: "):
        load_offer(workspace / "offers", "deal")


def test_missing_offer_lists_the_known_ones(workspace):
    with pytest.raises(
        NotFound,
        match=r"no offer 'nope' in .* \(offers: field-guide-workbook, launch, launch-last-day, "
        r"launch-reminder, purchase-help, welcome-download, welcome-story\)",
    ):
        load_offer(workspace / "offers", "nope")


def test_missing_variable_names_template_line_and_subscriber(workspace):
    write_offer(workspace, text="Hello\n\n{{ subscriber.nickname }}\n")
    with pytest.raises(TemplateError) as e:
        compose(workspace)
    assert str(e.value) == (
        "deal/text.j2, line 3: 'dict object' has no attribute 'nickname' (for ann@example.com)"
    )


def test_syntax_error_names_template_and_line(workspace):
    write_offer(workspace, text="ok\n{% if %}\n")
    with pytest.raises(TemplateError, match=r"^deal/text.j2, line 2: "):
        compose(workspace)


@pytest.mark.parametrize(
    "expression",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ subscriber.__class__ }}",
        "{{ track.__globals__ }}",
        "{{ ().__class__.__bases__[0].__subclasses__() }}",
    ],
)
def test_sandbox_refuses_python_internals(workspace, expression):
    write_offer(workspace, text=f"x\n{expression}\n")
    with pytest.raises(TemplateError) as e:
        compose(workspace)
    assert str(e.value).startswith("deal/text.j2, line 2: ")
    assert "unsafe" in str(e.value) or "not allowed in the sandbox" in str(e.value)


def test_script_name_is_escaped_in_html_and_kept_in_text(workspace):
    write_offer(
        workspace,
        text="Hi {{ subscriber.name }}\n",
        html="<p>Hi {{ subscriber.name }}</p>\n",
    )
    message = compose(workspace, {"name": "<script>alert(1)</script>"})
    assert message.text.startswith("Hi <script>alert(1)</script>\n")
    assert message.html.startswith("<p>Hi &lt;script&gt;alert(1)&lt;/script&gt;</p>")
    assert "<script>" not in message.html


def test_custom_fields_are_available_both_ways(workspace):
    write_offer(workspace, text="{{ subscriber.plan }} {{ subscriber.fields.plan }}\n")
    assert compose(workspace, {"fields": {"plan": "pro"}}).text.startswith("pro pro\n")


def test_footer_is_added_when_templates_leave_out_address_and_unsubscribe(workspace):
    write_offer(workspace, text="Buy now\n", html="<html><body><p>Buy now</p></body></html>\n")
    message = compose(workspace)
    settings = load_settings(workspace)
    postal = settings.postal_address
    assert postal in message.text and "Unsubscribe: https://example.com/listkit/u/" in message.text
    assert postal in message.html and ">Unsubscribe</a></div></body>" in message.html


def test_no_footer_when_templates_carry_both(workspace):
    write_offer(workspace, text="Buy\n{{ unsubscribe_url }}\n{{ postal_address }}\n")
    message = compose(workspace)
    assert message.text.count("/u/abcdefghijklmnop/") == 1
    assert "\n-- \n" not in message.text


def test_personal_coupon_is_reported_when_used(workspace):
    write_offer(workspace, text="Code: {{ personal_coupon() }}\n")
    message = compose(workspace)
    assert message.coupon == "SAVE-ABCDEFGH"
    assert "Code: SAVE-ABCDEFGH" in message.text
    write_offer(workspace, text="No code\n")
    assert compose(workspace).coupon is None


@pytest.mark.parametrize(
    "subscriber, subject, where",
    # A line break in a name or field reaches a header as a space (tests/test_names.py);
    # what is left to refuse: control characters the template writes, encoded-words.
    [
        ({}, "Deal\\u0000", "Subject"),
        ({}, "=?UTF-8?Q?=0D=0A?=Bcc: x@example.com", "Subject"),
        ({"name": "=?UTF-8?Q?=0D=0A?=Bcc: x@example.com"}, None, "To name"),
    ],
)
def test_header_injection_through_data_or_subject_is_refused(workspace, subscriber, subject, where):
    toml = None
    if subject is not None:
        toml = (
            f'subject = "{subject}"\nurl = "https://shop.example.com/x"\n'
            'product = "Guide"\nprice = "19.00"\ncurrency = "USD"\n'
        )
    write_offer(workspace, toml=toml)
    with pytest.raises(HeaderInjection) as e:
        compose(workspace, subscriber)
    assert str(e.value).startswith(f"{where} for ann@example.com contains a control character")


def test_composer_names_every_missing_setting(workspace):
    (workspace / ".env").write_text("LISTKIT_FROM=Me <me@example.com>\n")
    with pytest.raises(Exception) as e:
        composer(workspace, "launch")
    assert str(e.value).startswith(
        "LISTKIT_POSTAL_ADDRESS, LISTKIT_BASE_URL, LISTKIT_SECRET are not set"
    )


def test_offers_ls(run, workspace):
    write_offer(workspace)
    out = run("offers", "ls").output
    assert "launch" in out and "USD 29.00" in out and "deal" in out and "USD 19.00" in out
    rows = json.loads(run("offers", "ls", "--json").output)
    assert [r["slug"] for r in rows] == [
        "deal",
        "field-guide-workbook",
        "launch",
        "launch-last-day",
        "launch-reminder",
        "purchase-help",
        "welcome-download",
        "welcome-story",
    ]
    assert list_offers(workspace / "offers")[0].coupon == "SAVE"


def test_offers_check_reports_each_failing_subscriber(run, workspace):
    write_offer(workspace, text="{{ subscriber.city }}\n")
    run("lists", "create", "blog")
    run("subscribers", "add", "a@example.com", "--list", "blog", "--field", "city=Rome")
    run("subscribers", "add", "b@example.com", "--list", "blog")
    result = run("offers", "check", "deal", "--list", "blog", ok=False)
    assert result.exit_code == 1
    assert (
        "b@example.com: deal/text.j2, line 1: 'dict object' has no attribute 'city' "
        "(for b@example.com)" in result.output
    )
    assert "a@example.com:" not in result.output
    assert "Error: offer deal: 1 of 2 subscribers of blog failed to render" in result.output
    ok = run("offers", "check", "launch", "--list", "blog")
    assert ok.output == "Offer launch: renders for all 2 subscribers of blog.\n"


def test_offers_check_without_a_list_uses_a_sample(run):
    assert run("offers", "check", "launch").output == (
        "Offer launch: renders for the sample subscriber.\n"
    )


def test_offers_preview_prints_headers_and_text_and_writes_eml(run, workspace, tmp_path):
    run("lists", "create", "blog", "--title", "Blog readers")
    run("subscribers", "add", "ann@example.com", "--list", "blog", "--name", "Ann")
    out = run("offers", "preview", "launch", "--email", "ann@example.com").output
    assert "To: Ann <ann@example.com>" in out
    assert "Subject: Ann, the Field Guide is out: 30% off this week" in out
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in out
    assert "Hi Ann," in out and "utm_content=blog" in out
    eml = tmp_path / "m.eml"
    assert "Wrote" in run("offers", "preview", "launch", "--eml", str(eml)).output
    msg = message_from_bytes(eml.read_bytes(), policy=default)
    assert msg["To"].addresses[0].addr_spec == "reader@example.com"
    assert msg.defects == []


def html_of(message) -> str:
    msg = message_from_bytes(message.data, policy=default)
    return msg.get_body(("html",)).get_content()


def test_shipped_layout_renders_the_preheader_as_a_template(workspace):
    message = compose(workspace, slug="launch")
    html = html_of(message)
    assert "Launch week price, for readers of Blog only." in html
    assert "{{" not in html and "{%" not in html


def test_shipped_layout_has_a_viewport_and_hides_the_preheader_robustly(workspace):
    html = html_of(compose(workspace, slug="launch"))
    assert re.search(r'<meta name="viewport" content="width=device-width, initial-scale=1">', html)
    hidden = re.search(r'<div style="([^"]*)">Launch week price', html).group(1)
    for rule in ("display:none", "max-height:0", "overflow:hidden", "opacity:0", "mso-hide:all"):
        assert rule in hidden.replace(" ", "")


def test_shipped_text_signature_delimiter_has_its_trailing_space(workspace):
    text = compose(workspace, slug="launch").text
    assert "\n-- \n" in text
    assert "\n--\n" not in text


@pytest.mark.parametrize(
    "where, toml_subject, text, html",
    [
        ("subject", "{{ '{{' }} name }} deal", "Hi\n", None),
        ("text.j2", "Deal", "Hi {{ '{{ subscriber.name }}' }}\n", None),
        ("html.j2", "Deal", "Hi\n", "<p>{{ '{% if x %}' }}</p>"),
        ("preheader", "Deal", "Hi\n", "<p>{{ offer.preheader }}</p>"),
    ],
)
def test_offers_check_fails_when_the_output_keeps_template_syntax(
    run, workspace, where, toml_subject, text, html
):
    preheader = "{{ '{{' }} oops }}" if where == "preheader" else "Fine"
    write_offer(
        workspace,
        toml=f'subject = "{toml_subject}"\npreheader = "{preheader}"\n'
        'url = "https://shop.example.com/x"\nproduct = "Guide"\nprice = "19.00"\n'
        'currency = "USD"\n',
        text=text,
        html=html,
    )
    result = run("offers", "check", "deal", ok=False)
    assert result.exit_code == 1
    assert "template syntax left in the output" in result.output
    assert where.split(".")[0] in result.output


def test_sandbox_is_immutable_so_no_recipient_changes_the_offer_for_the_next(workspace):
    write_offer(
        workspace,
        text="{% set x = offer.update({'price': '0.00'}) %}{{ offer.price }}\n",
    )
    with pytest.raises(TemplateError, match="not allowed in the sandbox"):
        compose(workspace)


@pytest.mark.parametrize(
    "price", ['"1e999999999"', '"Infinity"', '"NaN"', "inf", "nan", "1e400", '"1e3"', '"-1"']
)
def test_absurd_or_non_finite_prices_are_refused_with_file_and_field(workspace, price):
    write_offer(
        workspace,
        toml='subject = "S"\nurl = "https://shop.example.com/x"\nproduct = "Guide"\n'
        f'price = {price}\ncurrency = "USD"\n',
    )
    with pytest.raises(TemplateError, match=r"offer\.toml: field price must be"):
        load_offer(workspace / "offers", "deal")


def test_expires_must_be_a_date(workspace):
    write_offer(
        workspace,
        toml='subject = "S"\nurl = "https://shop.example.com/x"\nproduct = "Guide"\n'
        'price = "1.00"\ncurrency = "USD"\nexpires = "next friday"\n',
    )
    with pytest.raises(TemplateError, match=r"offer\.toml: field expires must be a date"):
        load_offer(workspace / "offers", "deal")


def test_offers_preview_shows_the_html_part_too(run):
    out = run("offers", "preview", "launch").output
    assert "Hi Sample Reader," in out
    assert "--- HTML part ---" in out
    assert "<strong>Field Guide to Selling</strong>" in out


@pytest.fixture
def browsers(monkeypatch):
    """What the webbrowser module finds, set per test; the pages it is asked to open."""
    import webbrowser

    for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"):
        monkeypatch.delenv(name, raising=False)
    opened: list[str] = []
    found: list[webbrowser.BaseBrowser] = []

    def get(using=None):
        if not found:
            raise webbrowser.Error("could not locate runnable browser")
        return found[0]

    monkeypatch.setattr(webbrowser, "get", get)
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    return found, opened


def test_offers_preview_open_writes_the_html_and_opens_it(run, monkeypatch, browsers):
    import webbrowser

    found, opened = browsers
    found.append(webbrowser.GenericBrowser("firefox"))
    monkeypatch.setenv("DISPLAY", ":0")
    out = run("offers", "preview", "launch", "--open").output
    assert len(opened) == 1 and opened[0].startswith("file://")
    path = Path(opened[0].removeprefix("file://"))
    assert "Get the Field Guide" in path.read_text()
    assert f"Opened {path} in a browser." in out


@pytest.mark.parametrize("console", [None, "lynx"])
def test_offers_preview_open_without_a_browser_to_open_says_where_the_file_is(
    run, browsers, console
):
    import webbrowser

    found, opened = browsers
    if console:  # a text browser, found on a server with no display: not for a page
        found.append(webbrowser.GenericBrowser(console))
    out = run("offers", "preview", "launch", "--open").output
    assert opened == []
    line = next(x for x in out.splitlines() if "HTML part" in x and ".html" in x)
    path = Path(line.rsplit(" ", 1)[1])
    assert line == (
        f"No browser can be opened here (no graphical display): the HTML part is in {path}"
    )
    assert "Get the Field Guide" in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert "Opening" not in out


def test_campaigns_check_fails_when_a_message_keeps_template_syntax(run, workspace):
    run("lists", "create", "blog")
    run("lists", "create", "customers")
    run("subscribers", "add", "ann@example.com", "--list", "blog", "--name", "Ann")
    text = workspace / "offers" / "launch" / "text.j2"
    text.write_text(text.read_text() + "P.S. {{ '{{ offer.coupon }}' }}\n")
    result = run("campaigns", "check", "launch", ok=False)
    assert result.exit_code == 1
    assert "launch/text.j2: template syntax left in the output" in result.output
    assert "1 of 1 messages fail to render" in result.output


def test_a_preview_eml_over_the_database_is_refused_and_the_database_kept(run, workspace):
    run("lists", "create", "blog")
    db = workspace / "listkit.db"
    result = run("offers", "preview", "launch", "--eml", str(db), ok=False)
    assert result.exit_code == 1
    assert result.output == f"Error: --eml {db} is this workspace's database: name another file\n"
    assert "blog" in run("lists", "ls").output


@pytest.mark.parametrize("slug", ["launch", "launch-reminder", "launch-last-day"])
def test_shipped_layout_hides_the_preheader_without_text_coloured_like_its_background(
    workspace, slug
):
    # SpamAssassin scores text whose colour is close to the background's
    # (HTML_FONT_LOW_CONTRAST, +0.7), and counts `transparent` as such.
    html = html_of(compose(workspace, slug=slug))
    styles = [
        dict(d.split(":", 1) for d in style.replace(" ", "").split(";") if ":" in d)
        for style in re.findall(r'style="([^"]*)"', html)
    ]
    hidden = [s for s in styles if s.get("display") == "none"]
    assert hidden, "the preheader is not hidden"
    for declarations in hidden:
        assert "color" not in declarations, declarations
        assert declarations.get("mso-hide") == "all" and declarations.get("opacity") == "0"


def test_each_reader_gets_the_tracked_links_track_makes_for_their_own_token(workspace):
    links = [
        "https://buy.stripe.com/abc?prefilled=1&utm_source=old#pay",
        "https://shop.example.com/a b?x=%C3%A9&y=",
    ]
    text = "".join(f"{{{{ track({link!r}) }}}}\n" for link in links) + "{{ buy_url }}\n"
    write_offer(workspace, text=text)
    c = composer(workspace)
    for list_slug, token in (("blog", "abcdefghijklmnop"), ("news", "zyxwvu2345677654")):
        sub = {"id": 1, "email": "ann@example.com", "name": "Ann", "fields": {}}
        message = c.compose(subscriber=sub, list_slug=list_slug, list_title=None, token=token)
        expected = [
            track(url, campaign="spring", list_slug=list_slug, token=token)
            for url in (*links, "https://shop.example.com/x")
        ]
        assert message.text.splitlines()[: len(expected)] == expected


@pytest.mark.parametrize(
    ("source", "once"),
    [
        ("Launch week for readers of {{ list.title or list.slug }}", True),
        (
            "{{ offer.product }} at {{ offer.price }} ({{ campaign.slug }}) {{ postal_address }}",
            True,
        ),
        ("{% set name = list.slug|upper %}{{ name }}", True),
        ("Plain words", True),
        ("{{ subscriber.name or 'Friend' }}, it is out", False),
        ("{{ buy_url }}", False),
        ("{{ track(offer.url) }}", False),
        ("{{ personal_coupon() }}", False),
        ("{{ ['a', 'b']|random }}", False),
        ("{% filter random %}ab{% endfilter %}", False),
        ("{{ lipsum(1) }}", False),
        ("{{ cycler('a', 'b').next() }}", False),
        ("{{ subscriber.name }}{% set subscriber = list %}", False),
        ("{% for i in range(2) %}{{ i }}{% endfor %}", False),
        ("{% include 'deal/part.j2' %}", False),
        ("{% from 'macros.j2' import m %}{{ m() }}", False),
    ],
)
def test_a_subject_or_preheader_renders_once_per_list_only_when_it_reads_nothing_else(source, once):
    env = jinja2.sandbox.ImmutableSandboxedEnvironment()
    assert renders_once_per_list(env, source) is once


def test_readers_of_two_lists_each_get_their_own_lists_preheader_and_their_own_subject(
    workspace,
):
    write_offer(
        workspace,
        toml='subject = "Deal for {{ subscriber.name }}"\n'
        'preheader = "For readers of {{ list.title }}"\nurl = "https://shop.example.com/x"\n'
        'product = "Guide"\nprice = "19.00"\ncurrency = "usd"\n',
        html="<p>{{ preheader }}</p><p>{{ subject }}</p>\n",
    )
    made = composer(workspace)
    readers = [("Ann", "blog", "Blog"), ("Bob", "news", "News"), ("Cy", "blog", "Blog")]
    for i, (name, slug, title) in enumerate(readers):
        message = made.compose(
            subscriber={"id": i, "email": f"{name}@example.com", "name": name, "fields": {}},
            list_slug=slug,
            list_title=title,
            token=f"abcdefghijklmno{i}",
        )
        assert message.subject == f"Deal for {name}"
        assert message.html.startswith(f"<p>For readers of {title}</p><p>Deal for {name}</p>")
