//! The library part of `continuum-producer`: only what other crates need to see. Today that is
//! [`metrics`], the producer's metric names and their descriptions, so that the contract test
//! (`consumer/tests/metrics_contract.rs`) can check `docs/metrics.md` and the Grafana dashboard
//! against every component's list. The pipeline itself lives in the binary (`src/main.rs`).

pub mod metrics;
