"""Messages built by listkit parse cleanly and say exactly what was rendered."""

import binascii
from email import message_from_bytes
from email.policy import default

import pytest
from hypothesis import given
from hypothesis import strategies as st

from listkit.errors import HeaderInjection
from listkit.mail import mime
from listkit.mail.mime import MessageBuilder, Parts, QuotedPrintable, check_header


def builder(name="Shop Owner"):
    return MessageBuilder(
        sender_name=name, sender_address="owner@shop.example.com", list_id="blog.shop.example.com"
    )


def parts(**kw):
    base = dict(
        to_address="ann@example.com",
        to_name="Ann",
        subject="Hello",
        text="Hi Ann\n",
        html="<p>Hi Ann</p>\n",
        message_id="<t1.lk@shop.example.com>",
        unsubscribe_url="https://shop.example.com/u/t1/sig",
    )
    base.update(kw)
    return Parts(**base)


def parse(data: bytes):
    msg = message_from_bytes(data, policy=default)
    assert msg.defects == []
    for part in msg.walk():
        assert part.defects == [], part.defects
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert b"\n" not in data.replace(b"\r\n", b"")
    return msg


def body(msg, kind):
    return msg.get_body((kind,)).get_content().replace("\r\n", "\n")


CASES = {
    "ascii": ("Big news", "Ann", "Hello there\n"),
    "latin": ("Éditions spéciales à prix réduit", "Zoë Müller-Lüdenscheidt", "Grüße aus Köln\n"),
    "cjk": ("新しい本が出ました。今週だけ三割引です。", "山田 太郎", "こんにちは、山田さん。\n"),
    "emoji": ("🚀 Launch day 🎉 30% off", "Ann 😀", "Thanks 🙏 for reading 📚\n"),
}


@pytest.mark.parametrize("case", CASES)
def test_message_parses_without_defects_and_decodes_to_what_was_rendered(case):
    subject, name, text = CASES[case]
    html = f"<p>{text.strip()}</p>\n"
    data = builder(name).build(parts(subject=subject, to_name=name, text=text, html=html))
    msg = parse(data)
    assert msg["Subject"] == subject
    assert msg["To"].addresses[0].display_name == name
    assert msg["To"].addresses[0].addr_spec == "ann@example.com"
    assert msg["From"].addresses[0].display_name == name
    assert body(msg, "plain") == text
    assert body(msg, "html") == html
    assert msg.get_content_type() == "multipart/alternative"


def test_lines_longer_than_998_characters_survive():
    text = "x" * 5000 + "\n" + "é" * 3000 + "\n. a line starting with a dot\n"
    html = "<p>" + "y" * 4000 + "</p>\n"
    msg = parse(builder().build(parts(text=text, html=html, subject="s" * 1200)))
    assert body(msg, "plain") == text
    assert body(msg, "html") == html
    assert msg["Subject"] == "s" * 1200


def test_text_only_message_is_single_part():
    msg = parse(builder().build(parts(html=None)))
    assert msg.get_content_type() == "text/plain"
    assert body(msg, "plain") == "Hi Ann\n"


def test_list_and_unsubscribe_headers_are_present():
    msg = parse(builder().build(parts(), list_name="Blog readers"))
    assert msg["List-Unsubscribe"] == "<https://shop.example.com/u/t1/sig>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Id"] == "Blog readers <blog.shop.example.com>"
    assert msg["Message-ID"] == "<t1.lk@shop.example.com>"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Date"].datetime.utcoffset().total_seconds() == 0


def test_display_names_with_specials_are_quoted():
    msg = parse(builder('Smith, "Jr." (shop)').build(parts(to_name='O\'Brien, Ann "A"')))
    assert msg["From"].addresses[0].display_name == 'Smith, "Jr." (shop)'
    assert msg["To"].addresses[0].display_name == 'O\'Brien, Ann "A"'


def test_literal_encoded_word_text_in_a_subject_is_shown_as_typed():
    msg = parse(builder().build(parts(subject="Use =?utf-8?q?this?= literally")))
    assert msg["Subject"] == "Use =?utf-8?q?this?= literally"


