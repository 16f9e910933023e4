# Continuum's front door. Every target works from a fresh clone on a fresh machine: what is
# missing (Debian packages, the local broker and registry) is installed first.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Pinned tools for the local stack, each installed into its own versioned root so that a
# different version elsewhere on PATH is never picked up by accident. The versions live in the
# poms under tools/ (Maven resolves them from Maven Central) and in tools/python/requirements.txt.
TOOLS_ROOT       ?= $(HOME)/.cache/continuum/tools
pom_prop          = $(shell sed -n 's:.*<$(1)>\(.*\)</$(1)>.*:\1:p' $(2))
KAFKA_VERSION    := $(call pom_prop,kafka.version,tools/kafka/pom.xml)
APICURIO_VERSION := $(call pom_prop,apicurio.version,tools/apicurio/pom.xml)
PY_REQS_HASH     := $(shell sha256sum tools/python/requirements.txt | cut -c1-12)
export KAFKA_HOME    := $(TOOLS_ROOT)/kafka-$(KAFKA_VERSION)
export APICURIO_HOME := $(TOOLS_ROOT)/apicurio-registry-$(APICURIO_VERSION)
PY_HOME              := $(TOOLS_ROOT)/python-$(PY_REQS_HASH)
# scripts/stack.sh starts exactly these (and records them in .stack/env).
export STACK_PYTHON  := $(PY_HOME)/bin/python
MVN := mvn -B -q -Dstyle.color=never

# Debian packages the build and the stack need: the MariaDB server and client, and the headers
# rdkafka (bundled librdkafka) and mysql_async link against.
APT_PACKAGES := mariadb-server mariadb-client libssl-dev zlib1g-dev pkg-config curl build-essential \
                python3 python3-venv iproute2 maven openjdk-17-jre-headless
STACK := scripts/stack.sh

# Where the stack keeps everything (data, logs, PID files, env); scripts/stack.sh uses the same.
export STACK_DIR ?= $(CURDIR)/.stack
# Every cargo command uses the dev profile, so nothing is built twice.
WITH_ENV := source $(STACK_DIR)/env &&

PIPELINE := scripts/pipeline.sh

.PHONY: help deps tools build up down clean status run stop demo soak workload drill bench test test-unit test-suites peek fmt lint

help:
	@echo "make demo    start everything, replicate a sample workload SF -> EU, show the result"
	@echo "make up      start the local two-site stack (.stack/), waiting until healthy"
	@echo "make down    stop everything 'make up' started"
	@echo "make clean   stop, then delete .stack/"
	@echo "make status  show what is running"
	@echo "make run     start the four pipeline processes (both producers, both 'consumer run')"
	@echo "make stop    stop them"
	@echo "make soak CYCLES=100   the chaos suite, long"
	@echo "make drill   failover to EU and failback to SF, scripted and timed (docs/failover.md)"
	@echo "make bench [BENCH_ROWS=1000000]   Continuum against native replication (docs/bench.md)"
	@echo "make workload ARGS=\"--duration 30s --rate 50\"   write a checkable workload to SF"
	@echo "make test    bring the stack up, then run every test CI runs"
	@echo "make build   build the workspace"
	@echo "make peek TOPIC=sf.cdc [SITE=sf|eu] [FROM=offset|-n] [COUNT=20]"
	@echo "            print a topic's records, decoded (COUNT=0: to the end)"

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

# Apache Kafka: the broker's jars, from the pom. Written to a temporary directory and moved into
# place, so an interrupted download never leaves a half-installed root behind.
$(KAFKA_HOME)/.installed: tools/kafka/pom.xml
	@echo "installing Apache Kafka $(KAFKA_VERSION) into $(KAFKA_HOME) (Maven Central)"
	rm -rf $(KAFKA_HOME) $(KAFKA_HOME).tmp
	$(MVN) -f tools/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=$(KAFKA_HOME).tmp/libs
	touch $(KAFKA_HOME).tmp/.installed && mv $(KAFKA_HOME).tmp $(KAFKA_HOME)

# Apicurio Registry: its self-contained distribution (quarkus-run.jar and its lib/).
$(APICURIO_HOME)/.installed: tools/apicurio/pom.xml
	@echo "installing Apicurio Registry $(APICURIO_VERSION) into $(APICURIO_HOME) (Maven Central)"
	rm -rf $(APICURIO_HOME) $(APICURIO_HOME).tmp
	$(MVN) -f tools/apicurio/pom.xml dependency:copy-dependencies -DoutputDirectory=$(APICURIO_HOME).tmp/dist
	tar -xzf $(APICURIO_HOME).tmp/dist/apicurio-registry-app-$(APICURIO_VERSION)-all.tar.gz -C $(APICURIO_HOME).tmp
	rm -rf $(APICURIO_HOME).tmp/dist
	test -f $(APICURIO_HOME).tmp/quarkus-run.jar
	touch $(APICURIO_HOME).tmp/.installed && mv $(APICURIO_HOME).tmp $(APICURIO_HOME)

# The stack's Python with a stock Kafka client (confluent-kafka), in a venv of its own (made in
# place: a venv cannot be moved; the marker file is written last).
$(PY_HOME)/.installed: tools/python/requirements.txt
	@echo "installing the stack's Python packages into $(PY_HOME) (PyPI)"
	rm -rf $(PY_HOME)
	python3 -m venv $(PY_HOME)
	$(PY_HOME)/bin/python -m pip install -q --disable-pip-version-check -r tools/python/requirements.txt
	touch $@

tools: deps $(KAFKA_HOME)/.installed $(APICURIO_HOME)/.installed $(PY_HOME)/.installed

build: deps
	cargo build --workspace --bins

