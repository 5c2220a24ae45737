# The README's commands are these targets. Everything they need is
# installed by the targets themselves (Go modules, golangci-lint into ./bin).

GO            ?= go
BIN           := $(CURDIR)/bin
VERSION       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS       := -s -w -X main.version=$(VERSION)
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(BIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
ACTIONLINT_VERSION := v1.7.12
ACTIONLINT := $(BIN)/actionlint-$(ACTIONLINT_VERSION)
# Packages whose tests compare with golden files under testdata/.
GOLDEN_PKGS   := ./cmd/... ./plan/... ./profiles/... ./provision/prereq/... ./provision/k3s/... ./provision/kubeconfig/... ./provision/k3d/...

.PHONY: all build test test-deps vet lint fmt fuzz bench golden testbed e2e e2e-bench ci clean

all: build test

## build: the labctl binary in ./bin
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/labctl ./cmd/labctl

## test: vet, then every unit test (golden files, fuzz seed corpus, engine);
## the SSH tests run a real OpenSSH sshd, installed here if missing
test: vet test-deps
	$(GO) test -count=1 ./...

# test-deps installs what the unit tests run as real peers (OpenSSH's
# sshd and ssh-keygen; git for the Flux tests) with apt as root, or says
# what to install.
test-deps:
	@missing=""; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v ssh-keygen >/dev/null || missing="$$missing openssh-client"; \
	command -v git >/dev/null || missing="$$missing git"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (the unit tests run them as real peers)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "make test needs$$missing: install them (Debian: apt-get install$$missing) and run it again" >&2; exit 1; \
	  fi; \
	fi

vet:
	$(GO) vet ./...

## lint: gofmt, golangci-lint and actionlint on the users' workflows
## (both installed into ./bin on first use)
lint: $(GOLANGCI_LINT) $(ACTIONLINT)
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GOLANGCI_LINT) run ./...
	$(ACTIONLINT) .github/workflows/*.yaml

$(ACTIONLINT):
	mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)
	mv $(BIN)/actionlint $@

$(GOLANGCI_LINT):
	mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(BIN)/golangci-lint $@

fmt:
	gofmt -w .

## fuzz: explore the profile loader beyond its seed corpus (FUZZTIME=60s)
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./profiles -run '^$$' -fuzz FuzzLoad -fuzztime $(FUZZTIME) -fuzzminimizetime 5s

## bench: engine wall time / critical path and per-step overhead
bench:
	$(GO) test ./plan -run '^$$' -bench . -benchtime 20x

## golden: rewrite golden files after an intended output change
golden:
	$(GO) test $(GOLDEN_PKGS) -count=1 -update

## testbed: the offline test bed's self-test (own dockerd, debootstrapped
## node image, systemd+sshd nodes); needs root, installs docker.io and
## debootstrap when missing, caches in ~/.cache/labctl/testbed
E2E_TIMEOUT ?= 60m
testbed:
	$(GO) test -tags e2e -count=1 -v -timeout $(E2E_TIMEOUT) ./e2e/testbed/

## e2e: every Docker-based end-to-end test (the bed's self-test included);
## the k3d tests in real-images mode, as the users' workflow runs them,
## pulling from the bed's own registry (LABCTL_E2E_REAL_IMAGES=0: the
## stand-in images are used where they were built, without a pull); the
## production scenarios drive a real sshd too, so test-deps runs first
e2e: export LABCTL_E2E_REAL_IMAGES ?= 1
e2e: test-deps
	$(GO) test -tags e2e -count=1 -p 1 -v -timeout $(E2E_TIMEOUT) $(if $(E2E_RUN),-run '$(E2E_RUN)') ./e2e/...

## e2e-bench: e2e with the speed comparisons measured too (LABCTL_E2E_BENCH=1):
## labctl create vs a raw k3d create, the Flux chain with reconcile requests off/on
e2e-bench:
	LABCTL_E2E_BENCH=1 $(MAKE) e2e E2E_RUN='$(or $(E2E_RUN),TestCreateStagingOnARemoteDockerHostOverSSH|TestCreateLocal)'

## ci: what .ci/run runs on a clean clone
ci: build lint test e2e

clean:
	rm -rf $(BIN)
