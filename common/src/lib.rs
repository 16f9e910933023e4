//! # continuum-common
//!
//! Runtime pieces both binaries share: the site configuration (file, environment, flags),
//! secrets that never print, Kafka and MariaDB client settings, and observability (logs,
//! `/metrics`, `/health`).

pub mod binlog;
pub mod config;
pub mod db;
pub mod ddl;
pub mod filter;
pub mod kafka;
pub mod lock;
pub mod memory;
pub mod observe;
pub mod redact;
pub mod request;
pub mod secret;
pub mod supervise;
pub mod writer;

pub use config::{ConfigError, SiteConfig};
pub use secret::Secret;
