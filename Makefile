# streamrec: the two quickstart commands are `make demo` and `make test`
# (`make demo` also starts the browser gateway and prints its pages' addresses).
.PHONY: install demo gateway test test-unit stack-up stack-down lint

install:
	@bash infra/install.sh

demo: install
	.venv/bin/streamrec demo $(if $(DURATION),--duration $(DURATION),)

gateway: install
	.venv/bin/streamrec gateway

test: install
	.venv/bin/pytest

test-unit: install
	.venv/bin/pytest -m "not integration"

stack-up: install
	.venv/bin/streamrec stack up

stack-down:
	.venv/bin/streamrec stack down

lint: install
	.venv/bin/mypy stream features models infra