@pytest.mark.parametrize(
    "field, value",
    [
        ("to_name", "Ann\r\nBcc: victim@example.com"),
        ("to_name", "Ann\nX"),
        ("subject", "Hi\rthere"),
        ("subject", "nul\x00byte"),
        ("subject", "=?UTF-8?Q?=0D=0A?=Bcc: x@example.com"),
        ("to_name", "=?utf-8?b?QW5uDQpCY2M6IHhAZXhhbXBsZS5jb20=?="),
        ("to_address", "ann@example.com\r\nBcc: x@example.com"),
    ],
)
def test_header_injection_is_refused_naming_the_field_and_subscriber(field, value):
    with pytest.raises(HeaderInjection) as e:
        builder().build(parts(**{field: value}), who="ann@example.com")
    assert "for ann@example.com contains a control character" in str(e.value)
    assert "nothing was built" in str(e.value)


def test_check_header_accepts_ordinary_unicode():
    assert (
        check_header("Zoë 😀 =?not an encoded word", "Subject", "x")
        == "Zoë 😀 =?not an encoded word"
    )


def test_long_subject_and_list_unsubscribe_are_folded_within_78_characters():
    subject = " ".join(["word"] * 40)
    url = "https://newsletter.example.com/listkit/u/abcdefghijklmnop/" + "s" * 22
    data = builder().build(parts(subject=subject, unsubscribe_url=url))
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        # A line may pass 78 only when it is one unbreakable token (the URL)
        # after the header's name.
        assert len(line) <= 78 or b" " not in line.strip().partition(b": ")[2], line
    msg = parse(data)
    assert msg["Subject"] == subject
    assert msg["List-Unsubscribe"] == f"<{url}>"


def test_a_list_title_of_1500_characters_never_makes_a_line_over_998():
    title = ("Very long list title " * 75).strip()
    data = builder().build(parts(), list_name=title, list_id="blog.shop.example.com")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    msg = parse(data)
    assert "<blog.shop.example.com>" in msg["List-Id"]
    title_nospace = "x" * 1500
    data = builder().build(parts(), list_name=title_nospace, list_id="blog.shop.example.com")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    parse(data)


def test_a_message_that_is_no_list_mail_has_no_list_headers_and_says_it_is_automatic():
    # A signup's confirmation: sent because someone asked, to one address.
    b = MessageBuilder(
        sender_name="Shop Owner",
        sender_address="owner@shop.example.com",
        list_id=None,
        auto_submitted=True,
    )
    data = b.build(parts(unsubscribe_url=None))
    msg = parse(data)
    for name in ("List-Id", "List-Unsubscribe", "List-Unsubscribe-Post"):
        assert name not in msg, name
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["To"].addresses[0].display_name == "Ann"
    assert body(msg, "plain") == "Hi Ann\n"
    assert body(msg, "html") == "<p>Hi Ann</p>\n"


def stdlib_qp(text: str) -> bytes:
    """The whole text through binascii at once, as the builder encoded it before."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    encoded = binascii.b2a_qp(text.encode("utf-8"), quotetabs=False, istext=True, header=False)
    return encoded.replace(b"\n", b"\r\n")


# Lines that meet every rule of b2a_qp: a long one (soft breaks), trailing space
# and tab, a lone dot, "=", non-ASCII, an empty line.
LINES = ["Hi Ann,", "x" * 200, "ends in a space ", "tab\t", ".", ". ", "a=b", "Zoë 😀", ""]
ONE_ENCODER = QuotedPrintable()


@given(st.lists(st.one_of(st.sampled_from(LINES), st.text()), max_size=12), st.booleans())
def test_text_encoded_line_by_line_is_byte_for_byte_what_binascii_makes_of_the_whole(
    lines, final_line_end
):
    text = "\n".join(lines) + ("\n" if final_line_end else "")
    # Twice: the second time from the lines kept.
    assert ONE_ENCODER(text) == stdlib_qp(text)
    assert ONE_ENCODER(text) == stdlib_qp(text)


def test_a_builder_keeps_a_bounded_number_of_encoded_lines(monkeypatch):
    monkeypatch.setattr(mime, "QP_LINES_KEPT", 5)
    b = builder()
    for i in range(20):
        message = b.build(parts(text=f"Hi reader {i}\nthe same line\n", html=None))
        body = message_from_bytes(message, policy=default).get_content()
        assert body.replace("\r\n", "\n") == f"Hi reader {i}\nthe same line\n"
    assert len(b._qp.lines) == 5
