# Two entry points on a fresh machine with only Python and make:
#   make demo   sets up .venv and runs a demo workspace against a local capture server
#   make test   sets up .venv and runs ruff, the layers check and the whole test suite (which checks the docs)
#               on every core; make test PYTEST_ARGS=-n0 runs the tests one after another
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# pytest's options for `make test`: every core (pytest-xdist); PYTEST_ARGS=-n0 runs serially.
# The tests start many Python processes (the workers, `listkit` commands): each reads the
# bytecode the first compiled (__pycache__), whatever PYTHONDONTWRITEBYTECODE says elsewhere.
PYTEST_ARGS ?= -n auto
STAMP  := $(VENV)/.installed

.PHONY: demo test docs lint format clean report-screenshot integration-dkim integration-bounces \
	pages-screenshots bench-serve spam-score

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m listkit.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest $(PYTEST_ARGS)

# The generated parts of docs/ (settings table, command reference, modules' rules);
# `make test` fails while they are stale.
docs: $(STAMP)
	$(BIN)/python scripts/docs.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache

report-screenshot: $(STAMP)
	$(BIN)/python scripts/screenshot_report.py --out bench/out

# Needs root: installs postfix if missing and runs its own Postfix instance
# (postfix -c DIR on loopback ports). Not part of `make test`.
integration-dkim: $(STAMP)
	$(BIN)/python scripts/integration_dkim.py

# Bounce intake against a real Postfix and Dovecot on loopback (as root: installs them).
integration-bounces: $(STAMP)
	$(BIN)/python scripts/integration_bounces.py

# The unsubscribe, signup and confirmation pages driven in Debian's chromium
# (installed with apt when missing); screenshots land in bench/out/pages/.
pages-screenshots: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[browser]'
	$(BIN)/python scripts/browser_pages.py --out bench/out/pages

bench-serve: $(STAMP)
	$(BIN)/python bench/serve.py

# SpamAssassin's local rules (as root: installs Debian's spamassassin when missing)
# on every shipped offer, the demo's and the confirmation message; fails above 0.0.
spam-score: $(STAMP)
	$(BIN)/python scripts/spam_score.py
