# streamrec: the two quickstart commands are `make demo` and `make test`
# (`make demo` also starts the browser gateway and prints its pages' addresses).
.PHONY: install demo gateway test test-unit stack-up stack-down lint typecheck

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

# mypy cannot follow the editable install's import hook, so it reads the packages through a
# link tree that names them as installed (build/typecheck/streamrec/stream -> stream, ...).
# CI runs `make typecheck` after its own install.
lint: install typecheck

typecheck:
	@mkdir -p build/typecheck/streamrec
	@for p in stream features models infra tools; do ln -sfn ../../../$$p build/typecheck/streamrec/$$p; done
	.venv/bin/lint-imports
	MYPYPATH=build/typecheck .venv/bin/mypy --explicit-package-bases build/typecheck/streamrec
