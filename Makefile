# Natter — build, run and test.
#
#   make          build/natter-api, build/natter-worker, build/unit-tests, build/sigv4-tool
#   make asan     the same under AddressSanitizer + UBSan, in build-asan/
#   make run      install what is missing, start PostgreSQL, Redis, API and worker
#   make test     both builds, unit tests and API tests against real servers
#   make bench    the benchmarks in bench/ (prints figures)

BUILD ?= build
CC ?= gcc
PKGS := libmicrohttpd libpq hiredis jansson libjwt libsodium libcurl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS ?= -O2 -g
SAN ?=
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -Icommon -Iapi -Iapi/core -Iapi/realtime -Iapi/chat -Iapi/resources -Iapi/blobstore \
              $(PKG_CFLAGS) $(CFLAGS) $(SAN)
ALL_LDFLAGS := -pthread $(SAN) $(LDFLAGS)

COMMON_SRC := $(wildcard common/*.c)
API_SRC := $(filter-out api/main.c,$(wildcard api/*.c api/*/*.c))
WORKER_SRC := $(wildcard workers/*.c)
UNIT_SRC := $(wildcard tests/unit/*.c)

COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/migrations.o
API_OBJ := $(API_SRC:%.c=$(BUILD)/obj/%.o)
WORKER_OBJ := $(WORKER_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_OBJ := $(UNIT_SRC:%.c=$(BUILD)/obj/%.o)

.PHONY: all asan run test bench clean
all: $(BUILD)/natter-api $(BUILD)/natter-worker $(BUILD)/unit-tests $(BUILD)/sigv4-tool

asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g" \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all

run:
	@bash scripts/run.sh

test:
	@bash scripts/test.sh

bench:
	@bash bench/run.sh

clean:
	rm -rf build build-asan

$(BUILD)/gen/migrations.c: $(sort $(wildcard migrations/*.sql)) scripts/embed.sh
	@mkdir -p $(@D)
	sh scripts/embed.sh natter_migrations $@ $(sort $(wildcard migrations/*.sql))

$(BUILD)/gen/openapi.c: openapi/openapi.yaml scripts/embed.sh
	@mkdir -p $(@D)
	sh scripts/embed.sh natter_openapi $@ openapi/openapi.yaml

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Wno-overlength-strings -c -o $@ $<

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/libnatter_common.a: $(COMMON_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libnatter_api.a: $(API_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/natter-api: $(BUILD)/obj/api/main.o $(BUILD)/obj/gen/openapi.o $(BUILD)/libnatter_api.a $(BUILD)/libnatter_common.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/natter-worker: $(WORKER_OBJ) $(BUILD)/libnatter_common.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/unit-tests: $(UNIT_OBJ) $(BUILD)/obj/gen/openapi.o $(BUILD)/libnatter_api.a $(BUILD)/libnatter_common.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

# cross-check tool: the API tests compare its URLs with botocore's
$(BUILD)/sigv4-tool: $(BUILD)/obj/tests/tools/sigv4_tool.o $(BUILD)/libnatter_common.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
