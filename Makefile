# strata - GNU make build.  "make" builds build/strata; "make check" runs the
# whole suite (installing missing Debian packages first); "make run" starts a hub.

CC      ?= cc
PKGS    := libmicrohttpd jansson sqlite3 libnbd libcurl libmariadb libvirt libxml-2.0 libxxhash gnutls
WARN    := -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes -Wno-unused-parameter
ifeq ($(CI),true)
WARN    += -Werror
endif
CFLAGS  ?= -O2 -g
SANITIZE ?=
ifeq ($(SANITIZE),1)
BUILD   ?= build-asan
CFLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
else
BUILD   ?= build
endif
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ALL_CFLAGS = -std=gnu11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -Isrc -I$(BUILD)/gen $(PKG_CFLAGS) -MMD -MP
LIBS    = $(PKG_LIBS) -lpthread

# Debian packages the build, the hub and the tests need.
DEB_PKGS := gcc make pkg-config libmicrohttpd-dev libjansson-dev libsqlite3-dev \
            libnbd-dev libcurl4-openssl-dev libmariadb-dev mariadb-server mariadb-client \
            qemu-utils qemu-system-common libnbd-bin sqlite3 jq curl perl procps \
            iproute2 e2fsprogs bsdutils util-linux \
            libvirt-dev libxml2-dev libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients \
            qemu-system-x86 libxxhash-dev prometheus libgnutls28-dev gnutls-bin

