"""Sequence files and enrolment: checked like campaigns, readers enrolled where the
trigger happens, only for sequences that existed before it."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from listkit.audience.enrollments import reader_enrollments
from listkit.audience.signups import confirm_signup, record_signup
from listkit.db import immediate
from listkit.errors import InputError
from listkit.sales.sales import Sale, add_sale
from listkit.send.sequence_files import load_sequence, next_step, sync_all
from listkit.workspace import Workspace

EXAMPLES = Path(__file__).resolve().parent.parent / "sequences"


def install(ws: Workspace, *names: str) -> None:
    ws.sequences_dir.mkdir(exist_ok=True)
    for name in names:
        shutil.copyfile(EXAMPLES / f"{name}.toml", ws.sequences_dir / f"{name}.toml")


def write(ws: Workspace, slug: str, text: str) -> Path:
    ws.sequences_dir.mkdir(exist_ok=True)
    path = ws.sequences_dir / f"{slug}.toml"
    path.write_text(text)
    return path


def enrolled(ws: Workspace, slug: str) -> dict[str, tuple]:
    return {
        email: (state, step, next_step)
        for email, state, step, next_step in ws.db.execute(
            """SELECT s.email, e.state, e.step, e.next_step FROM enrollments e
               JOIN sequences q ON q.id = e.sequence_id
               JOIN subscribers s ON s.id = e.subscriber_id WHERE q.slug = ?""",
            [slug],
        )
    }


def test_the_shipped_sequences_load_with_their_steps(ws, world):
    world.list("blog")
    offers = EXAMPLES.parent / "offers"
    welcome = load_sequence(EXAMPLES, offers, "welcome")
    assert [s.name for s in welcome.steps] == ["download", "story", "offer"]
    assert [s.sells for s in welcome.steps] == [False, False, True]
    assert welcome.steps[0].after == timedelta(0)
    after = load_sequence(EXAMPLES, offers, "after-purchase")
    assert (after.kind, after.target) == ("bought", "product:The Field Guide to Selling (ebook)")
    assert after.exits == ("product:The Field Guide Workbook",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('trigger = "joined:blog"\nholdot = 0.1\n', "unknown field holdot"),
        ('trigger = "joind:blog"\n', "field trigger 'joind:blog' is not joined:LIST"),
        ('trigger = "bought:prodct:x"\n', "field trigger 'bought:prodct:x' is not a purchase"),
        (
            'trigger = "joined:blog"\n[[steps]]\nname = "a"\noffer = "launch"\nafter = "2x"\n',
            "step 1 (a): field after '2x' is not a duration",
        ),
        (
            'trigger = "joined:blog"\n[[steps]]\nname = "a"\noffer = "lunch"\nafter = "1d"\n',
            "step 1 (a): field offer: no offer 'lunch'",
        ),
        (
            'trigger = "joined:blog"\n[[steps]]\nname = "a"\noffer = "launch"\nafter = "1d"\n'
            "sell = true\n",
            "step 1: unknown field sell",
        ),
        (
            'trigger = "joined:blog"\n[[steps]]\nname = "a"\noffer = "launch"\nafter = "1d"\n'
            '[[steps]]\nname = "a"\noffer = "launch"\nafter = "1d"\n',
            "step 2 (a): another step has the name 'a'",
        ),
    ],
)
def test_a_typo_in_a_sequence_file_is_an_error_naming_it(ws, text, message):
    path = write(ws, "typo", text)
    with pytest.raises(InputError) as e:
        load_sequence(ws.sequences_dir, ws.offers_dir, "typo")
    assert str(e.value).startswith(str(path))
    assert message in str(e.value)


def test_a_sequence_on_a_list_that_does_not_exist_is_reported_and_the_others_load(ws, world):
    world.list("customers")
    install(ws, "welcome")
    write(
        ws,
        "buyers",
        'trigger = "joined:customers"\n[[steps]]\nname = "a"\noffer = "launch"\nafter = "1d"\n',
    )
    loaded = sync_all(ws.db, ws.sequences_dir, ws.offers_dir)
    assert list(loaded.sequences) == ["buyers"]
    assert "no list named 'blog'" in loaded.errors["welcome"]


def test_each_step_is_a_campaign_row_named_after_its_sequence(ws, world):
    world.list("blog")
    install(ws, "welcome")
    sync_all(ws.db, ws.sequences_dir, ws.offers_dir)
    rows = ws.db.execute(
        "SELECT slug, offer, step FROM campaigns WHERE sequence_id IS NOT NULL ORDER BY id"
    ).fetchall()
    assert rows == [
        ("welcome/download", "welcome-download", "download"),
        ("welcome/story", "welcome-story", "story"),
        ("welcome/offer", "launch", "offer"),
    ]


def test_readers_who_joined_before_the_sequence_existed_are_not_enrolled(run, ws, world):
    run("lists", "create", "blog")
    run("subscribers", "add", "early@example.com", "--list", "blog")
    install(ws, "welcome")
    sync_all(ws.db, ws.sequences_dir, ws.offers_dir)
    run("subscribers", "add", "late@example.com", "--list", "blog")
    run("subscribers", "add", "early@example.com", "--list", "blog")  # already a member
    assert enrolled(ws, "welcome") == {"late@example.com": ("active", None, "download")}


def test_a_confirmed_signup_is_enrolled_in_the_confirmation_transaction(ws, world):
    world.list("blog")
    install(ws, "welcome")
    sync_all(ws.db, ws.sequences_dir, ws.offers_dir)
    with immediate(ws.db):
        record_signup(ws.db, "blog", "reader@example.com", ip="127.0.0.1")
    nonce = ws.db.execute("SELECT nonce FROM signups").fetchone()[0]
    with immediate(ws.db):
        # Pending until confirmed: nobody is enrolled by a signup alone.
        assert enrolled(ws, "welcome") == {}
        assert confirm_signup(ws.db, nonce) == "confirmed"
        assert enrolled(ws, "welcome") == {"reader@example.com": ("active", None, "download")}


def test_an_import_enrols_its_new_members_only_into_sequences_that_say_imported_join(
    run, ws, world, tmp_path
):
    run("lists", "create", "blog")
    install(ws, "welcome")
    text = (EXAMPLES / "welcome.toml").read_text()
    write(ws, "imported", text.replace('imported = "ignore"', 'imported = "join"'))
    sync_all(ws.db, ws.sequences_dir, ws.offers_dir)
    run("subscribers", "add", "known@example.com", "--list", "blog")
    csv = tmp_path / "people.csv"
    csv.write_text("email\nknown@example.com\nnew@example.com\n")
    run("subscribers", "import", str(csv), "--list", "blog")
    assert enrolled(ws, "welcome") == {"known@example.com": ("active", None, "download")}
    assert set(enrolled(ws, "imported")) == {"known@example.com", "new@example.com"}


def buy(run, email, order, product="The Field Guide to Selling (ebook)", at=None):
    at = at or datetime.now(UTC)
    run(
        "sales",
        "add",
        "--order",
        order,
        "--email",
        email,
        "--amount",
        "29.00",
        "--currency",
        "USD",
        "--product",
        product,
        "--at",
        at.isoformat(),
    )


def test_a_buyer_on_a_list_enters_the_purchase_sequence_and_a_refund_ends_it(run, ws, world):
    run("lists", "create", "blog")
    run("subscribers", "add", "buyer@example.com", "--list", "blog")
    install(ws, "after-purchase")
    sync_all(ws.db, ws.sequences_dir, ws.offers_dir)
    buy(run, "buyer@example.com", "A-1", at=datetime.now(UTC) - timedelta(days=3))  # before
    buy(run, "stranger@example.com", "A-2")  # on no list: never mailed
    buy(run, "buyer@example.com", "A-3", product="Something else")
    assert enrolled(ws, "after-purchase") == {}
    buy(run, "buyer@example.com", "A-4")
    assert enrolled(ws, "after-purchase") == {"buyer@example.com": ("active", None, "help")}
    at = ws.db.execute("SELECT at FROM sales WHERE order_id = 'A-4'").fetchone()[0]
    refund = Sale("manual", "A-4", 2900, "USD", at, status="refunded", refunded=2900)
    add_sale(ws.db, refund)
    row = ws.db.execute("SELECT state, exit_reason FROM enrollments").fetchone()
    assert row == ("exited", "refunded")


def test_a_purchase_the_sequence_names_in_exit_ends_it(run, ws, world):
    run("lists", "create", "blog")
    run("subscribers", "add", "buyer@example.com", "--list", "blog")
    install(ws, "after-purchase")
    sync_all(ws.db, ws.sequences_dir, ws.offers_dir)
    buy(run, "buyer@example.com", "B-1")
    buy(run, "buyer@example.com", "B-2", product="The Field Guide Workbook")
    sid = ws.db.execute("SELECT id FROM subscribers").fetchone()[0]
    [where] = reader_enrollments(ws.db, sid)
    assert (where["sequence"], where["state"], where["exit_reason"]) == (
        "after-purchase",
        "exited",
        "bought",
    )


STEPS = [{"name": n, "removed": n in ("b",), "after": 60} for n in ("a", "b", "c")]


def test_a_removed_step_is_skipped_and_an_added_one_reaches_who_has_not_passed_its_place(
    run, ws, world
):
    assert next_step(STEPS, None)["name"] == "a"
    assert next_step(STEPS, "a")["name"] == "c"  # b removed
    assert next_step(STEPS, "b")["name"] == "c"
    assert next_step(STEPS, "c") is None
    run("lists", "create", "blog")
    head = 'trigger = "joined:blog"\n'
    step = '[[steps]]\nname = "{}"\noffer = "launch"\nafter = "1d"\n'
    write(ws, "s", head + step.format("a") + step.format("b") + step.format("c"))
    sync_all(ws.db, ws.sequences_dir, ws.offers_dir)
    for email in ("x@example.com", "y@example.com"):
        run("subscribers", "add", email, "--list", "blog")
    with ws.db.conn:  # x has passed a, y has passed b
        ws.db.execute("UPDATE enrollments SET step = 'a', next_step = 'b' WHERE id = 1")
        ws.db.execute("UPDATE enrollments SET step = 'b', next_step = 'c' WHERE id = 2")
    # b removed, n added between a and c
    write(ws, "s", head + step.format("a") + step.format("n") + step.format("c"))
    sync_all(ws.db, ws.sequences_dir, ws.offers_dir)
    assert enrolled(ws, "s") == {
        "x@example.com": ("active", "a", "n"),
        "y@example.com": ("active", "b", "c"),
    }
    # a step added at the end brings back a reader who had finished
    with ws.db.conn:
        ws.db.execute("UPDATE enrollments SET step = 'c', next_step = NULL, state = 'finished'")
    write(ws, "s", head + step.format("a") + step.format("n") + step.format("c") + step.format("z"))
    sync_all(ws.db, ws.sequences_dir, ws.offers_dir)
    assert set(enrolled(ws, "s").values()) == {("active", "c", "z")}


def test_a_sequence_read_again_unchanged_writes_nothing(ws, world):
    world.list("blog")
    install(ws, "welcome")
    sync_all(ws.db, ws.sequences_dir, ws.offers_dir)
    before = ws.db.conn.total_changes
    sync_all(ws.db, ws.sequences_dir, ws.offers_dir)
    assert ws.db.conn.total_changes == before
    text = (ws.sequences_dir / "welcome.toml").read_text()
    (ws.sequences_dir / "welcome.toml").write_text(
        text.replace("attribution_days = 7", "attribution_days = 3")
    )
    sync_all(ws.db, ws.sequences_dir, ws.offers_dir)
    days = {
        r[0]
        for r in ws.db.execute(
            "SELECT attribution_days FROM campaigns WHERE sequence_id IS NOT NULL"
        )
    }
    assert days == {3}
