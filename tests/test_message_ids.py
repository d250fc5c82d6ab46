"""One Message-ID builder and parser for every place that makes or reads one."""

import pytest

from listkit.mail.message_ids import message_id, returned_message_id, token_of


def test_message_id_is_on_the_sender_domain():
    assert message_id("abcdefghijklmnop", "example.com") == "<abcdefghijklmnop.lk@example.com>"


def test_a_message_id_on_an_internationalised_domain_is_ascii_in_uts46_a_labels():
    assert message_id("abcdefghijklmnop", "straße.de") == "<abcdefghijklmnop.lk@xn--strae-oqa.de>"


@pytest.mark.parametrize(
    "given",
    [
        "<abcdefghijklmnop.lk@example.com>",
        "ABCDEFGHIJKLMNOP.LK@EXAMPLE.COM",
        "  <abcdefghijklmnop.lk@xn--strae-oqa.de>\n",
    ],
)
def test_the_token_is_read_back_from_our_message_id_in_any_case(given):
    assert token_of(given) == "abcdefghijklmnop"


@pytest.mark.parametrize(
    "given",
    [
        None,
        "",
        "<abcdefghijklmnop.lx@example.com>",
        "<abcdefghijklmno1.lk@example.com>",  # 1 is not in the token alphabet
        "<xabcdefghijklmnop.lk@example.com>",
        "<abcdefghijklmnop.lk@example.com> trailing",
    ],
)
def test_a_message_id_of_another_shape_names_no_delivery(given):
    assert token_of(given) is None


def test_the_first_message_id_header_of_returned_headers_is_found_with_its_token():
    text = "Subject: hi\r\nmessage-id:  <abcdefghijklmnop.lk@example.com>\r\nMessage-ID: <x@y>\r\n"
    assert returned_message_id(text) == (
        "<abcdefghijklmnop.lk@example.com>",
        "abcdefghijklmnop",
    )
    assert returned_message_id("Message-ID: <other@example.com>\n") == ("<other@example.com>", None)
    assert returned_message_id("no headers here") == (None, None)
