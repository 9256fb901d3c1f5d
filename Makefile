# Swiftlet: `make demo` runs the main job, `make test` runs the tests (both set up what is missing).
SWIFT ?= swift
export PATH := /opt/swift/usr/bin:$(PATH)

.PHONY: setup build demo test lint format bench guests clean

setup:
	@scripts/setup.sh

build: setup
	$(SWIFT) build

guests: setup
	@mkdir -p guest/out
	@for e in guest/examples/*/; do n=$$(basename $$e); guest/build.sh $$e -o guest/out/$$n.elf || exit 1; done
	@ls -l guest/out

demo: build
	.build/debug/swiftlet demo

lint:
	$(SWIFT) format lint --strict --recursive --parallel Sources Tests guest/tests/Tests guest/examples guest/kit

format:
	$(SWIFT) format format --in-place --recursive --parallel Sources Tests guest/tests/Tests guest/examples guest/kit

test: build lint
	$(SWIFT) build --build-tests
	scripts/setup-prometheus.sh >/dev/null
	url=$$(scripts/setup-postgres.sh) && SWIFTLET_TEST_POSTGRES="$$url" $(SWIFT) test --skip-build
	$(SWIFT) test --package-path guest/tests
	guest/build.sh guest/examples/hello -o .build/contract-hello.elf
	/usr/bin/python3 tests/contract/check_openapi.py .build/debug/swiftlet .build/contract-hello.elf
	url=$$(scripts/setup-postgres.sh --fresh swiftlet_contract) && \
		/usr/bin/python3 tests/contract/check_openapi.py .build/debug/swiftlet .build/contract-hello.elf "$$url"
	st=$$(scripts/setup-schemathesis.sh) && \
		/usr/bin/python3 tests/contract/run_schemathesis.py "$$st" .build/debug/swiftlet .build/contract-hello.elf
	scripts/setup-chromium.sh >/dev/null
	/usr/bin/python3 tests/ui/run_ui.py .build/debug/swiftlet .build/contract-hello.elf
	guest/build.sh guest/examples/echo -o .build/openstack-echo.elf
	venv=$$(scripts/setup-openstack-client.sh) && \
		/usr/bin/python3 tests/openstack/run_openstack_cli.py "$$venv" .build/debug/swiftlet .build/contract-hello.elf \
			.build/openstack-echo.elf && \
		url=$$(scripts/setup-postgres.sh --fresh swiftlet_openstack) && \
		/usr/bin/python3 tests/openstack/run_openstack_cli.py "$$venv" .build/debug/swiftlet .build/contract-hello.elf \
			.build/openstack-echo.elf "$$url"

# BENCH_ARGS=--quick for a run under 2 minutes; see bench/README.md.
bench:
	@scripts/setup.sh --bench
	$(SWIFT) build -c release --product swiftlet
	/usr/bin/python3 bench/run.py $(BENCH_ARGS)

clean:
	rm -rf .build guest/out guest/tests/.build
