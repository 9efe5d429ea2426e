# quan — see README.md.  `make` builds build/quan; `make test`, `make check`,
# `make fuzz`, `make bench`, `make install PREFIX=...`.

PREFIX  ?= /usr/local
CC      ?= cc
BUILD   ?= build
# Lua (Debian's liblua5.4.a, as lua-cjson's .a) is linked into the binary:
# its calls are direct, and -Wl,-E gives C modules loaded by require (lfs,
# ...) its lua_* functions. linked: the other libraries every run uses;
# opened: dlopen'ed by the module that needs them, on its first require
# (src/quan.h), their sonames in build/sonames.h
LINKED   = libcurl openssl
OPENED   = libmicrohttpd sqlite3 libedit
PKGS     = lua5.4 $(LINKED) $(OPENED)
CJSON_A := $(shell $(CC) -print-file-name=liblua5.4-cjson.a)
LUA_A   := $(shell $(CC) -print-file-name=liblua5.4.a)

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(LUA_A) $(shell pkg-config --libs $(LINKED))

CFLAGS  ?= -O2 -g
QCFLAGS  = $(CFLAGS) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror=implicit-function-declaration \
           -I$(BUILD) -Isrc $(PKG_CFLAGS)
QLDFLAGS = $(LDFLAGS) -Wl,-E
QLDLIBS  = $(CJSON_A) $(PKG_LIBS) -lpthread -lm -ldl

NATIVE  := $(sort $(wildcard src/l*.c))
SRC     := src/main.c src/host.c src/alloc.c $(NATIVE)
OBJ     := $(SRC:src/%.c=$(BUILD)/%.o) $(BUILD)/embedded.o
LUA     := $(shell find lua -name '*.lua' | LC_ALL=C sort)

all: $(BUILD)/quan

$(BUILD)/quan: $(OBJ)
	$(CC) $(QCFLAGS) $(QLDFLAGS) -o $@ $(OBJ) $(QLDLIBS)

$(BUILD)/%.o: src/%.c src/quan.h $(BUILD)/natives.h $(BUILD)/sonames.h | $(BUILD)
	$(CC) $(QCFLAGS) -c -o $@ $<

# QUAN_SONAME_<NAME>: the soname of each library opened on first use, read
# from the development package's link (lib<name>.so) as the linker would
$(BUILD)/sonames.h: Makefile | $(BUILD)
	@for p in libmicrohttpd:MICROHTTPD sqlite3:SQLITE libedit:EDIT; do \
	  pkg=$${p%%:*}; lib=$$(pkg-config --libs-only-l $$pkg | sed 's/^-l//; s/ .*//'); \
	  so=$$(objdump -p "$$(pkg-config --variable=libdir $$pkg)/lib$$lib.so" | awk '$$1 == "SONAME" { print $$2 }'); \
	  test -n "$$so" || { echo "sonames.h: no SONAME for lib$$lib.so ($$pkg)" >&2; exit 1; }; \
	  echo "#define QUAN_SONAME_$${p#*:} \"$$so\""; \
	done > $@.tmp && mv $@.tmp $@

# Every src/l<name>.c exports luaopen_quan_<name>; host.c preloads them all.
$(BUILD)/natives.h: $(NATIVE) Makefile | $(BUILD)
	@for f in $(NATIVE); do n=$${f#src/l}; echo "QUAN_NATIVE($${n%.c})"; done > $@.tmp
	@cmp -s $@.tmp $@ && rm $@.tmp || mv $@.tmp $@

# The Lua modules under lua/ are compiled into the binary as bytecode, by
# build/bytecode (scripts/bytecode.c, linked with the same liblua5.4).
$(BUILD)/bytecode: scripts/bytecode.c | $(BUILD)
	$(CC) $(CFLAGS) -std=c11 -Wall -Wextra $(shell pkg-config --cflags lua5.4) $(LDFLAGS) -o $@ $< \
	  $(shell pkg-config --libs lua5.4)

$(BUILD)/embedded.c: $(LUA) scripts/embed.sh $(BUILD)/bytecode | $(BUILD)
	sh scripts/embed.sh $(BUILD)/bytecode $(LUA) > $@.tmp
	mv $@.tmp $@

$(BUILD)/embedded.o: $(BUILD)/embedded.c
	$(CC) $(QCFLAGS) -c -o $@ $<

$(BUILD):
	mkdir -p $(BUILD)

test: all cref
	sh tests/run

# AddressSanitizer + UBSan build running the same tests, then valgrind over
# the native specs.
check:
	$(MAKE) BUILD=build/asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" LDFLAGS="-fsanitize=address,undefined" all cref
	QUAN=build/asan/quan ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 sh tests/run
	$(MAKE) all
	QUAN=build/quan sh tests/valgrind

# libFuzzer (clang) over the natives as Lua calls them: tests/fuzz/. Runs
# FUZZ_SECONDS (60); findings are written to build/fuzz/.
FUZZ_SECONDS ?= 60
fuzz: $(BUILD)/natives.h $(BUILD)/sonames.h $(BUILD)/embedded.c
	mkdir -p build/fuzz/corpus
	clang -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
	  -std=c11 -D_GNU_SOURCE -I$(BUILD) -Isrc $(PKG_CFLAGS) -o build/fuzz/natives \
	  tests/fuzz/natives.c src/host.c $(NATIVE) $(BUILD)/embedded.c $(QLDLIBS)
	ASAN_OPTIONS=detect_leaks=0 build/fuzz/natives -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	  -artifact_prefix=build/fuzz/ build/fuzz/corpus tests/fuzz/seeds

# The C reference client of `make bench` (scripts/bench/cref/): libcurl and
# OpenSSL only, measured side by side with quan's client; never part of quan.
cref: $(BUILD)/cref

$(BUILD)/cref: scripts/bench/cref/client.c | $(BUILD)
	$(CC) $(CFLAGS) -std=c11 -D_GNU_SOURCE -Wall -Wextra $(shell pkg-config --cflags libcurl openssl) \
	  $(LDFLAGS) -o $@ $< $(shell pkg-config --libs libcurl openssl)

bench: all cref
	sh scripts/bench.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(BUILD)/quan $(DESTDIR)$(PREFIX)/bin/quan

clean:
	rm -rf build

.PHONY: all cref test check fuzz bench install clean
