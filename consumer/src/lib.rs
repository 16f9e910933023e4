//! # continuum-consumer
//!
//! The consumer side of Continuum: `apply` (changelog → MariaDB replica, transaction-consistent,
//! idempotent, checkpointed with the data), and the operator verbs `replay` and `status`.
//! `docs/apply.md` describes apply for operators; each module's header states what it does and
//! what it guarantees.
//!
//! | module | stage |
//! |---|---|
//! | [`settings`] | what to apply, from where, to where (from the site config) |
//! | [`reader`] | streams and decodes the changelog |
//! | [`topic`] | random access to the topic: watermarks, offsets by time, searches |
//! | [`apply`] | the apply loop: transactions, batches, GTID skip, snapshots, DDL |
//! | [`writer`] | the MariaDB side: session, chunked statements, commit with checkpoint |
//! | [`sql`] | literals and row statements |
//! | [`target`] | the replica's tables, matched to record shapes by column name |
//! | [`checkpoint`] | the checkpoint row |
//! | [`lock`] | single apply per topic |
//! | [`replay`], [`status`], [`verify`], [`orphans`], [`promote`] | operator verbs |
//! | [`report`] | how the verbs print their reports (text, or `--json`) |
//! | [`metrics`] | Prometheus metrics (apply and mirror): names, units, descriptions |

pub mod apply;
pub mod checkpoint;
pub mod error;
pub mod lock;
pub mod metrics;
pub mod mirror;
pub mod orphans;
pub mod promote;
pub mod reader;
pub mod replay;
pub mod report;
pub mod rewind;
pub mod run;
pub mod settings;
pub mod sql;
pub mod status;
pub mod target;
pub mod topic;
pub mod verify;
pub mod writer;
