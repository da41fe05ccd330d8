# moge: `make demo` runs the main job on the shipped default model; `make test` builds and passes
# the tests (release build, then the unit tests again under ASan+UBSan; tests/lsan.supp silences
# Open MPI's own allocations at exit, nothing else). Both install missing Debian packages first
# through scripts/install-deps.
JOBS ?= $(shell nproc)
MOGE := build/release/tools/moge/moge

.PHONY: deps build build-asan test test-release test-asan demo bench bench-train clean

deps:
	@scripts/install-deps

build: deps
	@cmake --preset release > /dev/null
	@cmake --build --preset release -j $(JOBS)

build-asan: deps
	@cmake --preset asan > /dev/null
	@cmake --build --preset asan -j $(JOBS)

# ctest -j runs several test processes at once, each with its own OpenMP team; libgomp's default
# spin-waiting then has idle workers steal the cores the busy ones need (the ASan gradient checks
# ran 100x slower under ctest -j2 than alone). Passive waiting costs the tests nothing.
test-release: export OMP_WAIT_POLICY = passive
test-release: build
	cd build/release && ctest --output-on-failure -j $(JOBS)

test-asan: export OMP_WAIT_POLICY = passive
test-asan: build-asan
	cd build/asan && ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	  UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

test: test-release test-asan

demo: build
	@scripts/demo $(MOGE)

bench: build
	build/release/bench/moe_layer_bench

# moge train against PyTorch 1.13 on the same model and threads (bench/train_vs_torch.sh).
bench-train: build
	bench/train_vs_torch.sh --moge $(MOGE)

clean:
	rm -rf build
