# Menagerie — the two commands of the README:
#   make demo   install missing system packages, build (release), run `menagerie tour`
#   make test   the same setup, then every test
# Also: make build, make bench, make install PREFIX=/usr/local, make clean.

SWIFT ?= swift
CONFIG ?= release
PREFIX ?= /usr/local
BUILD_FLAGS = -c $(CONFIG)
BIN = $(shell $(SWIFT) build $(BUILD_FLAGS) --show-bin-path 2>/dev/null)
TOUR_OUT ?= menagerie-tour

.PHONY: bootstrap build demo test bench install clean

bootstrap:
	@scripts/bootstrap

build: bootstrap
	$(SWIFT) build $(BUILD_FLAGS)

demo: build
	$(BIN)/menagerie tour --out $(TOUR_OUT)

# The tests drive the real CLI and the real plugin .so files of this build, so build them first.
test: build
	$(SWIFT) build $(BUILD_FLAGS) --build-tests
	$(SWIFT) test $(BUILD_FLAGS) --skip-build

bench: build
	$(BIN)/menagerie bench

install: build
	install -d $(PREFIX)/bin $(PREFIX)/lib/menagerie/plugins $(PREFIX)/share/menagerie/templates $(PREFIX)/share/menagerie/sdk/Sources
	install -m 755 $(BIN)/menagerie $(PREFIX)/bin/menagerie
	install -m 644 $(BIN)/*.so $(PREFIX)/lib/menagerie/plugins/
	cp -R Templates/swift Templates/c $(PREFIX)/share/menagerie/templates/
	install -m 644 Templates/sdk/Package.swift $(PREFIX)/share/menagerie/sdk/Package.swift
	for d in CMenagerie COpenBLAS CPNG CTIFF Tensors Formats Imaging NN MenagerieKit; do cp -R Sources/$$d $(PREFIX)/share/menagerie/sdk/Sources/; done
	chmod -R go-w $(PREFIX)/lib/menagerie $(PREFIX)/share/menagerie
	@echo "installed menagerie into $(PREFIX)/bin; plugins in $(PREFIX)/lib/menagerie/plugins; SDK in $(PREFIX)/share/menagerie/sdk"

clean:
	rm -rf .build $(TOUR_OUT)
