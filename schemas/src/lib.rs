//! # continuum-schemas
//!
//! The contract between `continuum-producer` and `continuum-consumer`: the change-event model,
//! the lossless mapping from MariaDB 10.11 column types to Avro, the envelope, and the codec
//! (Confluent wire format against a schema registry).
//!
//! ## MariaDB → Avro
//!
//! Every row of this table is proven by a round trip through a real registry in
//! `tests/roundtrip.rs` (min, max, NULL and the edge values named here).
//!
//! | MariaDB type | Avro type | Value carried |
//! |---|---|---|
//! | `TINYINT`, `SMALLINT`, `MEDIUMINT` (signed or unsigned), `INT` | `int` | the integer |
//! | `INT UNSIGNED`, `BIGINT` | `long` | the integer |
//! | `BIGINT UNSIGNED` | `bytes`, logical `decimal(20,0)` | the integer, up to 18446744073709551615 |
//! | `DECIMAL(p,s)` (up to 65,30) | `bytes`, logical `decimal(p,s)` | the exact unscaled value |
//! | `FLOAT` | `float` | IEEE 754 single |
//! | `DOUBLE` | `double` | IEEE 754 double |
//! | `BIT(n)` | `bytes` | ⌈n/8⌉ bytes, big-endian |
//! | `BOOL` / `BOOLEAN` | `int` | an alias of `TINYINT(1)`: 0, 1, or any other `TINYINT` (the binlog cannot tell them apart) |
//! | `YEAR` | `int` | the year; `0` for `0000` |
//! | `DATE` | union `int` logical `date` \| `string` | days since 1970-01-01; zero dates (`0000-00-00`) and dates with zero parts (`2024-00-15`) take the `string` branch, as `YYYY-MM-DD` text |
//! | `DATETIME(0..6)` | union `long` logical `local-timestamp-micros` \| `string` | microseconds since 1970-01-01 00:00:00 (no zone); zero or partly zero values take the `string` branch as `YYYY-MM-DD HH:MM:SS.ffffff` |
//! | `TIMESTAMP(0..6)` | `long` logical `timestamp-micros` | microseconds since the epoch, UTC; MariaDB's zero timestamp is `0` (the epoch itself is outside `TIMESTAMP`'s range) |
//! | `TIME(0..6)` | `long` | signed microseconds, so negative values and values past 24 h (±838:59:59.999999) survive; not the `time-micros` logical type, which is limited to one day |
//! | `CHAR`, `VARCHAR`, `TINYTEXT` … `LONGTEXT` (utf8mb4, utf8mb3, ascii) | `string` | the text, 4-byte characters included |
//! | `JSON` | `string` | an alias of `LONGTEXT`: the document text as stored |
//! | `ENUM` | `string` | the member's text (the empty string for MariaDB's error member) |
//! | `SET` | `string` | members comma-separated, as MariaDB prints them |
//! | `BINARY(n)` | `bytes` | exactly n bytes, zero-padded as MariaDB stores them |
//! | `INET4`, `INET6`, `UUID` | `bytes` | 4, 16 and 16 bytes in network / RFC 4122 order: the binlog shows these as `BINARY(n)` |
//! | `VARBINARY`, `TINYBLOB` … `LONGBLOB` | `bytes` | the bytes, valid UTF-8 or not |
//! | `GEOMETRY` and its subtypes | `bytes` | MariaDB's storage format: 4-byte little-endian SRID, then WKB |
//! | any nullable column | union `null` \| the above, default `null` | |
//!
//! Types outside this table (a `VECTOR`, a text column in a non-UTF-8 character set such as
//! latin1) are rejected when the table's shape is loaded, with an error naming the table, the
//! column and the type, before any row of it is read.
//!
//! Each row field carries two properties: `mariadb.name` (the column's own name) and
//! `mariadb.type` (its canonical type text, see [`types::ColumnType::sql`]), so a reader can
//! rebuild the table's shape from the schema alone. Avro field and record names escape MariaDB
//! identifiers by the rule in [`avro::escape_name`].
//!
//! ## Records and subjects
//!
//! - Key: record `<db>.<table>.Key` of the primary-key columns.
//! - Value: Debezium-shaped `<db>.<table>.Envelope` with `before`, `after`, `source`
//!   (`avro/Source.avsc`), `op`, `ts_ms` and `transaction` (`avro/Transaction.avsc`).
//! - Fixed records: `continuum.SchemaChange`, `continuum.Heartbeat`, `continuum.SnapshotMarker`
//!   (no key).
//! - Subjects follow TopicRecordNameStrategy: `<topic>-<record full name>`, so every table shares
//!   the one changelog topic. Subjects are registered with compatibility `NONE`: the source
//!   database decides a table's shape, and readers always decode with the writer's schema.

pub mod avro;
pub mod codec;
pub mod model;
pub mod position;
pub mod registry;
pub mod types;

pub use codec::{CodecError, Decoder, Encoded, Encoder, RecordAt};
pub use model::{
    ChangeEvent, ChunkEnd, Heartbeat, KeyPart, Op, SchemaChange, SnapshotMarker, SnapshotPhase,
    SourceInfo, StreamPosition, StreamRecord, TxPlace, HEADER_KIND, HEADER_MIRROR_OFFSET,
    HEADER_POS,
};
pub use position::{BinlogPosition, Gtid, GtidPosition, ParsePositionError};
pub use registry::{Registry, RegistryError, RegistrySettings, RetryPolicy};
pub use types::{Column, ColumnType, Row, TableSchema, Value};
