import json


def test_lists_create_and_ls_show_counts(run, ws):
    run("lists", "create", "blog", "--title", "Blog readers")
    run("subscribers", "add", "a@example.com", "--list", "blog")
    run("subscribers", "add", "b@example.com", "--list", "blog")
    run("unsubscribe", "b@example.com", "--list", "blog")
    rows = json.loads(run("lists", "ls", "--json").output)
    assert [
        (r["slug"], r["title"], r["active"], r["unsubscribed"], r["bounced"]) for r in rows
    ] == [("blog", "Blog readers", 1, 1, 0)]
    table = run("lists", "ls").output
    assert "blog" in table and "Blog readers" in table


def test_lists_ls_when_empty_says_how_to_start(run):
    assert "listkit lists create SLUG" in run("lists", "ls").output


def test_creating_a_list_twice_is_an_error(run):
    run("lists", "create", "blog")
    result = run("lists", "create", "blog", ok=False)
    assert result.exit_code == 1
    assert result.output == "Error: list 'blog' already exists\n"


def test_bad_list_names_are_refused(run):
    result = run("lists", "create", "Blog Readers", ok=False)
    assert result.exit_code == 1
    assert "list name 'Blog Readers' is not valid" in result.output


def test_lists_rm_removes_memberships_but_keeps_subscribers(run, ws):
    run("lists", "create", "blog")
    run("subscribers", "add", "a@example.com", "--list", "blog")
    assert "Removed list blog (1 memberships)." in run("lists", "rm", "blog", "--yes").output
    assert ws.db.execute("SELECT COUNT(*) FROM subscribers").fetchone()[0] == 1
    assert run("lists", "rm", "blog", "--yes", ok=False).output == (
        "Error: no list named 'blog': see `listkit lists ls`\n"
    )


def test_lists_rm_asks_first_on_a_terminal(run, monkeypatch):
    from listkit.cli import output

    monkeypatch.setattr(output, "stdin_is_terminal", lambda: True)
    run("lists", "create", "blog")
    result = run("lists", "rm", "blog", input="n\n", ok=False)
    assert result.exit_code == 1
    assert "Aborted" in result.output
    assert "blog" in run("lists", "ls").output


def test_lists_rm_without_a_terminal_says_to_pass_yes_and_removes_nothing(run):
    run("lists", "create", "blog")
    result = run("lists", "rm", "blog", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        "Error: not a terminal, so nobody can confirm: run `listkit lists rm blog --yes`\n"
    )
    assert "blog" in run("lists", "ls").output


def test_a_list_title_with_a_control_character_is_refused_when_the_list_is_created(run):
    # The title is in every message's List-Id: found at send time it fails every member.
    for title in ("Blog\r\nBcc: x@example.com", "Blog\x00", "=?utf-8?q?a=0D=0Ab?="):
        result = run("lists", "create", "blog", "--title", title, ok=False)
        assert result.exit_code == 1
        assert result.output.startswith("Error: list title ")
        assert result.output.endswith(
            "contains a control character: refused, the list was not created\n"
        )
    assert "blog" not in run("lists", "ls").output


def test_lists_ls_does_not_count_a_suppressed_member_as_active(run):
    # A hard bounce or an "everything" unsubscribe suppresses the address; its membership
    # may stay active (the server refused it, or an import said "subscribed"), yet the
    # address is never mailed again: it is suppressed, not active.
    run("lists", "create", "blog", "--title", "Blog")
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        run("subscribers", "add", email, "--list", "blog")
    run("suppress", "add", "c@example.com", "--reason", "hard_bounce")
    (row,) = json.loads(run("lists", "ls", "--json").output)
    assert (row["active"], row["suppressed"], row["unsubscribed"]) == (2, 1, 0)
    header, blog = run("lists", "ls").output.splitlines()
    assert header.split() == ["list", "title", "active", "suppressed", "unsubscribed", "bounced"]
    assert blog.split() == ["blog", "Blog", "2", "1", "0", "0"]
    rows = {r["list"]: r for r in json.loads(run("report", "--json").output)["rows"]}
    assert rows["blog"]["audience"] == 2
