# A thin wrapper over CMake: the two commands a user needs, plus benchmarks.
#   make run    install what is missing, build, train on the default task
#   make test   install what is missing, build (plain and sanitized), run every test
#   make fuzz   install clang, build the libFuzzer targets (build-fuzz/), run each FUZZ_SECONDS
.PHONY: all deps build build-asan run test test-plain test-asan bench bench-nn bench-env bench-replay \
        bench-learner bench-actor bench-learning mutate-vmbpo fuzz fuzz-corpus clean docker docker-base

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
CTEST_ARGS ?=

all: build

deps:
	@deploy/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEMBER_WERROR=ON >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DEMBER_WERROR=ON -DEMBER_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

run: build
	@if [ -x $(BUILD)/app/ember ]; then exec $(BUILD)/app/ember train --task pendulum; \
	 else echo "make run: no trainer exists yet (the training loop is not built); nothing to run" >&2; exit 1; fi

# Both suites run even when the first fails; the target fails if either did.
test: build build-asan
	@rc=0; \
	echo "== tests (RelWithDebInfo, -Werror) =="; \
	(cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)) || rc=1; \
	echo "== tests (AddressSanitizer + UndefinedBehaviorSanitizer) =="; \
	(cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 CK_TIMEOUT_MULTIPLIER=4 \
	   ctest --output-on-failure -j $(JOBS) -LE no-asan $(CTEST_ARGS)) || rc=1; \
	if [ $$rc -eq 0 ]; then echo "make test: all suites passed"; else echo "make test: FAILED" >&2; fi; \
	exit $$rc

test-plain: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

test-asan: build-asan
	@cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS) -LE no-asan $(CTEST_ARGS)

# Benchmarks print `BENCH <name> <value> <unit>` lines; they assert nothing about time.
bench: bench-nn bench-env bench-replay bench-learner bench-actor

bench-nn bench-env bench-replay bench-actor: build
	@bench/run.sh $(BUILD) $(@:bench-%=%)

bench-learner: build
	@deploy/install-deps.sh --bench
	@bench/run.sh $(BUILD) learner

bench-learning: build
	@bench/run.sh $(BUILD) learning

# Mutation testing of VMBPO's losses (tests/mutate_vmbpo.sh): each term of eqs. 19, 21, 23, 24, 25
# and 27 flipped or dropped in a copy of the tree, one at a time; the VMBPO unit suites must fail on
# every mutant. Not part of `make test`: it rebuilds and reruns the suites once per mutant, at -j1.
mutate-vmbpo: deps
	@JOBS=1 tests/mutate_vmbpo.sh

# Fuzzing (docs/reliability.md): every target for FUZZ_SECONDS, one at a time, printing
# `BENCH fuzz_<target>_execs` and `_crashes`; a crash is minimised into tests/fuzz/regressions/, which
# `make test` replays. FUZZ_TARGETS="params config" runs only those.
fuzz:
	@deploy/install-deps.sh --fuzz
	@tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Regenerates the committed seed corpus (tests/fuzz/corpus/) with ember's own encoders and writers.
fuzz-corpus: build
	@cmake --build $(BUILD) -j $(JOBS) --target fuzz_make_corpus
	@rm -rf tests/fuzz/corpus && $(BUILD)/tests/fuzz_make_corpus tests/fuzz/corpus >/dev/null
	@echo "tests/fuzz/corpus regenerated"

# Container image: seeds the base image from Debian's archive where no registry is reachable.
docker-base:
	@deploy/seed-base-image.sh

docker: docker-base
	docker build -f deploy/Dockerfile -t ember:latest .

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
