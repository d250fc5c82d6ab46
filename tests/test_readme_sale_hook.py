"""The serve page's shell example for `/hooks/sale` (docs/serve.md), run as written (only HOST
replaced) from the workspace, by a shell that never read `.env`, against a real
`listkit serve`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.web_server import serve

README = Path(__file__).parent.parent / "docs" / "serve.md"
SECRET = "readme-example-secret-0123456789"


def readme_example() -> str:
    text = README.read_text()
    start = text.index("## Sales webhooks")
    return re.search(r"```sh\n(.*?)```", text[start:], re.S).group(1)


@pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("openssl")),
    reason="the example needs curl and openssl",
)
def test_the_readme_sale_example_records_a_sale_from_a_shell_that_never_read_env(run, workspace):
    with (workspace / ".env").open("a") as f:
        f.write(f"LISTKIT_WEBHOOK_SECRET={SECRET}\n")
    with serve(workspace) as base:
        script = readme_example().replace("https://HOST", base)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTKIT_")}
        # The virtualenv's commands (listkit, dotenv) are on the PATH, as when it is active.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        done = subprocess.run(
            ["bash", "-e", "-c", script], cwd=workspace, env=env, capture_output=True, text=True
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Sale recorded.\n"
    assert SECRET not in done.stdout + done.stderr
    sales = json.loads(run("sales", "ls", "--json").output)
    assert [(s["order"], s["source"]) for s in sales] == [("A-1001", "webhook")]
