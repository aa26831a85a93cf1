# mtrain developer tasks. `make setup && make test` is all a fresh machine needs.
PYTHON ?= python
PIP := $(PYTHON) -m pip

.PHONY: setup browser test test-all smoke docs bench multi30k plot

# torch is pinned by constraints.txt to the CPU wheel of this machine; on a GPU machine install
# your CUDA build of torch first, then: pip install -e '.[test,deploy,filters,align,serve,plot,tensorboard,docs,cjk]'
# Every optional extra is installed so that no test is skipped.
setup:
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e '.[test,deploy,filters,align,serve,plot,tensorboard,docs,cjk]'
	@$(MAKE) --no-print-directory browser || echo "no Chromium: the serve page's browser test will be skipped (Debian: apt install chromium)"

# Debian's Chromium, which the browser test of the serve page drives through Playwright
browser:
	@command -v chromium >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	@chromium --version

test:
	$(PYTHON) -m ruff check mtrain scripts tests
	$(PYTHON) -m ruff format --check mtrain scripts tests
	$(PYTHON) -m pytest -q

# the slow tests too (none are needed for CI)
test-all:
	$(PYTHON) -m pytest -q -m ''

# The documentation site into site/ (make test builds it too: tests/test_docs.py); the reference
# pages are generated: python scripts/docs_reference.py
docs:
	$(PYTHON) -m mkdocs build --strict

# The whole CLI end to end on the demo corpus with a tiny budget (under 2 minutes on 2 cores).
smoke:
	bash scripts/smoke.sh

bench:
	$(PYTHON) scripts/bench_data.py
	$(PYTHON) scripts/bench_train.py --config configs/multi30k.yaml
	$(PYTHON) scripts/bench_decode.py --checkpoint runs/multi30k-en-de/checkpoint_avg.pt --src ../shared/data/multi30k/test_2016_flickr.en.gz \
		--ref ../shared/data/multi30k/test_2016_flickr.de.gz
	$(PYTHON) scripts/bench_serve.py --checkpoint runs/multi30k-en-de/checkpoint_avg.pt --src ../shared/data/multi30k/test_2016_flickr.en.gz

multi30k:
	bash scripts/run_multi30k.sh configs/multi30k.yaml

plot:
	$(PYTHON) -m mtrain plot metrics runs/multi30k-en-de --output docs/images/multi30k-en-de.png