LIB_SRCS  := $(sort $(wildcard src/*/*.c))
LIB_OBJS  := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRCS)) $(BUILD)/obj/gen/migrations.o \
             $(BUILD)/obj/gen/assets.o
UNIT_SRCS := $(sort $(wildcard tests/unit/test-*.c))
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
MIGRATIONS := $(sort $(wildcard src/catalog/migrations/*/*.sql))
# Files the hub serves as they are (src/web/web.h): URLPATH=FILE pairs.
WEB_STATIC := $(sort $(wildcard src/web/static/*))
WEB_ASSETS := $(foreach f,$(WEB_STATIC),/$(notdir $(f))=$(f)) \
              /api/v1/openapi.json=docs/openapi.json

.PHONY: all deps check check-unit check-integration check-mariadb check-asan check-ops \
        ops-deps npm-deps run bench soak clean
all: $(BUILD)/strata

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing missing Debian packages:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "missing Debian packages; run: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi; \
	if ! id libvirt-qemu > /dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    getent group libvirt-qemu > /dev/null || groupadd --system libvirt-qemu; \
	    useradd --system -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu; \
	  else \
	    echo "libvirtd needs the libvirt-qemu user; run: sudo groupadd --system libvirt-qemu &&" \
	         "sudo useradd --system -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu" >&2; exit 1; \
	  fi; \
	fi

$(BUILD)/gen/migrations.c: $(MIGRATIONS) tools/embed-migrations.sh
	@mkdir -p $(dir $@)
	sh tools/embed-migrations.sh $(MIGRATIONS) > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/gen/migrations.o: $(BUILD)/gen/migrations.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/gen/assets.c: $(WEB_STATIC) docs/openapi.json tools/embed-files.sh
	@mkdir -p $(dir $@)
	sh tools/embed-files.sh $(WEB_ASSETS) > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/gen/assets.o: $(BUILD)/gen/assets.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/libstrata.a: $(LIB_OBJS)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/strata: $(BUILD)/obj/main.o $(BUILD)/libstrata.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c tests/unit/tap.h $(BUILD)/libstrata.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< $(BUILD)/libstrata.a $(LIBS)

# The suite: unit tests and integration tests against the normal build, a
# few seconds of each fuzzer (see "Fuzzing" below), then the whole suite
# again against the ASan/UBSan build, whose prove summary closes the run.
# A test that hangs must not take the whole run with it: each test program
# gets TEST_TIMEOUT seconds (the slowest take a few minutes under ASan), then
# its process group is killed and prove reports it failed.
TEST_TIMEOUT ?= 1800
TEST_EXEC = timeout -k 10 $(TEST_TIMEOUT)

check: deps
	$(MAKE) check-unit check-integration
	$(MAKE) check-ops
	$(MAKE) check-mariadb
	$(MAKE) fuzz-smoke
	$(MAKE) check-asan

check-unit: $(BUILD)/strata $(UNIT_BINS)
	STRATA_BUILD=$(CURDIR)/$(BUILD) prove -v -e '$(TEST_EXEC)' $(UNIT_BINS)

check-integration: $(BUILD)/strata
	STRATA=$(CURDIR)/$(BUILD)/strata prove -j2 -e '$(TEST_EXEC)' tests/integration/test-*.sh

# The catalog's contract test and the whole integration suite once more with
# the catalog on MariaDB: tests/mariadb-server.sh starts a private mariadbd
# (its own temporary folder and socket, no system service), runs the tests
# with STRATA_TEST_DB=mariadb, and stops it whatever happens.  Once per
# "make check", against the normal build (not again under ASan).
check-mariadb: $(BUILD)/strata $(BUILD)/tests/test-catalog
	tests/mariadb-server.sh run sh -c '\
	  STRATA_BUILD=$(CURDIR)/$(BUILD) prove -v -e "$(TEST_EXEC)" $(BUILD)/tests/test-catalog && \
	  STRATA=$(CURDIR)/$(BUILD)/strata prove -j2 -e "$(TEST_EXEC)" tests/integration/test-*.sh'

check-asan:
	$(MAKE) SANITIZE=1 check-unit check-integration

# --- Operations: the dashboard in a browser, the OpenAPI linter, install --
# tests/ops/test-*.sh, once per "make check" against the normal build.  They
# need Debian's chromium, scdoc, prometheus and systemd, and two pinned npm
# packages (tests/ops/package.json: playwright-core drives chromium,
# @redocly/cli lints docs/openapi.json), installed with the machine's
# Node.js and npm into $(BUILD)/npm.  None of them is needed to build or
# run strata.
OPS_DEB_PKGS := chromium scdoc prometheus nodejs systemd man-db
NPM_DIR := $(CURDIR)/$(BUILD)/npm

ops-deps:
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(OPS_DEB_PKGS)"

npm-deps: $(NPM_DIR)/.installed
$(NPM_DIR)/.installed: tests/ops/package.json tests/ops/package-lock.json
	@mkdir -p $(NPM_DIR)
	cp tests/ops/package.json tests/ops/package-lock.json $(NPM_DIR)/
	cd $(NPM_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

check-ops: ops-deps $(BUILD)/strata
	$(MAKE) npm-deps
	STRATA=$(CURDIR)/$(BUILD)/strata STRATA_BUILD=$(CURDIR)/$(BUILD) STRATA_NPM=$(NPM_DIR) \
	  prove -v -e '$(TEST_EXEC)' tests/ops/test-*.sh

# The README's pictures of the dashboard: the browser test's screenshots
# (a real hub with real backups), copied to docs/screenshots/, committed.
.PHONY: screenshots
screenshots: ops-deps $(BUILD)/strata
	$(MAKE) npm-deps
	rm -rf $(BUILD)/screenshots
	STRATA=$(CURDIR)/$(BUILD)/strata STRATA_BUILD=$(CURDIR)/$(BUILD) STRATA_NPM=$(NPM_DIR) \
	  prove tests/ops/test-dashboard.sh
	mkdir -p docs/screenshots
	cp $(BUILD)/screenshots/*.png docs/screenshots/

run: deps
	$(MAKE) $(BUILD)/strata
	$(BUILD)/strata serve --data-dir ./var

# The data path against its peers in one run on this machine: full backup
# vs nbdcopy, a 5% incremental, a 100 TiB sparse disk, restore vs qemu-img
# convert, a prune of 21 points to 3 vs deleting them and taking a new full
# (tests/bench/bench.sh; BENCH_DATA_MIB, BENCH_ROUNDS, BENCH_DIR).
# Prints figures and ratios; every copy is checked, no speed is asserted.
bench: deps
	$(MAKE) $(BUILD)/strata
	TMPDIR=$${BENCH_DIR:-$${TMPDIR:-/tmp}} STRATA=$(CURDIR)/$(BUILD)/strata bash tests/bench/bench.sh

# The hub under mixed load for SOAK_SECONDS (default 1800): hub-driven
# backups of changing sources, restores, API clients with good and bad
# requests, SIGKILLs of the storage daemon; then every point restored and
# compared, no orphan file, no stuck job (tests/soak/soak.sh; loopback only).
# Its figures, events and the hub's log are left in build/soak/.
SOAK_SECONDS ?= 1800
soak: deps
	$(MAKE) $(BUILD)/strata
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_LOG_DIR=$(CURDIR)/$(BUILD)/soak \
	  STRATA=$(CURDIR)/$(BUILD)/strata prove -v tests/soak/soak.sh

# --- Fuzzing ---------------------------------------------------------------
# libFuzzer targets (tests/fuzz/fuzz-*.c) for the parsers of outside input.
# They link a copy of the real library objects built with clang into
# build-fuzz/.  "make fuzz" runs each for FUZZ_SECONDS, "make fuzz-smoke" for
# FUZZ_SMOKE_SECONDS; either fails when a fuzzer finds a crash, a leak or a
# hang, leaving the input in build-fuzz/artifacts/.  New inputs go to
# build-fuzz/corpus/NAME; tests/fuzz/corpus/NAME is only read.
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 5
FUZZ_CC    ?= clang
FUZZ_BUILD := build-fuzz
FUZZ_DEB_PKGS := make pkg-config libmicrohttpd-dev libjansson-dev libsqlite3-dev libxxhash-dev \
                 libnbd-dev libcurl4-openssl-dev libmariadb-dev libgnutls28-dev \
                 clang libclang-rt-14-dev
FUZZ_SAN   := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS = -std=gnu11 -D_GNU_SOURCE $(WARN) \
              -O1 -g -fno-omit-frame-pointer \
              $(FUZZ_SAN) -Isrc -I$(FUZZ_BUILD)/gen $(PKG_CFLAGS) -MMD -MP
FUZZ_OBJS  := $(patsubst src/%.c,$(FUZZ_BUILD)/obj/%.o,$(LIB_SRCS)) \
              $(FUZZ_BUILD)/obj/gen/migrations.o $(FUZZ_BUILD)/obj/gen/assets.o
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz-%.c,%,$(sort $(wildcard tests/fuzz/fuzz-*.c)))
FUZZ_BINS  := $(patsubst %,$(FUZZ_BUILD)/fuzz-%,$(FUZZ_NAMES))
FUZZ_FLAGS  = -max_len=65536 -timeout=10 -print_final_stats=1

.PHONY: fuzz fuzz-smoke fuzz-deps fuzz-build fuzz-clean
fuzz: fuzz-deps
	$(MAKE) $(addprefix fuzz-run-,$(FUZZ_NAMES))

fuzz-smoke: fuzz-deps
	$(MAKE) FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) $(addprefix fuzz-run-,$(FUZZ_NAMES))

fuzz-deps:
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(FUZZ_DEB_PKGS)"

fuzz-build: $(FUZZ_BINS)

fuzz-run-%: $(FUZZ_BUILD)/fuzz-%
	@mkdir -p $(FUZZ_BUILD)/corpus/$* $(FUZZ_BUILD)/artifacts
	$< $(FUZZ_FLAGS) -max_total_time=$(FUZZ_SECONDS) \
	  -artifact_prefix=$(FUZZ_BUILD)/artifacts/$*- \
	  $(FUZZ_BUILD)/corpus/$* tests/fuzz/corpus/$*

$(FUZZ_BUILD)/gen/migrations.c: $(MIGRATIONS) tools/embed-migrations.sh
	@mkdir -p $(dir $@)
	sh tools/embed-migrations.sh $(MIGRATIONS) > $@.tmp && mv $@.tmp $@

$(FUZZ_BUILD)/obj/gen/migrations.o: $(FUZZ_BUILD)/gen/migrations.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_BUILD)/gen/assets.c: $(WEB_STATIC) docs/openapi.json tools/embed-files.sh
	@mkdir -p $(dir $@)
	sh tools/embed-files.sh $(WEB_ASSETS) > $@.tmp && mv $@.tmp $@

$(FUZZ_BUILD)/obj/gen/assets.o: $(FUZZ_BUILD)/gen/assets.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_BUILD)/libstrata.a: $(FUZZ_OBJS)
	rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz-%: tests/fuzz/fuzz-%.c tests/fuzz/fuzz.h $(FUZZ_BUILD)/libstrata.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Itests/fuzz -fsanitize=fuzzer -o $@ $< \
	  $(FUZZ_BUILD)/libstrata.a $(LIBS)

fuzz-clean:
	rm -rf $(FUZZ_BUILD)

-include $(shell find $(FUZZ_BUILD) -name '*.d' 2>/dev/null)

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(sort build build-asan $(BUILD)) -name '*.d' 2>/dev/null)

# --- Install -----------------------------------------------------------------
# "make man" builds the man pages (man/*.scd, scdoc) into $(BUILD)/man.
# "make install" puts the binary, the man pages, strata.service and the
# config example under $(DESTDIR); the example also becomes
# $(SYSCONFDIR)/strata/strata.conf when there is none (an operator's config is
# never overwritten).  "make uninstall" removes exactly those files: the
# config only while it is still the installed example unchanged, never the
# data under /var/lib/strata.  tests/ops/test-install.sh checks both.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
MAN_SRCS   := $(sort $(wildcard man/*.scd))
MAN_PAGES  := $(patsubst man/%.scd,$(BUILD)/man/%,$(MAN_SRCS))
# Installed man pages, by section: man1/strata.1 ...
MAN_DEST    = $(foreach p,$(MAN_PAGES),$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(p)))/$(notdir $(p)))
CONF_DIR    = $(DESTDIR)$(SYSCONFDIR)/strata

.PHONY: man install uninstall
man: $(MAN_PAGES)

$(BUILD)/man/%: man/%.scd
	@command -v scdoc > /dev/null || $(MAKE) --no-print-directory deps DEB_PKGS=scdoc
	@mkdir -p $(dir $@)
	scdoc < $< > $@.tmp && mv $@.tmp $@

$(BUILD)/strata.service: dist/strata.service
	@mkdir -p $(dir $@)
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' $< > $@.tmp && mv $@.tmp $@

# The unit depends on BINDIR and SYSCONFDIR: made again at every install.
.PHONY: $(BUILD)/strata.service

install: $(BUILD)/strata $(MAN_PAGES) $(BUILD)/strata.service
	install -D -m 0755 $(BUILD)/strata $(DESTDIR)$(BINDIR)/strata
	@set -e; for p in $(MAN_PAGES); do \
	  s=$${p##*.}; \
	  echo "install -D -m 0644 $$p $(DESTDIR)$(MANDIR)/man$$s/$${p##*/}"; \
	  install -D -m 0644 $$p $(DESTDIR)$(MANDIR)/man$$s/$${p##*/}; \
	done
	install -D -m 0644 $(BUILD)/strata.service $(DESTDIR)$(UNITDIR)/strata.service
	install -D -m 0644 dist/strata.conf.example $(CONF_DIR)/strata.conf.example
	@if [ -e $(CONF_DIR)/strata.conf ]; then \
	  echo "$(CONF_DIR)/strata.conf exists: left as it is"; \
	else \
	  echo "install -m 0644 dist/strata.conf.example $(CONF_DIR)/strata.conf"; \
	  install -m 0644 dist/strata.conf.example $(CONF_DIR)/strata.conf; \
	fi

uninstall:
	@if [ -e $(CONF_DIR)/strata.conf ] && \
	    cmp -s $(CONF_DIR)/strata.conf $(CONF_DIR)/strata.conf.example; then \
	  echo "rm -f $(CONF_DIR)/strata.conf"; rm -f $(CONF_DIR)/strata.conf; \
	elif [ -e $(CONF_DIR)/strata.conf ]; then \
	  echo "$(CONF_DIR)/strata.conf differs from the example: kept"; \
	fi
	rm -f $(DESTDIR)$(BINDIR)/strata $(MAN_DEST) $(DESTDIR)$(UNITDIR)/strata.service \
	      $(CONF_DIR)/strata.conf.example
	@rmdir $(CONF_DIR) 2>/dev/null || true
