# Natter — build, run and test.
#
#   make          build/natter-api, build/natter-worker, build/unit-tests, build/sigv4-tool
#   make asan     the same under AddressSanitizer + UBSan, in build-asan/
#   make run      install what is missing, start PostgreSQL, Redis, API and worker
#   make unit     build and run the C unit tests (no servers)
#   make check    the fast checks: layer rule, formatting, unit tests
#   make format   clang-format the C sources in place
#   make test     both builds, unit tests and API tests against real servers
#   make test-citus  the API tests against a Citus cluster (scripts/test-citus.sh)
#   make bench    the benchmarks in bench/ (prints figures)
#   make bench-citus  each operation's cost on Citus vs a single PostgreSQL (bench/citus.sh)
#   make fuzz     the libFuzzer harnesses of tests/fuzz/, FUZZ_SECONDS (300) each
#                 (built with clang in build-fuzz/; `make test` runs them briefly)

BUILD ?= build
CC ?= gcc
PKGS := libpq hiredis jansson libjwt libsodium libcurl
# libmicrohttpd is Debian 12's 0.9.75 plus one upstream fix, built static from
# third_party/libmicrohttpd by scripts/build-mhd.sh (cached under .cache/; see the README there)
MHD_DIR := .cache/libmicrohttpd-0.9.75-natter1
MHD_LIB := $(MHD_DIR)/lib/libmicrohttpd.a
PKG_CFLAGS := -isystem $(CURDIR)/$(MHD_DIR)/include $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS ?= -O2 -g
SAN ?=
# Each layer sees its own headers and those of the layers below it, nothing
# else: an include that points up the stack fails to compile (see
# docs/ARCHITECTURE.md; scripts/check-layers.sh proves it in `make test`).
INC_common := -Icommon
INC_core := -Iapi/core $(INC_common)
INC_realtime := -Iapi/realtime $(INC_core)
INC_chat := -Iapi/chat $(INC_realtime)
INC_blobstore := -Iapi/blobstore $(INC_core)
INC_resources := -Iapi/resources -Iapi/blobstore $(INC_chat)
INC_app := $(INC_resources)
INC_workers := -Iworkers $(INC_common)
INC_tests := $(INC_app) -Iworkers -Itests/unit

# Every warning here passes on the whole tree (both builds); keep it so. The
# last three are gcc's only (clang, which builds the fuzzers, has no such flags).
GCC_WARNINGS := -Wlogical-op -Wduplicated-cond -Wduplicated-branches
WARNINGS := -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes -Wmissing-declarations -Wstrict-prototypes \
            -Wold-style-definition -Wnested-externs -Wredundant-decls -Wvla -Wpointer-arith -Wwrite-strings \
            -Wundef -Wformat=2 -Wimplicit-fallthrough -Wnull-dereference \
            $(if $(findstring clang,$(CC)),,$(GCC_WARNINGS))

ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARNINGS) -pthread $(INC) \
             $(PKG_CFLAGS) $(CFLAGS) $(SAN)
ALL_LDFLAGS := -pthread $(SAN) $(LDFLAGS)

$(BUILD)/obj/common/%.o: INC = $(INC_common)
$(BUILD)/obj/gen/%.o: INC = $(INC_common)
$(BUILD)/obj/api/core/%.o: INC = $(INC_core)
$(BUILD)/obj/api/realtime/%.o: INC = $(INC_realtime)
$(BUILD)/obj/api/chat/%.o: INC = $(INC_chat)
$(BUILD)/obj/api/blobstore/%.o: INC = $(INC_blobstore)
$(BUILD)/obj/api/resources/%.o: INC = $(INC_resources)
$(BUILD)/obj/api/%.o: INC = $(INC_app)
$(BUILD)/obj/workers/%.o: INC = $(INC_workers)
$(BUILD)/obj/tests/%.o: INC = $(INC_tests)

