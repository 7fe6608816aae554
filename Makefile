# settled — plain Makefile; flags and libraries come from pkg-config only.
#
#   make            build ./settled
#   make run        install missing packages, build, start embedded
#   make test       install missing packages, build, run every test
#   make asan       the whole suite under AddressSanitizer + UBSan (build-asan/)
#   make valgrind   the SQLite integration suite under Valgrind memcheck (build-vg/)
#   make bench      benchmarks with wrk (ops/wrk), printed as a table
#   make fuzz       every libFuzzer target for FUZZ_SECONDS (build-fuzz/)

PKGS    = libmicrohttpd jansson sqlite3 libpq hiredis openssl libcurl
BUILD  ?= build
CC     ?= cc
# Debian's interpreter, where scripts/deps installs pytest (a pyenv or venv
# python3 earlier on PATH would not have it).
PYTHON ?= /usr/bin/python3
OPT    ?= -O2 -g
WARN    = -Wall -Wextra -Werror -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
          -Wvla -Wwrite-strings -Wno-format-nonliteral
CFLAGS += -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -MMD -MP -Isrc -I$(BUILD) \
          $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm

SRCS     = $(filter-out src/main.c,$(wildcard src/*.c))
OBJS     = $(SRCS:src/%.c=$(BUILD)/%.o) $(BUILD)/migrations.o $(BUILD)/openapi.o
MIGS     = $(sort $(wildcard migrations/sqlite/*.sql migrations/pg/*.sql))
UNIT_SRC = $(wildcard tests/unit/test_*.c)
UNIT_BIN = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TEST_LIBS = $(shell pkg-config --libs criterion 2>/dev/null)

.PHONY: all run test unit integration integration-pg integration-pg-1 integration-pg-2 check asan valgrind bench chaos clean deps deps-run \
        fuzz fuzz-smoke fuzz-build fuzz-bins
all: settled

settled: $(BUILD)/settled
	@cp $< $@.tmp && mv -f $@.tmp $@

$(BUILD)/settled: $(BUILD)/main.o $(BUILD)/libsettled.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/libsettled.a: $(OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: src/%.c | $(BUILD)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/migrations.c: $(MIGS) scripts/embed-sql | $(BUILD)
	scripts/embed-sql $(MIGS) > $@.tmp && mv $@.tmp $@

$(BUILD)/migrations.o: $(BUILD)/migrations.c
	$(CC) $(CFLAGS) -Wno-missing-prototypes -c -o $@ $<

# GET /api/docs/openapi.json serves docs/openapi.json as built in.
$(BUILD)/openapi.c: docs/openapi.json scripts/embed-openapi | $(BUILD)
	scripts/embed-openapi docs/openapi.json > $@.tmp && mv $@.tmp $@

$(BUILD)/openapi.o: $(BUILD)/openapi.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libsettled.a | $(BUILD)/tests
	$(CC) $(CFLAGS) -Wno-missing-prototypes -o $@ $< $(BUILD)/libsettled.a $(LDLIBS) $(TEST_LIBS)

$(BUILD) $(BUILD)/tests:
	@mkdir -p $@

deps:
	@scripts/deps
deps-run:
	@scripts/deps run

run: deps-run settled
	./settled

# Test targets run under tests/with-services: it starts a private PostgreSQL
# (SETTLED_TEST_PG) for the PostgreSQL half of the suites and always stops
# it; an outer one (or a developer's SETTLED_TEST_PG) is reused, so `make
# check` starts one cluster for everything.
WITH_SERVICES = tests/with-services

# Unit tests (Criterion), then the integration suite against the real binary.
# UNIT_RUN: a prefix for each unit binary's command (make asan sets it).
unit: $(UNIT_BIN)
	@$(WITH_SERVICES) sh -c 'set -e; for t in $(UNIT_BIN); do echo "== $$t"; $(UNIT_RUN) $$t --jobs 2; done'

# The suites run $(BUILD)/settled, not ./settled: `make asan` must not leave
# an instrumented ./settled behind for `make bench` or `make run`.
integration: $(BUILD)/settled
	SETTLED_BIN=$(abspath $(BUILD))/settled $(PYTHON) -m pytest -q tests/integration $(PYTEST_ARGS)

# The same suite in scale-out mode: every test server on its own database of
# the private PostgreSQL (docs/internals/store.md).
PG_PYTEST = $(WITH_SERVICES) env SETTLED_TEST_BACKEND=pg SETTLED_BIN=$(abspath $(BUILD))/settled \
	    $(PYTHON) -m pytest -q
integration-pg: $(BUILD)/settled
	$(PG_PYTEST) tests/integration $(PYTEST_ARGS)

# make check runs the PostgreSQL suite as two halves of about equal time (a
# server start there costs a database and 13 connections, so it is the long
# pole); together they are exactly integration-pg. Each half gets a cluster
# of its own: test_store_pg.py restarts its cluster under load, which would
# cut the other half's connections.
PG_HALF_1 = $(addprefix tests/integration/,test_apikeys.py test_chaos_short.py test_config.py \
	    test_examples.py test_hostile.py test_http.py)
OWN_PG = env -u SETTLED_TEST_PG -u SETTLED_TEST_PG_DIR
integration-pg-1: $(BUILD)/settled
	$(OWN_PG) $(PG_PYTEST) $(PG_HALF_1) $(PYTEST_ARGS)
integration-pg-2: $(BUILD)/settled
	$(OWN_PG) $(PG_PYTEST) tests/integration $(addprefix --ignore=,$(PG_HALF_1)) $(PYTEST_ARGS)

# The test cluster runs with fsync off (tests/pg/pgctl says why); make bench
# and make chaos start theirs with fsync on. The integration suites run side
# by side (they mostly wait on servers and clocks, not on the CPU: make test
# used a quarter of the 2 cores when they ran one after the other), each
# one's output printed whole when it ends (-O); any failing fails check.
check:
	PGCTL_FSYNC=off $(WITH_SERVICES) sh -c \
		'$(MAKE) unit && $(MAKE) -j3 -O integration integration-pg-1 integration-pg-2'
	$(MAKE) fuzz-smoke

test: deps
	$(MAKE) all
	$(MAKE) check

# Unit binaries run through tests/sanitized: Criterion counts a test whose
# worker LeakSanitizer reports as passed, so the report itself must fail it.
# They unwind every malloc fully (not by frame pointers, which libcriterion
# lacks) so tests/lsan.supp can name Criterion's own runner; that doubles
# their time (~1 -> ~2 min), so the servers keep the fast unwinder.
ASAN_UNIT_RUN = ASAN_OPTIONS=fast_unwind_on_malloc=0 \
                LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
                $(abspath tests/sanitized)

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
		LDFLAGS="-fsanitize=address,undefined" UNIT_RUN="$(ASAN_UNIT_RUN)" check

# Valgrind memcheck of the SQLite integration suite: an -O1 -g build in
# build-vg/, every test server (and `settled --help` etc.) run under
# SETTLED_TEST_WRAPPER; the harness (tests/integration/conftest.py) sets the
# per-process log file, scales its timeouts, skips the few timing/load tests
# and fails a test whose server's log has errors or definite leaks. Slow:
# about 20 min on 2 cores. Suppressions (third-party noise only) are in
# tests/valgrind.supp; VALGRIND_ARGS adds flags (e.g. --track-origins=yes).
VALGRIND ?= valgrind
VALGRIND_FLAGS = --tool=memcheck --error-exitcode=99 --leak-check=full \
          --show-leak-kinds=definite --errors-for-leak-kinds=definite --num-callers=30 \
          --fair-sched=yes --suppressions=$(abspath tests/valgrind.supp) $(VALGRIND_ARGS)

valgrind:
	@command -v $(VALGRIND) >/dev/null || { echo "settled: make valgrind needs $(VALGRIND) (apt-get install valgrind)" >&2; exit 1; }
	SETTLED_TEST_WRAPPER="$(VALGRIND) $(VALGRIND_FLAGS)" $(MAKE) BUILD=build-vg OPT="-O1 -g" integration

bench: deps settled
	$(WITH_SERVICES) ops/bench

# SIGKILL under load, then the invariants (ops/chaos): 25 kills over 90 s on
# SQLite, then on PostgreSQL (+ Redis) from tests/with-services. A short run
# (3 kills) is part of the integration suite. CHAOS_ARGS="--seed 7 -v".
chaos: deps settled
	ops/chaos --backend sqlite $(CHAOS_ARGS)
	$(WITH_SERVICES) ops/chaos --backend pg $(CHAOS_ARGS)

# Fuzzing with libFuzzer (clang): tests/fuzz/fuzz_<name>.c, each linked with
# an instrumented (ASan + UBSan + coverage) build of src/ in build-fuzz/.
# `make fuzz` runs every target for FUZZ_SECONDS, one at a time, growing the
# corpus in build-fuzz/corpus; `make fuzz-smoke` (part of check) runs each for
# FUZZ_SMOKE_SECONDS from the seeds only, two at a time (under a minute in
# all). FUZZ_TARGETS="route body" picks some.
# scripts/fuzz prints execs per target and fails on any crash.
FUZZ_BUILD = build-fuzz
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5
FUZZ_SMOKE_JOBS ?= 2
FUZZ_OPT = -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
           -fno-sanitize-recover=undefined
FUZZ_SRC = $(wildcard tests/fuzz/fuzz_*.c)

fuzz-build:
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) OPT="$(FUZZ_OPT)" fuzz-bins

fuzz-bins: $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(BUILD)/libsettled.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Wno-missing-prototypes -fsanitize=fuzzer -o $@ $< $(BUILD)/libsettled.a $(LDLIBS)

fuzz: fuzz-build
	scripts/fuzz $(FUZZ_SECONDS) $(FUZZ_BUILD) $(FUZZ_TARGETS)

fuzz-smoke: fuzz-build
	FUZZ_KEEP=0 FUZZ_JOBS=$(FUZZ_SMOKE_JOBS) scripts/fuzz $(FUZZ_SMOKE_SECONDS) $(FUZZ_BUILD) $(FUZZ_TARGETS)

clean:
	rm -rf build build-asan build-vg build-fuzz settled

# Objects, unit-test and fuzz binaries alike: editing a header a test
# includes (tests/unit/*_fixture.h, src/*.h) rebuilds what depends on it.
-include $(wildcard $(BUILD)/*.d $(BUILD)/tests/*.d $(BUILD)/fuzz/*.d)
