"""The commands `make demo` prints can be pasted into a shell as they are."""

import shlex

from listkit.demo import command_line


def test_the_demo_shows_each_command_quoted_as_a_shell_reads_it():
    shown = command_line(["lists", "create", "blog", "--title", "Blog readers"])
    assert shown == "$ listkit lists create blog --title 'Blog readers'"
    words = ["listkit", "lists", "create", "blog", "--title", "Blog readers"]
    assert shlex.split(shown.removeprefix("$ ")) == words
    assert command_line(["report", "--by", "variant"]) == "$ listkit report --by variant"
