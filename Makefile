# Continuum's front door. Every target works from a fresh clone on a fresh machine: what is
# missing (Debian packages, the local broker and registry) is installed first.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Pinned tools for the local stack, each installed into its own versioned root so that a
# different version elsewhere on PATH is never picked up by accident.
TANSU_VERSION  := 0.6.0
RIVVEN_VERSION := 0.0.22
TOOLS_ROOT     ?= $(HOME)/.cache/continuum/tools
TANSU_ROOT     := $(TOOLS_ROOT)/tansu-$(TANSU_VERSION)
RIVVEN_ROOT    := $(TOOLS_ROOT)/rivven-schema-$(RIVVEN_VERSION)
TANSU          := $(TANSU_ROOT)/bin/tansu
RIVVEN         := $(RIVVEN_ROOT)/bin/rivven-schema
export PATH    := $(TANSU_ROOT)/bin:$(RIVVEN_ROOT)/bin:$(PATH)

# Debian packages the build and the stack need: the MariaDB server and client, and the headers
# rdkafka (bundled librdkafka) and mysql_async link against.
APT_PACKAGES := mariadb-server mariadb-client libssl-dev zlib1g-dev pkg-config curl build-essential
STACK := scripts/stack.sh

.PHONY: help deps tools build up down clean status test test-unit test-stack fmt lint

help:
	@echo "make up      start the local two-site stack (.stack/), waiting until healthy"
	@echo "make down    stop everything 'make up' started"
	@echo "make clean   stop, then delete .stack/"
	@echo "make status  show what is running"
	@echo "make test    bring the stack up, then run every test CI runs"
	@echo "make build   build the workspace"

# Installs only what is missing; a no-op on a machine that has everything.
deps:
	@missing=(); for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing+=($$p); \
	done; \
	if (( $${#missing[@]} )); then \
	  echo "installing Debian packages: $${missing[*]}"; \
	  sudo=""; [[ $$(id -u) -eq 0 ]] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq "$${missing[@]}"; \
	fi

$(TANSU):
	@echo "installing tansu $(TANSU_VERSION) into $(TANSU_ROOT) (about 12 minutes on 2 cores)"
	cargo install tansu --locked --version $(TANSU_VERSION) --features dynostore,libsql,postgres --root $(TANSU_ROOT)

$(RIVVEN):
	@echo "installing rivven-schema $(RIVVEN_VERSION) into $(RIVVEN_ROOT)"
	cargo install rivven-schema --locked --version $(RIVVEN_VERSION) --root $(RIVVEN_ROOT)

tools: deps $(TANSU) $(RIVVEN)

build: deps
	cargo build --workspace --release

up: tools
	@$(STACK) up

down:
	@$(STACK) down

clean:
	@$(STACK) clean

status:
	@$(STACK) status

# Unit tests need no servers; the suites need the stack. Suites that restart servers run one
# at a time, after the others, so they never pull a server out from under another test.
test: up
	cargo build --workspace --release --all-targets
	$(MAKE) --no-print-directory test-unit test-stack

test-unit:
	cargo test --workspace --release --lib --bins

test-stack:
	source .stack/env && cargo test --release -p continuum-tests --test stack -- --test-threads=1

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