COMMON_SRC := $(wildcard common/*.c)
API_SRC := $(filter-out api/main.c,$(wildcard api/*.c api/*/*.c))
WORKER_SRC := $(wildcard workers/*.c)
UNIT_SRC := $(shell find tests/unit -name '*.c' | sort)

COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/migrations.o
API_OBJ := $(API_SRC:%.c=$(BUILD)/obj/%.o)
WORKER_OBJ := $(WORKER_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_OBJ := $(UNIT_SRC:%.c=$(BUILD)/obj/%.o)

.PHONY: all asan run test test-citus unit check format bench bench-citus clean fuzz fuzz-build fuzzers print-INC_% print-PKG_CFLAGS
all: $(BUILD)/natter-api $(BUILD)/natter-worker $(BUILD)/unit-tests $(BUILD)/sigv4-tool

asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g" \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all

# libFuzzer harnesses: clang, instrumented for coverage, ASan and UBSan
FUZZERS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
fuzz-build:
	$(MAKE) BUILD=build-fuzz CC=clang CFLAGS="-O1 -g" SAN="-fsanitize=fuzzer-no-link $(FUZZ_SAN)" fuzzers

fuzzers: $(FUZZERS:%=$(BUILD)/fuzz-%)

$(BUILD)/fuzz-%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/obj/gen/openapi.o $(API_OBJ) $(BUILD)/libnatter_common.a $(MHD_LIB)
	$(CC) $(ALL_LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(PKG_LIBS)

fuzz: fuzz-build
	@bash scripts/fuzz.sh $${FUZZ_SECONDS:-300} keep

run:
	@bash scripts/run.sh

# the API suite against a Citus coordinator + 2 workers (builds Citus once; not in `make test`)
test-citus:
	@bash scripts/test-citus.sh

test:
	@bash scripts/test.sh

unit: $(BUILD)/unit-tests
	$(BUILD)/unit-tests

C_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null || find api common workers tests bench -name '*.[ch]')

check: unit
	@bash scripts/check-layers.sh
	@bash scripts/check-format.sh

format:
	clang-format -i $(C_FILES)

bench:
	@bash bench/run.sh

bench-citus:
	@bash bench/citus.sh

clean:
	rm -rf build build-asan build-fuzz

# `make -s print-INC_core`: a layer's include flags (scripts/check-layers.sh)
print-INC_%:
	@echo '$(INC_$*)'

# the libraries' include flags (scripts/check-layers.sh)
print-PKG_CFLAGS:
	@echo '$(PKG_CFLAGS)'

$(BUILD)/gen/migrations.c: $(sort $(wildcard migrations/*.sql)) scripts/embed.sh
	@mkdir -p $(@D)
	sh scripts/embed.sh natter_migrations $@ $(sort $(wildcard migrations/*.sql))

$(BUILD)/gen/openapi.c: openapi/openapi.yaml scripts/embed.sh
	@mkdir -p $(@D)
	sh scripts/embed.sh natter_openapi $@ openapi/openapi.yaml

# the web client (web/, but not its READMEs), served by natter-api (webapp.c)
WEB_FILES := $(shell find web -type f ! -name '*.md' 2>/dev/null | LC_ALL=C sort)
$(BUILD)/gen/web.c: $(WEB_FILES) scripts/embed-web.sh
	@mkdir -p $(@D)
	sh scripts/embed-web.sh $@ web

$(BUILD)/obj/gen/web.o: INC = $(INC_resources)

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Wno-overlength-strings -c -o $@ $<

$(BUILD)/obj/%.o: %.c | $(MHD_LIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(MHD_LIB): scripts/build-mhd.sh $(wildcard third_party/libmicrohttpd/*.tar.xz third_party/libmicrohttpd/patches/*.patch)
	@bash scripts/build-mhd.sh $(CURDIR)/$(MHD_DIR)

$(BUILD)/libnatter_common.a: $(COMMON_OBJ)
	rm -f $@ && ar rcs $@ $^

# api objects are linked as they are, not through an archive: two layers may
# hold files of the same name (realtime/presence.c, resources/presence.c)
$(BUILD)/natter-api: $(BUILD)/obj/api/main.o $(BUILD)/obj/gen/openapi.o $(BUILD)/obj/gen/web.o $(API_OBJ) $(BUILD)/libnatter_common.a $(MHD_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

# natter-worker's operator listener (workers/ops.c) uses the same static libmicrohttpd
$(BUILD)/natter-worker: $(WORKER_OBJ) $(BUILD)/libnatter_common.a $(MHD_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/unit-tests: $(UNIT_OBJ) $(BUILD)/obj/gen/openapi.o $(API_OBJ) $(BUILD)/libnatter_common.a $(MHD_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

# cross-check tool: the API tests compare its URLs with botocore's
$(BUILD)/sigv4-tool: $(BUILD)/obj/tests/tools/sigv4_tool.o $(BUILD)/libnatter_common.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
