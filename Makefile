# troupe — top-level driver. `make demo` and `make test` work on a fresh Debian 12 machine:
# they install what is missing (scripts/bootstrap), configure, build and run.
#
#   make demo        build and run the main job
#   make test        build and run the whole test suite (ctest)
#   make build       configure + build only (build/bin/)
#   make asan        the suite under AddressSanitizer + UBSan (build-asan/)
#   make tsan        the suite under ThreadSanitizer (build-tsan/)
#   make bench       build and run troupe-bench all
#   make lint        cppcheck and clang-tidy's static analyzer on the product's code (scripts/lint)
#   make fuzz        build the libFuzzer harnesses (build-fuzz/) and run each FUZZ_SECONDS (60)
#   make docs        the API reference from the public headers (Doxygen): $(BUILD)/docs/html/
#   make valgrind    the suite under Valgrind's memcheck, once, by hand (scripts/valgrind; slow)
#   make clean       remove build directories

BUILD ?= build
CC ?= cc
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")
CTEST_FLAGS ?= --output-on-failure -j $(JOBS) --timeout 600

.PHONY: all bootstrap build demo test asan tsan bench fuzz valgrind lint chaos-short docs clean

all: build

bootstrap:
	@bash scripts/bootstrap

# Re-run configure when the generator or the build dir is missing.
$(BUILD)/CMakeCache.txt: | bootstrap
	cmake -S . -B $(BUILD) $(if $(GENERATOR),-G Ninja) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
	    -DTROUPE_WERROR=ON $(CMAKE_ARGS)

build: bootstrap $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	scripts/demo

test: build
	cd $(BUILD) && ctest $(CTEST_FLAGS)

asan: bootstrap
	$(MAKE) test BUILD=build-asan CMAKE_ARGS="-DTROUPE_SANITIZE=address -DCMAKE_C_COMPILER=clang"

tsan: bootstrap
	$(MAKE) test BUILD=build-tsan CMAKE_ARGS="-DTROUPE_SANITIZE=thread -DCMAKE_C_COMPILER=clang"

bench: build
	$(BUILD)/bin/troupe-bench all

lint: build
	scripts/lint

valgrind: build
	BUILD=$(BUILD) scripts/valgrind

# The chaos runner, short and seeded (docs/resilience.md): each app on three nodes, 30 s of load
# with up to 3 faults, every invariant checked (about a minute and a half each).
CHAOS_SEED ?= 7
chaos-short: build
	scripts/chaos --app flashsale --seed $(CHAOS_SEED) --duration 30 --faults 3 --rate 40
	scripts/chaos --app social --seed $(CHAOS_SEED) --duration 30 --faults 3 --rate 40

FUZZ_SECONDS ?= 60
fuzz: bootstrap
	cmake -S . -B build-fuzz $(if $(GENERATOR),-G Ninja) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    -DCMAKE_C_COMPILER=clang -DTROUPE_SANITIZE=address -DTROUPE_FUZZ=ON -DTROUPE_WERROR=ON \
	    -DTROUPE_BUILD_APPS=ON -DTROUPE_BUILD_TESTS=OFF -DTROUPE_BUILD_TOOLS=OFF -DTROUPE_BUILD_BENCH=OFF
	cmake --build build-fuzz -j $(JOBS) --target fuzzers
	scripts/fuzz $(FUZZ_SECONDS)

# The API reference: Doxygen over runtime/include/ (docs/Doxyfile), into $(BUILD)/docs/html/. Any
# warning (an undocumented public function, type or member; a broken reference) fails it.
TROUPE_VERSION := $(shell sed -n -E 's/^\#define TR_VERSION_(MAJOR|MINOR|PATCH) ([0-9]+).*/\2/p' \
    runtime/include/troupe.h | paste -sd. -)
docs: bootstrap
	rm -rf $(BUILD)/docs && mkdir -p $(BUILD)/docs
	TROUPE_DOCS_OUT=$(BUILD)/docs TROUPE_VERSION=$(TROUPE_VERSION) doxygen docs/Doxyfile
	@echo "docs: $(BUILD)/docs/html/index.html (troupe $(TROUPE_VERSION), no warnings)"

clean:
	rm -rf build build-asan build-tsan build-fuzz
