# bazaar — build, run, test, bench.
#
#   make run     install missing packages, build, start the server (SQLite + memory cache)
#   make test    install missing packages, build, run every test suite (and the layer and ABI checks)
#   make         build build/bazaar (-O2 -g, warnings are errors)
#   make asan    ASan+UBSan build in build/asan;   make test-asan runs the suites on it
#   make tsan    TSan build in build/tsan;         make test-tsan runs the unit suites on it
#   make test-ucontext   the runtime suite on the portable ucontext switch
#   make test-deploy     the deployment suite: TLS, PostgreSQL standby and pgbouncer, Redis Sentinel, metrics, install
#   make examples        the examples built out of tree against an installed libbazaar, run and driven
#   make test-faults     the fault suite: outages of PostgreSQL, Redis, the disk, fds and bazaar itself under load (root)
#   make soak    the long run: mixed load + 10,000 keep-alive + 2,000 slowloris, SOAK_SECONDS per backend (default 600)
#   make bench   benchmarks, printed as tables
#   make bench-instr         instructions (callgrind), system calls and page faults per request
#   make bench-instr-check   CI's gate: instructions on the request path, failing 3 % over tests/bench/instr-baseline.txt
#   make bench-kernel-check  system calls and page faults per request against their absolute limits
#   make bench-transfer-kernel-check  the same for POST /v1/transfers on PostgreSQL + Redis
#   make fuzz    libFuzzer targets (clang), FUZZ_SECONDS each (default 60)
#   make         also builds libbazaar: build/libbazaar.a, build/libbazaar.so.0.1.0 (make lib: only that)
#   make install PREFIX=/usr/local DESTDIR=   the binary, man page, systemd unit, env file, and install-lib (after make)
#   make install-lib LIBDIR=$(PREFIX)/lib     the library alone: headers, libbazaar.a/.so*, bazaar.pc
#   make uninstall                            removes what install put there (uninstall-lib: the library's part)

.DEFAULT_GOAL := all
.PHONY: examples all lib install-lib uninstall-lib abi-dump abi-check run test unit blackbox blackbox-h1 blackbox-h2c test-abuse test-deploy test-faults soak test-ucontext asan tsan test-asan test-tsan bench bench-instr bench-instr-check bench-kernel-check bench-transfer-kernel-check fuzz deps deps-test deps-bench clean format install uninstall FORCE

MODE     ?= release
BUILD    := build/$(MODE)
CC       ?= cc
ifeq ($(MODE),release)
BUILD    := build
endif

WARN     := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wstrict-prototypes -Wvla
CFLAGS_common := -std=c17 -D_GNU_SOURCE -Iinclude -I. -Ibuild/gen -I/usr/include/postgresql -pthread -MMD -MP $(WARN)
ifeq ($(MODE),release)
OPT      := -O2 -g
else ifeq ($(MODE),asan)
OPT      := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else ifeq ($(MODE),tsan)
OPT      := -O1 -g -fsanitize=thread
else ifeq ($(MODE),ucontext)
OPT      := -O2 -g -DRT_UCONTEXT
else ifeq ($(MODE),fuzz)
OPT      := -O1 -g -fsanitize=address,undefined,fuzzer-no-link -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
CFLAGS   := $(CFLAGS_common) $(OPT) $(EXTRA_CFLAGS)
LDFLAGS  := -pthread $(OPT)
LDLIBS   := -lsqlite3 -lhiredis -luring -ljansson -lsodium -lprotobuf-c -lssl -lcrypto -lz -lm -ldl

