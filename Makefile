# flbq — see README.md. Every target works on a fresh machine with Go 1.26.
GO      ?= go
PKGS    ?= ./...
BENCH   ?= .
BIN     := bin/flbq

.PHONY: all build test test-vnni vet check-tidy generate check-generated bench fuzz race demo clean

all: build

build:
	$(GO) build -o $(BIN) ./tools/flbq

# The README's test command: static checks, generated code up to date, tests.
test: vet check-tidy check-generated
	$(GO) test -count=1 $(PKGS)

vet:
	$(GO) vet $(PKGS)

# The packages whose code dispatches on the CPU tier, run with the AVX-512
# VNNI tier required inside the Bochs emulator (for machines without
# AVX-512; tools/vnni/README.md lists the Debian packages it needs).
VNNI_PKGS ?= ./runtime/kernels ./runtime/nn ./runtime/qmodel ./runtime/model
test-vnni:
	tools/vnni/test-vnni.sh $(VNNI_PKGS)

# go.mod and go.sum list exactly what the code imports.
check-tidy:
	@$(GO) mod tidy -diff || (echo "go.mod is not tidy: run 'go mod tidy' and commit" >&2; exit 1)

# Regenerate every generated file (kernels, model packages).
generate:
	$(GO) generate $(PKGS)

# Generated code is committed; regenerating must change nothing.
check-generated: generate
	@git diff --exit-code --stat -- generated/ || \
	  (echo "generated code is stale: run 'make generate' and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain --untracked-files=all -- generated/)" || \
	  (git status --short -- generated/; echo "untracked generated files: run 'make generate' and commit" >&2; exit 1)

race:
	$(GO) test -race -count=1 ./runtime/...

bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem $(PKGS)

# Short fuzzing pass over every fuzz target (FUZZTIME per target).
FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# The main job on the bundled default model (see README).
demo: build
	$(BIN) demo

clean:
	rm -rf bin
