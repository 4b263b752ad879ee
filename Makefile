# dbgw: three entry points. Everything local (data, secrets, audit log, logs) lives in .dev/.
#   make up    build and start the local stack in the background, wait until it is healthy
#   make down  stop everything `make up` started
#   make test  install what the tests need, then run every check and test
.PHONY: up down test test-deps lint unit fuzz e2e bench-proxy bench-rates bench-connect bench-lexer

up:
	@scripts/dev.sh up

down:
	@scripts/dev.sh down

test: test-deps lint unit fuzz e2e

test-deps:
	@scripts/test-deps.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

unit:
	cargo test --workspace --locked
	npm test --prefix idp

# The frame and message decoders under libFuzzer for a short while (longer: FUZZ_SECONDS=600).
fuzz:
	cd proxy && cargo fuzz run --sanitizer none frames -- -max_total_time=$${FUZZ_SECONDS:-30}

# The quick start as a newcomer runs it: make up, sign in, psql, curl, make down.
e2e:
	scripts/e2e.sh

bench-proxy:
	cargo build --release --locked -p proxy -p dbgw-bench
	target/release/proxy-bench

bench-rates:
	cargo build --release --locked -p rates-api -p dbgw-bench
	target/release/rates-api-bench

bench-connect:
	cargo build --release --locked -p proxy -p dbgw-bench
	target/release/connect-bench

bench-lexer:
	cargo build --release --locked -p dbgw-bench --bin lexer-bench
	target/release/lexer-bench
