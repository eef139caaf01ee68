# Front door. Everything real lives in CMakeLists.txt and scripts/.
.PHONY: all deps test-deps build run run-cluster install uninstall test asan unit e2e fuzz \
        fuzz-build fuzz-long fmt fmt-check clean bench bench-cluster bench-claims soak

JOBS ?= $(shell nproc)
LISTEN ?= 127.0.0.1:8080
FUZZ_SECONDS ?= 60

all: build

# Building and running need only the compiler and the libraries' -dev
# packages; the test, fuzz and format tools come with the targets that use them.
deps:
	@scripts/deps.sh build

test-deps:
	@scripts/deps.sh test

build: deps
	@cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DRELAY_TESTS=OFF >/dev/null
	@cmake --build build/release -j $(JOBS) --target pyrycode-relay >/dev/null

# The relay refuses Linux capabilities beyond NET_BIND_SERVICE (spec §6.4);
# as root, dev mode drops them with setpriv the way a deployment would.
DROP_CAPS = $(if $(filter 0,$(shell id -u)),setpriv --bounding-set=-all,+net_bind_service --,)
PREFIX ?= /usr/local

# The relay itself says when it is listening (INFO listening, then ready).
run: build
	@exec $(DROP_CAPS) build/release/pyrycode-relay --insecure-listen $(LISTEN) $(ARGS)

# Cluster mode on one machine: a 3-server NATS cluster with JetStream and
# relays r1-r3 on free loopback ports (printed once every /healthz is 200);
# Ctrl-C stops everything. nats-server comes with the test tools, so this
# installs those too. ARGS go to the script (--lease, --base-port, --follow;
# flags after -- go to every relay). The script drops capabilities itself.
run-cluster: test-deps build
	@exec /usr/bin/python3 scripts/run-cluster.py --relay build/release/pyrycode-relay $(ARGS)

UNIT = $(DESTDIR)/etc/systemd/system/pyrycode-relay.service
DEFAULTS = $(DESTDIR)/etc/default/pyrycode-relay

# The unit names the binary where PREFIX put it; the defaults file is the
# operator's and is never overwritten (nor removed by uninstall).
install: build
	install -D -m 0755 build/release/pyrycode-relay $(DESTDIR)$(PREFIX)/bin/pyrycode-relay
	install -d $(dir $(UNIT))
	sed 's|@PREFIX@|$(PREFIX)|g' packaging/pyrycode-relay.service > $(UNIT).tmp
	chmod 0644 $(UNIT).tmp && mv $(UNIT).tmp $(UNIT)
	test -e $(DEFAULTS) || install -D -m 0600 packaging/pyrycode-relay.default $(DEFAULTS)
	@echo "installed; now: systemctl daemon-reload && systemctl enable --now pyrycode-relay"

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/pyrycode-relay $(UNIT)
	@echo "kept $(DEFAULTS) and /var/lib/pyrycode-relay (configuration and certificates)"

asan: test-deps
	@CC=$${CC:-gcc} cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DRELAY_SANITIZE=ON >/dev/null
	@cmake --build build/asan -j $(JOBS) >/dev/null

# The optimised build `make run` uses is compiled too: -O2 enables warnings
# (truncation, maybe-uninitialized) that the Debug+ASan build does not see.
test: test-deps fmt-check asan build
	@cd build/asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    ctest --output-on-failure -j $(JOBS)

unit: asan
	@cd build/asan && ctest --output-on-failure -L unit -j $(JOBS)

e2e: asan
	@cd build/asan && ctest --output-on-failure -L e2e

fuzz-build: test-deps
	@CC=clang cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRELAY_FUZZ=ON >/dev/null
	@cmake --build build/fuzz -j $(JOBS)

fuzz: fuzz-build
	@for t in build/fuzz/fuzz_*; do \
	    n=$$(basename $$t); mkdir -p build/fuzz/corpus/$$n; \
	    echo "fuzz: $$n for $(FUZZ_SECONDS)s"; \
	    $$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build/fuzz/corpus/$$n fuzz/corpus/$$n || exit 1; \
	done

# Hours, not seconds: FUZZ_SECONDS per target (default 3600 here), at
# nice 19, FUZZ_JOBS targets at once, optional FUZZ_TARGETS subset; then
# -merge=1 into fuzz/corpus/<t> and a per-target line in
# build/fuzz/logs/summary.tsv. See docs/features/fuzzing.md.
FUZZ_LONG_SECONDS = $(if $(filter file,$(origin FUZZ_SECONDS)),3600,$(FUZZ_SECONDS))
FUZZ_JOBS ?= 1
fuzz-long: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_LONG_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) FUZZ_TARGETS="$(FUZZ_TARGETS)" fuzz/long.sh

fmt: test-deps
	@clang-format -i src/*.c src/*.h src/*/*.c src/*/*.h tests/unit/*.c fuzz/*.c $(wildcard bench/*.c bench/*.h)

fmt-check: test-deps
	@clang-format --dry-run --Werror src/*.c src/*.h src/*/*.c src/*/*.h tests/unit/*.c fuzz/*.c $(wildcard bench/*.c bench/*.h)

bench: build
	@bench/run.sh

# Cluster mode, same node vs cross node (about 2 minutes): a 3-server NATS
# cluster and three relays on loopback, the bench/loadgen.c scenarios, a
# dated report in bench/results/<date>-cluster.md. nats-server comes with
# the test tools. ARGS go to the script (--secs, --reps, --workers,
# --no-pin, --bus all, --out).
bench-cluster: test-deps build
	@/usr/bin/python3 bench/cluster.py $(ARGS)

# Cluster claims per second by --cluster-ctl-threads (about 1 minute): one
# relay on a 3-server NATS cluster, loadgen's claims scenario, a dated
# report in bench/results/<date>-claims.md. ARGS: --binaries, --threads,
# --reps, --workers, --out.
bench-claims: test-deps build
	@/usr/bin/python3 bench/claims.py $(ARGS)

# Not part of `make test`: SOAK_SECONDS (default 1800) of mixed traffic
# against the release build; dated report in bench/results/soak-<date>.md.
SOAK_SECONDS ?= 1800
soak: test-deps build
	@SOAK_SECONDS=$(SOAK_SECONDS) /usr/bin/python3 bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf build
