# Both targets set up .venv on a fresh machine. torch is pinned to 2.13.0
# because pip takes that CPU wheel from local disk on these machines, where
# an unpinned torch would pull a multi-GB CUDA build.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: app test install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

app: $(STAMP)
	$(PYTHON) app.py

test: $(STAMP)
	$(PYTHON) -m pytest
