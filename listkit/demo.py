"""The built-in demo: a workspace in a temporary folder, run end to end."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from click.testing import CliRunner

from listkit.cli import cli


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="listkit-demo-")) / "shop"
    runner = CliRunner()

    def step(*args: str) -> None:
        print(f"$ listkit {' '.join(args)}")
        result = runner.invoke(cli, ["--workspace", str(root), *args])
        print(result.output, end="")
        if result.exit_code != 0:
            raise SystemExit(result.exit_code)

    step("init", str(root))
    step("config")
    print(f"\nDemo workspace: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