# Protocol buffers: C code generated at build time by protoc-c (Debian's
# protobuf-c-compiler) into build/gen, for every mode.  The contract's
# bazaar.proto is copied into proto/ (tests check it matches the spec);
# google.rpc.Status/BadRequest are declared in proto/google/rpc; the rest
# comes from Debian's protobuf and grpc-proto packages.
#
# Two owners: the library (libbazaar) holds the generic generated code it
# uses — the standard services (health, reflection, grpc.testing),
# google.rpc.Status with google.protobuf.Any, google.protobuf.descriptor —
# and the descriptor set its reflection serves (grpc__std_descriptor_set:
# those, and the well-known types a service's .proto may import, so a
# service described from its protobuf-c descriptors imports them by file).
# The marketplace (app/) holds bazaar.proto's code, the well-known types it
# imports (a service compiles protoc-c's output for its imports: hidden in
# libbazaar.so, the library's copies could serve nobody), its own
# descriptor set (app_descriptor_set, given to reflection by
# app/grpc/server.c) and the console's assets.
PROTO_DIRS := -Iproto -I/usr/include -I/usr/share/grpc-proto
LIB_PROTOS := google/rpc/status.proto google/protobuf/any.proto google/protobuf/descriptor.proto \
              grpc/health/v1/health.proto grpc/reflection/v1/reflection.proto \
              grpc/reflection/v1alpha/reflection.proto grpc/testing/test.proto grpc/testing/messages.proto \
              grpc/testing/empty.proto
APP_PROTOS := bazaar.proto google/protobuf/timestamp.proto google/protobuf/empty.proto google/protobuf/wrappers.proto
PROTOS   := $(APP_PROTOS) $(LIB_PROTOS)
GEN      := build/gen
GEN_LIB_C := $(LIB_PROTOS:%.proto=$(GEN)/%.pb-c.c) $(GEN)/grpc_std_descriptors.c
GEN_APP_C := $(APP_PROTOS:%.proto=$(GEN)/%.pb-c.c) $(GEN)/app_descriptors.c $(GEN)/console_assets.c
GEN_C    := $(GEN_LIB_C) $(GEN_APP_C)
# What each descriptor set describes, with every file it imports.
LIB_REFLECTED := $(LIB_PROTOS) google/protobuf/timestamp.proto google/protobuf/empty.proto \
                 google/protobuf/wrappers.proto google/protobuf/duration.proto google/protobuf/struct.proto \
                 google/protobuf/field_mask.proto
APP_REFLECTED := bazaar.proto

