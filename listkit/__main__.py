from listkit.cli import cli

cli(prog_name="listkit")
