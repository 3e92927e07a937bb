# Menagerie — the two commands of the README:
#   make demo   install missing system packages, build (release), run `menagerie tour`
#   make test   the same setup, then every test
# Also: make build, make bench, make bench-reference, make install PREFIX=/usr/local, make clean,
#       make fuzz (FUZZ_SECONDS=N), make fuzz-replay, make test-sanitized (Docs/reliability.md),
#       make mutate (MUTANTS=glob, MUTANT_IDS=a,b; Docs/testing.md).

SWIFT ?= swift
CONFIG ?= release
PREFIX ?= /usr/local
# Code generated for the CPU it is built on (AVX2 / AVX-512 where present): the elementwise
# kernels vectorise wider. `make PORTABLE=1 …` builds for any CPU of the architecture instead.
ifeq ($(PORTABLE),)
NATIVE_FLAGS = -Xswiftc -target-cpu -Xswiftc native -Xcc -march=native
endif
BUILD_FLAGS = -c $(CONFIG) $(NATIVE_FLAGS)
BIN = $(shell $(SWIFT) build $(BUILD_FLAGS) --show-bin-path 2>/dev/null)
TOUR_OUT ?= menagerie-tour

REFERENCE_VENV ?= .venv-reference
REFERENCE_JSON ?= .build/bench-reference.json

.PHONY: bootstrap build demo test test-sanitized fuzz fuzz-replay mutate bench bench-reference install clean

bootstrap:
	@scripts/bootstrap

build: bootstrap
	$(SWIFT) build $(BUILD_FLAGS)

demo: build
	$(BIN)/menagerie tour --out $(TOUR_OUT)

# The tests drive the real CLI and the real plugin .so files of this build, so build them first.
test: build
	@scripts/bootstrap --test
	$(SWIFT) build $(BUILD_FLAGS) --build-tests
	$(SWIFT) test $(BUILD_FLAGS) --skip-build

# The unit tests under ASan (Swift) and ASan + UBSan (C) in their own scratch folder, and the
# threaded kernels under TSan; debug builds, much slower than `make test` (Docs/reliability.md).
# SANITIZED_FILTER=Suite narrows them. The tests that crash plugins on purpose need the signals left
# to the host (handle_segv=0…) and no Swift backtracer racing ASan.
SANITIZED_FILTER ?=
test-sanitized: bootstrap
	$(SWIFT) build --build-tests -Xswiftc -sanitize=address -Xcc -fsanitize=address,undefined --scratch-path .build-sanitized
	ASAN_OPTIONS=detect_leaks=0:handle_segv=0:handle_sigill=0:handle_abort=0 SWIFT_BACKTRACE=enable=no \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(SWIFT) test --skip-build --scratch-path .build-sanitized $(if $(SANITIZED_FILTER),--filter $(SANITIZED_FILTER))
	$(SWIFT) build --build-tests -Xswiftc -sanitize=thread --scratch-path .build-tsan
	TSAN_OPTIONS=halt_on_error=1 $(SWIFT) test --skip-build --scratch-path .build-tsan --filter TensorsTests

# libFuzzer on every file parser (scripts/fuzz): FUZZ_SECONDS per target (default 5), FUZZ_TARGETS
# to choose; fuzz-replay runs the committed corpora and crash reproducers once.
fuzz: bootstrap
	scripts/fuzz
fuzz-replay: bootstrap
	scripts/fuzz --replay

# The curated mutation check (scripts/mutate, Docs/testing.md): each planted bug of the lists in
# Tests/Mutants, one at a time, incremental rebuild, the listed tests, revert; prints the score. Slow
# (a rebuild per mutant), not in CI. MUTANTS='Tests/Mutants/sst.tsv' picks lists, MUTANT_IDS='ddim-*'
# picks mutants.
MUTANTS ?= Tests/Mutants/*.tsv
MUTANT_IDS ?=
mutate: bootstrap
	@scripts/bootstrap --test
	scripts/mutate --build-flags "$(BUILD_FLAGS)" $(if $(MUTANT_IDS),--ids '$(MUTANT_IDS)') '$(MUTANTS)'

# With a PyTorch reference on file (make bench-reference), the table gets REFERENCE and RATIO columns.
bench: build
	$(BIN)/menagerie bench $(if $(wildcard $(REFERENCE_JSON)),--reference $(REFERENCE_JSON))

# Creates a venv with torch, timm, open_clip and sam2 from PyPI (several GB: PyPI's torch wheel brings
# its CUDA libraries, unused here), times the same workloads in PyTorch, then runs `make bench`.
bench-reference: build
	test -x $(REFERENCE_VENV)/bin/python || python3 -m venv $(REFERENCE_VENV)
	$(REFERENCE_VENV)/bin/python -c "import torch, timm, open_clip, pytorch_grad_cam, transformers, pandas, sam2, diffusers" 2>/dev/null || $(REFERENCE_VENV)/bin/pip install --quiet torch timm open_clip_torch grad-cam transformers pandas sam2 "diffusers==0.42.*"
	$(REFERENCE_VENV)/bin/python scripts/bench-reference.py --threads $${MENAGERIE_THREADS:-$$(nproc)} > $(REFERENCE_JSON).tmp
	mv $(REFERENCE_JSON).tmp $(REFERENCE_JSON)
	$(BIN)/menagerie bench --reference $(REFERENCE_JSON)

install: build
	scripts/install "$(PREFIX)" "$(BIN)"

clean:
	rm -rf .build .build-fuzz .build-sanitized .build-tsan $(TOUR_OUT)