up: tools
	@$(STACK) up

down:
	@$(STACK) down

clean:
	@$(STACK) clean

status:
	@$(STACK) status
	@if [[ -f $(STACK_DIR)/env ]]; then $(PIPELINE) status; fi

# The pipeline of the local stack: SF producer, EU consumer run, EU producer, SF consumer run.
run: up build
	@$(PIPELINE) start

stop:
	@$(PIPELINE) stop

# The main job: bring up both sites, run the pipeline, replicate a sample workload SF -> EU,
# and show the result and the lag. Leaves everything running.
demo: run
	@scripts/demo.sh

# The chaos suite, long: make soak CYCLES=100
CYCLES ?= 100
soak: up build
	$(WITH_ENV) CHAOS_CYCLES=$(CYCLES) cargo test -p continuum-tests --test e2e chaos -- --test-threads=1 --nocapture

# A scripted failover and failback on the local stack (docs/failover.md). Uses its own databases
# and topics; restarts the pipeline processes of `make run`.
DRILL_SF_SECONDS ?= 20
DRILL_EU_SECONDS ?= 15
drill: up build
	DRILL_SF_SECONDS=$(DRILL_SF_SECONDS) DRILL_EU_SECONDS=$(DRILL_EU_SECONDS) scripts/drill.sh

# Continuum against native MariaDB replication, same machine, same run (docs/bench.md). Release
# binaries unless BENCH_PROFILE=dev.
BENCH_PROFILE ?= release
# make run's pipeline would share the machine with the contestants: the bench stops whichever of
# its processes run, and starts them again afterwards, whatever the outcome.
bench: up
	cargo build --workspace --bins $(if $(filter release,$(BENCH_PROFILE)),--release)
	@running=$$(scripts/pipeline.sh status | awk '$$2 == "running" {print $$1}' | xargs); \
	if [[ -n $$running ]]; then \
	  echo "[bench] stopping make run's pipeline ($$running) for the bench; it starts again afterwards"; \
	  scripts/pipeline.sh stop $$running; \
	fi; \
	rc=0; $(WITH_ENV) BENCH_PROFILE=$(BENCH_PROFILE) target/$(if $(filter release,$(BENCH_PROFILE)),release,debug)/continuum-bench || rc=$$?; \
	if [[ -n $$running ]]; then echo "[bench] starting make run's pipeline again ($$running)"; scripts/pipeline.sh start $$running; fi; \
	exit $$rc

# The workload generator against the SF MariaDB, e.g. make workload ARGS="--duration 30s --rate 50"
workload: up
	@$(WITH_ENV) cargo run -q -p continuum-tests --bin workload -- $(ARGS)

# Unit tests first (the schemas and common crates' integration tests only need the registry),
# then the suites against the stack.
test: up
	$(MAKE) --no-print-directory test-unit test-suites

test-unit:
	$(WITH_ENV) cargo test --workspace --lib --bins
	$(WITH_ENV) cargo test -p continuum-schemas -p continuum-common
	$(WITH_ENV) cargo test -p continuum-consumer --test metrics_contract

# One line per suite. Suites that restart servers (stack) come last and run one test at a time,
# so they never pull a server out from under another test.
test-suites:
	cargo build --workspace --bins
	$(WITH_ENV) cargo test -p continuum-producer --test pipeline
	$(WITH_ENV) cargo test -p continuum-producer --test incremental
	$(WITH_ENV) cargo test -p continuum-tests --test workload
	$(WITH_ENV) cargo test -p continuum-tests --test docker_config
	$(WITH_ENV) cargo test -p continuum-consumer --test mirror
	$(WITH_ENV) cargo test -p continuum-consumer --test apply
	$(WITH_ENV) cargo test -p continuum-consumer --test run
	$(WITH_ENV) cargo test -p continuum-consumer --test verify
	$(WITH_ENV) cargo test -p continuum-consumer --test orphans
	$(WITH_ENV) cargo test -p continuum-tests --test secrets
	$(WITH_ENV) cargo test -p continuum-tests --test tls -- --test-threads=1
	$(WITH_ENV) cargo test -p continuum-producer --test preflight -- --test-threads=1
	$(WITH_ENV) cargo test -p continuum-consumer --test mirror_disruptive -- --test-threads=1
	$(WITH_ENV) cargo test -p continuum-consumer --test crash -- --test-threads=1
	$(WITH_ENV) cargo test -p continuum-tests --test e2e -- --test-threads=1 --nocapture
	$(WITH_ENV) cargo test -p continuum-tests --test operations -- --test-threads=1
	DRILL_SF_SECONDS=10 DRILL_EU_SECONDS=8 scripts/drill.sh
	$(MAKE) --no-print-directory bench BENCH_ROWS=20000 BENCH_PROFILE=dev BENCH_STEADY_SECS=5 BENCH_OUT=$(STACK_DIR)/bench/results
	$(WITH_ENV) cargo test -p continuum-tests --test stack -- --test-threads=1

# Look inside a topic of the running stack, decoded with the site's registry (README.md, "Looking inside a topic").
peek:
	@[[ -n "$(TOPIC)" ]] || { echo "usage: make peek TOPIC=sf.cdc [SITE=sf|eu] [FROM=offset|-n] [COUNT=20]" >&2; exit 2; }
	@[[ -f $(STACK_DIR)/env ]] || { echo "no $(STACK_DIR)/env: run 'make up' first" >&2; exit 1; }
	@$(WITH_ENV) cargo run -q -p continuum-tests --bin peek -- --topic '$(TOPIC)' --site '$(or $(SITE),sf)' \
	  $(if $(FROM),--from '$(FROM)') --count '$(or $(COUNT),20)'

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