# libbazaar: the layers, by directory (a new .c in a layer's directory, or a
# new layer directory listed here, is in the library without more edits),
# and the library's generated code (GEN_LIB_C above: the standard
# services, the well-known types, their descriptor set).  The marketplace
# — app/ and its generated code (GEN_APP_C) — is not in it: it is
# libmarket.a, linked with libbazaar.a into the binary, the unit tests,
# the fuzz targets and http_testd.
LIB_DIRS := base rt http grpc db cache service
LIB_SRC  := $(wildcard $(LIB_DIRS:%=%/*.c))
LIB_ASM  := rt/switch.S
LIB_GEN  := $(GEN_LIB_C)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(LIB_ASM:%.S=$(BUILD)/obj/%.o) $(LIB_GEN:$(GEN)/%.c=$(BUILD)/obj/gen/%.o)
# The same sources position-independent, in their own object directory,
# for libbazaar.so (the binary keeps its non-PIC objects).
LIB_PIC  := $(LIB_SRC:%.c=$(BUILD)/pic/%.o) $(LIB_ASM:%.S=$(BUILD)/pic/%.o) $(LIB_GEN:$(GEN)/%.c=$(BUILD)/pic/gen/%.o)
APP_SRC  := $(wildcard app/*.c app/svc/*.c app/rest/*.c app/grpc/*.c)
APP_OBJ  := $(APP_SRC:%.c=$(BUILD)/obj/%.o) $(GEN_APP_C:$(GEN)/%.c=$(BUILD)/obj/gen/%.o)
MARKET   := $(BUILD)/libmarket.a $(BUILD)/libbazaar.a
UNIT_SRC := $(wildcard tests/unit/test_*.c)
# test_svc (about a minute) first: the short suites after it, whose
# pool and retry cases time a few hundred milliseconds, then run past the
# start-up burst of the suites make test runs beside them.
UNIT_BIN := $(filter %/test_svc,$(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)) \
            $(filter-out %/test_svc,$(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%))
UNIT_ASM := $(wildcard tests/unit/*.S)
UNIT_AOBJ := $(UNIT_ASM:%.S=$(BUILD)/obj/%.o)

all: $(BUILD)/bazaar lib

deps:
	@scripts/deps.sh build
deps-test:
	@scripts/deps.sh test
deps-bench:
	@scripts/deps.sh bench

# The two descriptor sets go through a per-process scratch directory and
# land whole (.ci/run runs makes side by side on one build/gen); a build
# tree generated before the sets were split regenerates once.
$(GEN)/.stamp: $(addprefix proto/,bazaar.proto google/rpc/status.proto) $(if $(wildcard $(GEN)/grpc_std_descriptors.c),,FORCE)
	@scripts/deps.sh build
	@mkdir -p $(GEN)
	protoc-c $(PROTO_DIRS) --c_out=$(GEN) $(PROTOS)
	@t=$(GEN)/.sets.$$$$; set -e; mkdir -p $$t; \
	protoc $(PROTO_DIRS) --include_imports --descriptor_set_out=$$t/std.pb $(LIB_REFLECTED); \
	scripts/embed.sh $$t/std.pb grpc__std_descriptor_set > $$t/std.c; mv $$t/std.c $(GEN)/grpc_std_descriptors.c; \
	protoc $(PROTO_DIRS) --include_imports --descriptor_set_out=$$t/app.pb $(APP_REFLECTED); \
	scripts/embed.sh $$t/app.pb app_descriptor_set > $$t/app.c; mv $$t/app.c $(GEN)/app_descriptors.c; \
	rm -rf $$t; echo "gen $(GEN)/grpc_std_descriptors.c $(GEN)/app_descriptors.c"
	@touch $@
$(GEN_C): $(GEN)/.stamp

# The admin console's page and its charting library (uPlot, MIT, vendored
# in app/console with its licence), embedded so the page needs no network.
CONSOLE_ASSETS := app/console/index.html app/console/uPlot.iife.min.js app/console/uPlot.min.css
$(GEN)/console_assets.c: $(CONSOLE_ASSETS) scripts/embed.sh
	@mkdir -p $(GEN)
	{ scripts/embed.sh app/console/index.html console_index_html; \
	  scripts/embed.sh app/console/uPlot.iife.min.js console_uplot_js; \
	  scripts/embed.sh app/console/uPlot.min.css console_uplot_css; } > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/gen/%.o: $(GEN)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wno-unused-parameter -c $< -o $@

$(BUILD)/obj/%.o: %.c | $(GEN)/.stamp
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.S
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The library's objects see only the public headers' declarations with
# default visibility (each include/bazaar/*.h wraps itself in
# `#pragma GCC visibility push(default)`); the rest stays inside.
$(LIB_OBJ) $(LIB_PIC): CFLAGS += -fvisibility=hidden
$(BUILD)/pic/gen/%.o: $(GEN)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -Wno-unused-parameter -c $< -o $@
$(BUILD)/pic/%.o: %.c | $(GEN)/.stamp
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -c $< -o $@
$(BUILD)/pic/%.o: %.S
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -c $< -o $@

# Build information (base/metrics.c: bazaar_build_info): the git commit when
# there is a checkout, else "unknown", so a tarball builds too.  Rewritten
# only when it changes, so an unchanged tree does not recompile; the scratch
# file is per process because .ci/run runs several makes at once.
BUILDINFO := $(GEN)/buildinfo.h
$(BUILDINFO): FORCE
	@mkdir -p $(GEN)
	@c=$$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown); \
	if [ "$$c" != unknown ] && ! git diff --quiet HEAD -- 2>/dev/null; then c="$$c+dirty"; fi; \
	t=$@.$$$$.tmp; printf '#define BAZAAR_COMMIT "%s"\n' "$$c" > $$t; \
	if cmp -s $$t $@; then rm -f $$t; else mv $$t $@; fi
$(BUILD)/obj/base/metrics.o $(BUILD)/pic/base/metrics.o: $(BUILDINFO)
FORCE:

# ---- the library ----------------------------------------------------------------
# libbazaar.a, and libbazaar.so.MAJOR.MINOR.PATCH with the SONAME
# libbazaar.so.MAJOR (the numbers are <bazaar/version.h>'s) and its two
# links; -z defs: the shared library names every library it needs.
# LIB_LDLIBS are the layers' own dependencies (bazaar.pc says the same).
VERSION_OF = $(shell sed -n 's/^\#define BAZAAR_VERSION_$(1) \([0-9]*\)$$/\1/p' include/bazaar/version.h)
LIB_VERSION := $(call VERSION_OF,MAJOR).$(call VERSION_OF,MINOR).$(call VERSION_OF,PATCH)
LIB_SONAME  := libbazaar.so.$(call VERSION_OF,MAJOR)
LIB_SO      := $(BUILD)/libbazaar.so.$(LIB_VERSION)
LIB_LDLIBS  := -lsqlite3 -lhiredis -luring -lsodium -lprotobuf-c -lssl -lcrypto -lz -lm -ldl
LIB_PC_REQ  := sqlite3 hiredis liburing libsodium openssl zlib

lib: $(BUILD)/libbazaar.a $(LIB_SO) $(BUILD)/$(LIB_SONAME) $(BUILD)/libbazaar.so

$(BUILD)/libbazaar.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(LIB_SO): $(LIB_PIC)
	$(CC) -shared $(LDFLAGS) -Wl,-soname,$(LIB_SONAME) -Wl,-z,defs -Wl,--as-needed -o $@ $^ $(LIB_LDLIBS)
$(BUILD)/$(LIB_SONAME) $(BUILD)/libbazaar.so: $(LIB_SO)
	ln -sf $(notdir $(LIB_SO)) $@

# The public ABI against its baseline abi/libbazaar.abi (scripts/abi.sh,
# abigail-tools): abi-check fails on a removed or changed function or
# variable or a changed public type and allows additions; abi-dump
# rewrites the baseline (a deliberate change: docs/ARCHITECTURE.md).
abi-dump: $(LIB_SO)
	@scripts/abi.sh dump $(LIB_SO)
abi-check: $(LIB_SO)
	@scripts/abi.sh check $(LIB_SO)

$(BUILD)/libmarket.a: $(APP_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/bazaar: $(BUILD)/obj/cmd/bazaar.o $(MARKET)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(MARKET) $(UNIT_AOBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(UNIT_AOBJ) $(MARKET) $(LDLIBS) -lcmocka

$(BUILD)/http_testd: tests/http_testd.c $(MARKET)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(MARKET) $(LDLIBS)

run: deps
	@$(MAKE) --no-print-directory all
	./build/bazaar serve

# Unit suites; the db/ and cache/ ones need the throwaway PostgreSQL and
# Redis that tests/with_services.sh starts (and always stops).
unit: $(UNIT_BIN)
	@tests/with_services.sh tests/run_unit.sh $(UNIT_BIN)

# The Python suites run with Debian's pytest.  Their tests start their own
# servers on free ports in their own temp dirs (tests/lib/harness.py), so
# pytest-xdist runs several of them side by side: PYTEST_WORKERS processes
# for the black-box suite, DEPLOY_WORKERS for the deployment suite (0 or 1:
# one process, in file order; make test runs it beside the others in one,
# where its 2 s request timeouts hold; CI gives it 2), each test module
# whole on one worker (--dist loadscope: a module's servers start once,
# its tests run in order).  Most of their time is spent waiting on
# sockets, timers and services.
PYTEST_WORKERS ?= 3
DEPLOY_WORKERS ?= 1
PYTEST  := /usr/bin/python3 -m pytest -p no:cacheprovider -q
xdist    = $(if $(filter-out 0 1,$(1)),-n $(1) --dist loadscope)

# Black-box suites: real servers, real sockets and HTTP clients (pytest);
# blackbox-h2c is the REST contract again over HTTP/2.
test-abuse: $(BUILD)/bazaar
	cd tests/blackbox && BAZAAR_BUILD=$(CURDIR)/$(BUILD) $(PYTEST) -s test_abuse_h2.py

blackbox: blackbox-h1 blackbox-h2c
# Two modules run after the others, in one process: the hostile-peer
# suite, whose benign client times the server under each attack (p99
# against its own quiet baseline), and the gRPC conformance suite, whose
# deadline floods (900 calls a port) count a stream reset by the client
# until its handler winds down; their siblings' load would blur both.
# (Under the sanitizers the hostile-peer verdicts on time and memory are
# not asserted: that module stays with the others.)
BLACKBOX_ALONE := $(if $(filter asan tsan,$(MODE)),,test_abuse_h2.py) test_grpc_conformance.py
blackbox-h1: $(BUILD)/bazaar $(BUILD)/http_testd
	cd tests/blackbox && BAZAAR_BUILD=$(CURDIR)/$(BUILD) ../with_services.sh sh -c '\
	  $(PYTEST) $(call xdist,$(PYTEST_WORKERS)) $(BLACKBOX_ALONE:%=--ignore=%); r=$$?; \
	  echo "== $(BLACKBOX_ALONE), after the others"; \
	  $(PYTEST) $(BLACKBOX_ALONE) && exit $$r'
blackbox-h2c: $(BUILD)/bazaar
	@echo "== the REST contract again, over HTTP/2 (h2c prior knowledge)"
	cd tests/blackbox && BAZAAR_TEST_H2C=1 BAZAAR_BUILD=$(CURDIR)/$(BUILD) ../with_services.sh $(PYTEST) test_api.py

# The fault suite (tests/faults/): starts its own PostgreSQL, Redis, proxy
# and bazaar processes, breaks them under load, and checks the database
# against every acknowledged response; prints a table of the cases.
test-faults: deps-test $(BUILD)/bazaar
	cd tests/faults && BAZAAR_BUILD=$(CURDIR)/$(BUILD) /usr/bin/python3 -m pytest -p no:cacheprovider -q

# The deployment suite (tests/deploy/): bazaar against the real production
# components — TLS clients, a PostgreSQL standby, pgbouncer, Redis Sentinel,
# promtool, an installed tree — each started in a temp dir on free ports.
test-deploy: deps-test $(BUILD)/bazaar lib
	cd tests/deploy && BAZAAR_BUILD=$(CURDIR)/$(BUILD) $(PYTEST) $(call xdist,$(DEPLOY_WORKERS))

# The examples alone (also in test-deploy): libbazaar installed into a temp
# DESTDIR, examples/hello and examples/todo built outside the tree with
# pkg-config, run, and driven with curl and python3-grpcio.
examples: deps-test $(BUILD)/bazaar lib
	cd tests/deploy && BAZAAR_BUILD=$(CURDIR)/$(BUILD) $(PYTEST) test_examples.py test_example_greeter.py

# The soak (tests/soak/): SQLite + memory cache, then PostgreSQL + Redis,
# each for SOAK_SECONDS under the mixed load while 10,000 idle keep-alive
# and 2,000 slowloris connections are held; RSS and descriptors must stay
# flat after warm-up, p99 stable, no undesigned 5xx.  One table per backend.
# SOAK_BACKENDS picks them (sqlite,postgres); SOAK_WARMUP is the fraction
# of the run not judged (at least 30 s): what the server holds fills for
# its first ~80-100 s under this load (stacks up to the 12 KiB a pooled
# one keeps, SQLite's page caches, malloc's arenas), so a short run must
# warm up that long before RSS is judged flat.
SOAK_SECONDS ?= 600
SOAK_BACKENDS ?= sqlite,postgres
SOAK_WARMUP ?= 0.2
soak: deps-test $(BUILD)/bazaar
	cd tests/soak && BAZAAR_BUILD=$(CURDIR)/$(BUILD) /usr/bin/python3 soak.py --seconds $(SOAK_SECONDS) \
	  --backends $(SOAK_BACKENDS) --warmup $(SOAK_WARMUP)

# The layer check, the build, then the unit, black-box (h1, h2c) and
# deployment suites at once, each suite's output printed whole when it
# ends (-O); -k: every suite runs even when one fails.
test: deps-test
	@scripts/check-layers.sh
	@$(MAKE) --no-print-directory -j2 all abi-check $(BUILD)/http_testd $(UNIT_BIN)
	@echo "== unit, blackbox-h1, blackbox-h2c and test-deploy at once; each prints when it ends"
	@$(MAKE) --no-print-directory -k -j4 -O unit blackbox-h1 blackbox-h2c test-deploy

asan:
	@$(MAKE) --no-print-directory MODE=asan CC=clang build/asan/bazaar
tsan:
	@$(MAKE) --no-print-directory MODE=tsan CC=clang build/tsan/bazaar
# Under ASan every server costs 2-3x the CPU: fewer black-box workers.
ASAN_WORKERS ?= 2
test-asan: deps-test
	@$(MAKE) --no-print-directory -j2 MODE=asan CC=clang build/asan/bazaar build/asan/http_testd \
	  $(UNIT_SRC:tests/unit/%.c=build/asan/tests/%)
	@$(MAKE) --no-print-directory -k -j3 -O MODE=asan CC=clang PYTEST_WORKERS=$(ASAN_WORKERS) unit blackbox-h1 blackbox-h2c
test-tsan: deps-test
	@$(MAKE) --no-print-directory MODE=tsan CC=clang unit
# The portable ucontext context switch, on the runtime suite.
test-ucontext: deps-test
	@$(MAKE) --no-print-directory MODE=ucontext build/ucontext/tests/test_rt
	@tests/run_unit.sh build/ucontext/tests/test_rt

FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))

# libFuzzer targets (clang) for every parser of client bytes; each runs
# FUZZ_SECONDS on a scratch copy of its committed seed corpus.
fuzz: deps-test
	@$(MAKE) --no-print-directory MODE=fuzz CC=clang $(FUZZ_TARGETS:%=build/fuzz/%)
	@tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(MARKET)
	$(CC) $(CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(MARKET) $(LDLIBS)

bench: deps-bench
	@$(MAKE) --no-print-directory $(BUILD)/bench_rt $(BUILD)/bench_db $(BUILD)/bench_cache $(BUILD)/bazaar
	@tests/bench/run.sh

# The hot path's budgets (tests/bench/instr.py): user-space instructions
# per request on the request path under callgrind (deterministic: the
# check, CI's gate, allows 3 % over the baseline; about 3 minutes), and
# system calls and minor faults per request under keep-alive load
# (absolute limits; they follow the machine's scheduling, so apart).
bench-instr: deps-test $(BUILD)/bazaar
	@/usr/bin/python3 tests/bench/instr.py
bench-instr-check: deps-test $(BUILD)/bazaar
	@/usr/bin/python3 tests/bench/instr.py --check --no-kernel
bench-kernel-check: deps-test $(BUILD)/bazaar
	@/usr/bin/python3 tests/bench/instr.py --check --no-instr
# The kernel side of a transfer on PostgreSQL + Redis (issue 18): system
# calls by kind and minor faults per POST /v1/transfers, absolute limits
# (tests/bench/transfer_kernel.py; ~10 s, its own throwaway services).
bench-transfer-kernel-check: $(BUILD)/bazaar
	@tests/with_services.sh /usr/bin/python3 tests/bench/transfer_kernel.py --check

# bench_db calls libpq directly (the synchronous baseline), so it links it.
$(BUILD)/bench_db: tests/bench/bench_db.c $(MARKET)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(MARKET) $(LDLIBS) -lpq

$(BUILD)/bench_cache: tests/bench/bench_cache.c $(MARKET)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(MARKET) $(LDLIBS)

$(BUILD)/bench_rt: tests/bench/bench_rt.c $(MARKET)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(MARKET) $(LDLIBS)

format:
	clang-format -i $(LIB_SRC) $(APP_SRC) $(wildcard */*.h include/bazaar/*.h) cmd/*.c tests/unit/*.c

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)

# ---- install ------------------------------------------------------------------
# `make && sudo make install`: install never builds (so root never rebuilds
# with its own environment, and no network is needed); it refuses when the
# binary is missing.  Debian's places: a unit of a PREFIX=/usr install goes
# to /lib/systemd/system (as packages do), of any other PREFIX to
# $(PREFIX)/lib/systemd/system (systemd searches /usr/local/lib/systemd/system
# too); the environment file is /etc/default/bazaar.  An existing
# environment file is kept (the fresh template goes beside it as .new).
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
BINDIR     := $(PREFIX)/bin
MANDIR     := $(PREFIX)/share/man/man1
UNITDIR    ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
ENVFILE    := $(SYSCONFDIR)/default/bazaar
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR := $(PREFIX)/include
PUBLIC_H   := $(wildcard include/bazaar/*.h)

# The library for service authors: the public headers in
# $(INCLUDEDIR)/bazaar, libbazaar.a, libbazaar.so.X.Y.Z with its SONAME link
# (.so.X, what programs load) and its development link (.so, what -lbazaar
# finds), and bazaar.pc, written from dist/bazaar.pc.in for this PREFIX
# and LIBDIR (a libdir under the prefix as ${prefix}/..., so `pkg-config
# --define-prefix` finds a tree installed under a DESTDIR).  Like install,
# it never builds.
install-lib:
	@for f in $(BUILD)/libbazaar.a $(LIB_SO); do \
	  test -e $$f || { echo "make install-lib: $$f is missing; run make first" >&2; exit 1; }; done
	install -d $(DESTDIR)$(INCLUDEDIR)/bazaar $(DESTDIR)$(LIBDIR)/pkgconfig
	install -m 0644 $(PUBLIC_H) $(DESTDIR)$(INCLUDEDIR)/bazaar/
	install -m 0644 $(BUILD)/libbazaar.a $(DESTDIR)$(LIBDIR)/libbazaar.a
	install -m 0755 $(LIB_SO) $(DESTDIR)$(LIBDIR)/$(notdir $(LIB_SO))
	ln -sf $(notdir $(LIB_SO)) $(DESTDIR)$(LIBDIR)/$(LIB_SONAME)
	ln -sf $(LIB_SONAME) $(DESTDIR)$(LIBDIR)/libbazaar.so
	@libdir='$(LIBDIR)'; case "$$libdir" in '$(PREFIX)'/*) libdir="\$${prefix}$${libdir#$(PREFIX)}";; esac; \
	echo "dist/bazaar.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/bazaar.pc (libdir=$$libdir)"; \
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e "s|@LIBDIR@|$$libdir|g" -e 's|@VERSION@|$(LIB_VERSION)|g' \
	    -e 's|@REQUIRES_PRIVATE@|$(LIB_PC_REQ)|g' -e 's|@LIBS_PRIVATE@|-pthread -lm -ldl|g' \
	    dist/bazaar.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/bazaar.pc
	chmod 0644 $(DESTDIR)$(LIBDIR)/pkgconfig/bazaar.pc

# Every header of the installed directory goes (it is bazaar's alone).
uninstall-lib:
	rm -f $(DESTDIR)$(LIBDIR)/libbazaar.a $(DESTDIR)$(LIBDIR)/libbazaar.so $(DESTDIR)$(LIBDIR)/$(LIB_SONAME) \
	  $(DESTDIR)$(LIBDIR)/$(notdir $(LIB_SO)) $(DESTDIR)$(LIBDIR)/pkgconfig/bazaar.pc
	rm -rf $(DESTDIR)$(INCLUDEDIR)/bazaar

install: install-lib
	@test -x $(BUILD)/bazaar || { echo "make install: $(BUILD)/bazaar is missing; run make first" >&2; exit 1; }
	@command -v help2man >/dev/null || { echo "make install: help2man is needed for the man page" >&2; exit 1; }
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/default
	install -m 0755 $(BUILD)/bazaar $(DESTDIR)$(BINDIR)/bazaar
	help2man --no-info --no-discard-stderr --section=1 \
	  --name="marketplace backend (REST/JSON and gRPC)" $(BUILD)/bazaar | gzip -9n > $(DESTDIR)$(MANDIR)/bazaar.1.gz
	chmod 0644 $(DESTDIR)$(MANDIR)/bazaar.1.gz
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@ENVFILE@|$(ENVFILE)|g' dist/bazaar.service.in > $(DESTDIR)$(UNITDIR)/bazaar.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/bazaar.service
	@if [ -e $(DESTDIR)$(ENVFILE) ]; then \
	  $(BUILD)/bazaar env-template > $(DESTDIR)$(ENVFILE).new && chmod 0644 $(DESTDIR)$(ENVFILE).new && \
	  echo "kept $(DESTDIR)$(ENVFILE); the current template is $(DESTDIR)$(ENVFILE).new"; \
	else \
	  $(BUILD)/bazaar env-template > $(DESTDIR)$(ENVFILE) && chmod 0644 $(DESTDIR)$(ENVFILE); \
	fi

# The environment file stays when it was edited (it differs from the template).
uninstall: uninstall-lib
	rm -f $(DESTDIR)$(BINDIR)/bazaar $(DESTDIR)$(MANDIR)/bazaar.1.gz $(DESTDIR)$(UNITDIR)/bazaar.service $(DESTDIR)$(ENVFILE).new
	@if [ -e $(DESTDIR)$(ENVFILE) ] && [ -x $(BUILD)/bazaar ] && $(BUILD)/bazaar env-template | cmp -s - $(DESTDIR)$(ENVFILE); then \
	  rm -f $(DESTDIR)$(ENVFILE); else [ ! -e $(DESTDIR)$(ENVFILE) ] || echo "kept $(DESTDIR)$(ENVFILE) (edited)"; fi

# ---- Debian packages -------------------------------------------------------------
# make deb: bazaar, libbazaar0 and libbazaar-dev (debian/) with
# `dpkg-buildpackage -b -us -uc`, built in a copy of the tree in
# build/deb/bazaar-src (its `debian/rules clean` removes that copy's build/,
# never this one); the .debs, .buildinfo and .changes land in build/deb.
# make test-debian: tests/deploy/test_debian.py — lintian, then the three
# packages installed into a clean Debian root and the server started there
# from its unit (root; needs deb.debian.org; the bootstrapped root is cached).
# EXTRA_LDFLAGS reaches every link as EXTRA_CFLAGS reaches every compile
# (debian/rules passes Debian's hardening flags through both).
.PHONY: deb deb-symbols test-debian
LDFLAGS += $(EXTRA_LDFLAGS)
DEB_OUT := build/deb
deb: deps-test
	rm -rf $(DEB_OUT)/bazaar-src $(DEB_OUT)/*.deb $(DEB_OUT)/*.changes $(DEB_OUT)/*.buildinfo
	mkdir -p $(DEB_OUT)/bazaar-src
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  git ls-files -z --cached --others --exclude-standard | xargs -0 sh -c 'for f; do [ -e "$$f" ] && printf "%s\0" "$$f"; done' sh | \
	    tar --null -T - -cf - | tar -xf - -C $(DEB_OUT)/bazaar-src; \
	else tar --exclude=./build --exclude=./.git -cf - . | tar -xf - -C $(DEB_OUT)/bazaar-src; fi
	cd $(DEB_OUT)/bazaar-src && dpkg-buildpackage -b -us -uc -j2
	rm -rf $(DEB_OUT)/bazaar-src
	@ls -l $(DEB_OUT)/*.deb
# make deb-symbols: after make deb, debian/libbazaar0.symbols rewritten from
# the built library (a new public symbol gets the changelog's version: the
# first libbazaar0 that has it).  A symbol that went away fails make
# test-debian, and `make deb` itself once the changelog is past the version
# that added it (dpkg-gensymbols).
deb-symbols:
	d=$$(mktemp -d) && dpkg-deb -x $(DEB_OUT)/libbazaar0_*.deb $$d && \
	dpkg-gensymbols -plibbazaar0 -v$$(dpkg-parsechangelog -S Version) -P$$d -Idebian/libbazaar0.symbols \
	  -e$$(ls $$d/usr/lib/*/libbazaar.so.0.*) -Odebian/libbazaar0.symbols; s=$$?; rm -rf $$d; exit $$s
test-debian: deps-test deb
	rm -f $(DEB_OUT)/test-times.txt
	cd tests/deploy && BAZAAR_DEB_DIR=$(CURDIR)/$(DEB_OUT) /usr/bin/python3 -m pytest -p no:cacheprovider -q test_debian.py
	@cat $(DEB_OUT)/test-times.txt
