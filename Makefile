# settled — plain Makefile; flags and libraries come from pkg-config only.
#
#   make            build ./settled
#   make run        install missing packages, build, start embedded
#   make test       install missing packages, build, run every test
#   make asan       the whole suite under AddressSanitizer + UBSan (build-asan/)
#   make bench      benchmarks with wrk (ops/wrk), printed as a table

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
OBJS     = $(SRCS:src/%.c=$(BUILD)/%.o) $(BUILD)/migrations.o
MIGS     = $(sort $(wildcard migrations/sqlite/*.sql migrations/pg/*.sql))
UNIT_SRC = $(wildcard tests/unit/test_*.c)
UNIT_BIN = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TEST_LIBS = $(shell pkg-config --libs criterion 2>/dev/null)

.PHONY: all run test unit integration check asan bench chaos clean deps deps-run format-check
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

# Unit tests (Criterion), then the integration suite against the real binary.
unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t --jobs 2; done

integration: settled
	SETTLED_BIN=$(abspath $(BUILD))/settled $(PYTHON) -m pytest -q tests/integration $(PYTEST_ARGS)

check: unit integration

test: deps
	$(MAKE) all
	$(MAKE) check

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
		LDFLAGS="-fsanitize=address,undefined" check

bench: deps settled
	ops/bench

chaos: deps settled
	ops/chaos

format-check:
	clang-format --dry-run --Werror src/*.c src/*.h

clean:
	rm -rf build build-asan settled

-include $(wildcard $(BUILD)/*.d)
