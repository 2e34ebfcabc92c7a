# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean system-deps

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# Chinese chart labels need a CJK font; the digest tests render pages in headless Chromium
system-deps:
	@if fc-list 2>/dev/null | grep -q "Noto Sans CJK" && command -v chromium >/dev/null; then :; \
	else apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  chromium fonts-noto-cjk >/dev/null; fi

demo: $(BIN)/.installed system-deps
	$(BIN)/loudou demo

test: $(BIN)/.installed system-deps
	$(BIN)/ruff check .
	$(BIN)/pytest

# the benchmark of issue #10: SCALE=100 for the figures that count (slow, several GB of RAM)
SCALE ?= 1
bench: $(BIN)/.installed system-deps
	$(BIN)/python -m bench.run --scale $(SCALE)

lint: $(BIN)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) demo .pytest_cache
