//! The codec: [`StreamRecord`]s to and from Confluent wire format (magic byte 0, 4-byte schema id,
//! Avro binary) against a schema registry.
//!
//! Guarantees:
//! - each distinct table shape is registered once and its ids are cached by the whole shape, so
//!   a changed table registers a new version before its first row is encoded (no stale
//!   per-subject cache);
//! - any version ever registered decodes, because decoding always uses the writer's schema,
//!   fetched by the id in the record;
//! - a record that cannot be decoded gives [`CodecError`] naming the topic position and the
//!   reason; nothing is skipped.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use apache_avro::types::Value as AvroValue;
use apache_avro::Schema;
use serde_json::Value as Json;

use crate::avro::{self, TableSchemas};
use crate::model::{
    ChangeEvent, ChunkEnd, Heartbeat, KeyPart, Op, SchemaChange, SnapshotMarker, SnapshotPhase,
    SourceInfo, StreamRecord, TxPlace,
};
use crate::position::{BinlogPosition, Gtid, GtidPosition};
use crate::registry::{Registry, RegistryError};
use crate::types::TableSchema;

/// Where a record sits in Kafka, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordAt {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for RecordAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]@{}", self.topic, self.partition, self.offset)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CodecError {
    #[error("record {at}: {part} does not start with the Confluent magic byte 0 (found {found:#04x}); it was not written in Confluent wire format")]
    BadMagic {
        at: RecordAt,
        part: &'static str,
        found: u8,
    },
    #[error("record {at}: {part} is truncated: {len} bytes, but the wire format needs at least 5 (magic byte and schema id)")]
    TooShort {
        at: RecordAt,
        part: &'static str,
        len: usize,
    },
    #[error(
        "record {at}: {part} uses schema id {id}, which the registry {registry} does not have"
    )]
    UnknownSchemaId {
        at: RecordAt,
        part: &'static str,
        id: u32,
        registry: String,
    },
    #[error("record {at}: {part} (schema id {id}) does not decode: {reason}")]
    Undecodable {
        at: RecordAt,
        part: &'static str,
        id: u32,
        reason: String,
    },
    #[error("record {at}: {reason}")]
    Invalid { at: RecordAt, reason: String },
    #[error("cannot encode {what}: {reason}")]
    Encode { what: String, reason: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl CodecError {
    /// Only registry outages are worth retrying; a malformed record stays malformed.
    pub fn is_transient(&self) -> bool {
        matches!(self, CodecError::Registry(e) if e.is_transient())
    }
}

/// An encoded Kafka record: optional key and value, both in Confluent wire format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// Splits a wire-format payload into schema id and Avro body.
pub fn split_wire<'b>(
    bytes: &'b [u8],
    at: &RecordAt,
    part: &'static str,
) -> Result<(u32, &'b [u8]), CodecError> {
    if bytes.len() < 5 {
        return Err(CodecError::TooShort {
            at: at.clone(),
            part,
            len: bytes.len(),
        });
    }
    if bytes[0] != 0 {
        return Err(CodecError::BadMagic {
            at: at.clone(),
            part,
            found: bytes[0],
        });
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[5..]))
}

fn wire_header(buf: &mut Vec<u8>, id: u32) {
    buf.push(0);
    buf.extend_from_slice(&id.to_be_bytes());
}

#[derive(Debug, Clone, Copy)]
struct TableIds {
    key: u32,
    value: u32,
}

/// Encodes records for one topic, registering schemas as new shapes appear.
pub struct Encoder {
    registry: Registry,
    topic: String,
    tables: HashMap<TableSchema, TableIds>,
    /// The ids of each shape seen, by the address of its `Arc` (held here, so the address is
    /// never reused for another shape): a row costs a pointer lookup, not a hash of its shape.
    by_arc: HashMap<usize, (Arc<TableSchema>, TableIds)>,
    texts: avro::PositionTexts,
    fixed: HashMap<&'static str, u32>,
}

impl Encoder {
    pub fn new(registry: Registry, topic: impl Into<String>) -> Self {
        Encoder {
            registry,
            topic: topic.into(),
            tables: HashMap::new(),
            by_arc: HashMap::new(),
            texts: avro::PositionTexts::default(),
            fixed: HashMap::new(),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Registers the schemas of a table shape if this encoder has not seen it yet. Call it when a
    /// new shape appears (a TABLE_MAP, a snapshot) so the registry round trip is off the row path.
    pub async fn prepare(&mut self, table: &Arc<TableSchema>) -> Result<(), CodecError> {
        self.ids(table).await.map(|_| ())
    }

    async fn ids(&mut self, table: &Arc<TableSchema>) -> Result<TableIds, CodecError> {
        let addr = Arc::as_ptr(table) as usize;
        if let Some((_, ids)) = self.by_arc.get(&addr) {
            return Ok(*ids);
        }
        let ids = match self.tables.get(table.as_ref()) {
            Some(ids) => *ids,
            None => {
                let TableSchemas {
                    key_json,
                    value_json,
                    key_fullname,
                    value_fullname,
                } = avro::table_schemas(table);
                // The two subjects are independent: registered side by side, a new table (or a
                // table's new shape after DDL) holds the stream up for one registration's round
                // trips, not two.
                let key_subject = avro::subject(&self.topic, &key_fullname);
                let value_subject = avro::subject(&self.topic, &value_fullname);
                let (key, value) = tokio::try_join!(
                    self.registry.register(&key_subject, &key_json),
                    self.registry.register(&value_subject, &value_json),
                )?;
                let ids = TableIds { key, value };
                tracing::debug!(table = %table.qualified_name(), key, value, "registered table schemas");
                self.tables.insert(table.as_ref().clone(), ids);
                ids
            }
        };
        self.by_arc.insert(addr, (table.clone(), ids));
        Ok(ids)
    }

    async fn fixed_id(
        &mut self,
        name: &'static str,
        avsc: &'static str,
    ) -> Result<u32, CodecError> {
        if let Some(id) = self.fixed.get(name) {
            return Ok(*id);
        }
        let id = self
            .registry
            .register(
                &avro::subject(&self.topic, name),
                &avro::fixed_schema_json(avsc),
            )
            .await?;
        self.fixed.insert(name, id);
        Ok(id)
    }

    /// Encodes one record. `now_ms` is written as `ts_ms` where the schema has one.
    pub async fn encode(&mut self, rec: &StreamRecord, now_ms: i64) -> Result<Encoded, CodecError> {
        let mut out = Encoded::default();
        self.encode_into(rec, now_ms, &mut out).await?;
        Ok(out)
    }

    /// [`Encoder::encode`] into `out`, whose buffers are cleared and reused (a writer encoding
    /// record after record allocates only when a record outgrows them).
    pub async fn encode_into(
        &mut self,
        rec: &StreamRecord,
        now_ms: i64,
        out: &mut Encoded,
    ) -> Result<(), CodecError> {
        out.value.clear();
        let value = &mut out.value;
        match rec {
            StreamRecord::Change(ev) => {
                let ids = self.ids(&ev.table).await?;
                let row =
                    ev.after
                        .as_ref()
                        .or(ev.before.as_ref())
                        .ok_or_else(|| CodecError::Encode {
                            what: format!("change to {}", ev.table.qualified_name()),
                            reason: "it has neither a before nor an after image".into(),
                        })?;
                let what = || format!("row of {}", ev.table.qualified_name());
                let key = out.key.get_or_insert_with(Vec::new);
                key.clear();
                wire_header(key, ids.key);
                avro::write_key(key, &ev.table, row).map_err(|e| CodecError::Encode {
                    what: what(),
                    reason: e.to_string(),
                })?;
                wire_header(value, ids.value);
                avro::write_envelope(value, &self.topic, ev, now_ms, &mut self.texts).map_err(
                    |e| CodecError::Encode {
                        what: what(),
                        reason: e.to_string(),
                    },
                )?;
                Ok(())
            }
            StreamRecord::SchemaChange(sc) => {
                let id = self
                    .fixed_id(avro::SCHEMA_CHANGE_NAME, avro::SCHEMA_CHANGE_AVSC)
                    .await?;
                out.key = None;
                wire_header(value, id);
                avro::write_source(
                    value,
                    &self.topic,
                    &sc.database,
                    None,
                    &sc.source,
                    &mut self.texts,
                );
                // A source transaction's GTID; a chunk's definition has its snapshot's id, as
                // the chunk's rows do; a consistent snapshot's definition has none.
                let gtid = match (&sc.source.gtid, &sc.source.snapshot_id) {
                    (Some(g), _) => self.texts.gtid(g),
                    (None, Some(id)) if !sc.tx.last => id.as_str(),
                    (None, _) => "",
                };
                avro::write_transaction(value, gtid, sc.tx.index, sc.tx.last);
                avro::put_bytes(value, sc.database.as_bytes());
                avro::put_bytes(value, sc.ddl.as_bytes());
                avro::put_long(value, now_ms);
                Ok(())
            }
            StreamRecord::Heartbeat(h) => {
                self.encode_fixed(
                    out,
                    (avro::HEARTBEAT_NAME, avro::HEARTBEAT_AVSC, "heartbeat"),
                    vec![
                        ("server_id".into(), AvroValue::Long(h.server_id as i64)),
                        (
                            "gtid_position".into(),
                            AvroValue::String(h.position.to_string()),
                        ),
                        ("ts_ms".into(), AvroValue::Long(h.ts_ms)),
                    ],
                )
                .await
            }
            StreamRecord::Snapshot(m) => {
                let (idx, sym) = match m.phase {
                    SnapshotPhase::Start => (0, "START"),
                    SnapshotPhase::End => (1, "END"),
                };
                self.encode_fixed(
                    out,
                    (
                        avro::SNAPSHOT_MARKER_NAME,
                        avro::SNAPSHOT_MARKER_AVSC,
                        "snapshot marker",
                    ),
                    vec![
                        (
                            "snapshot_id".into(),
                            AvroValue::String(m.snapshot_id.clone()),
                        ),
                        ("phase".into(), AvroValue::Enum(idx, sym.into())),
                        ("server_id".into(), AvroValue::Long(m.server_id as i64)),
                        (
                            "gtid_position".into(),
                            AvroValue::String(m.position.to_string()),
                        ),
                        (
                            "tables".into(),
                            AvroValue::Array(
                                m.tables
                                    .iter()
                                    .map(|t| AvroValue::String(t.clone()))
                                    .collect(),
                            ),
                        ),
                        ("ts_ms".into(), AvroValue::Long(m.ts_ms)),
                    ],
                )
                .await
            }
            StreamRecord::ChunkEnd(c) => {
                let key = |k: &Option<Vec<KeyPart>>| match k {
                    None => AvroValue::Union(0, Box::new(AvroValue::Null)),
                    Some(parts) => AvroValue::Union(
                        1,
                        Box::new(AvroValue::String(
                            serde_json::to_string(parts).expect("key parts serialize"),
                        )),
                    ),
                };
                self.encode_fixed(
                    out,
                    (avro::CHUNK_END_NAME, avro::CHUNK_END_AVSC, "chunk end"),
                    vec![
                        (
                            "snapshot_id".into(),
                            AvroValue::String(c.snapshot_id.clone()),
                        ),
                        ("server_id".into(), AvroValue::Long(c.server_id as i64)),
                        ("table".into(), AvroValue::String(c.table.clone())),
                        (
                            "gtid_position".into(),
                            AvroValue::String(c.position.to_string()),
                        ),
                        ("rows".into(), AvroValue::Long(c.rows as i64)),
                        (
                            "key_columns".into(),
                            AvroValue::Array(
                                c.key.iter().map(|k| AvroValue::String(k.clone())).collect(),
                            ),
                        ),
                        ("from_key".into(), key(&c.from)),
                        ("to_key".into(), key(&c.to)),
                        ("ts_ms".into(), AvroValue::Long(c.ts_ms)),
                    ],
                )
                .await
            }
        }
    }

    /// Encodes a keyless record of one of the fixed schemas (`name`, `avsc`; `what` names it in
    /// errors) from its fields.
    async fn encode_fixed(
        &mut self,
        out: &mut Encoded,
        (name, avsc, what): (&'static str, &'static str, &str),
        fields: Vec<(String, AvroValue)>,
    ) -> Result<(), CodecError> {
        let id = self.fixed_id(name, avsc).await?;
        let body = avro::encode_with_apache(&avro::fixed_schema(avsc), AvroValue::Record(fields))
            .map_err(|reason| CodecError::Encode {
            what: what.into(),
            reason,
        })?;
        out.key = None;
        out.value.clear();
        wire_header(&mut out.value, id);
        out.value.extend(body);
        Ok(())
    }
}

/// What a writer schema describes.
enum WriterKind {
    Envelope { columns: TableSchema },
    Key { pk_names: Vec<String> },
    SchemaChange,
    Heartbeat,
    Snapshot,
    ChunkEnd,
}

struct Writer {
    schema: Arc<Schema>,
    kind: WriterKind,
}

/// Decodes records of any topic, fetching writer schemas by id (cached).
pub struct Decoder {
    registry: Registry,
    writers: HashMap<u32, Arc<Writer>>,
    tables: HashMap<(u32, u32, String, String), Arc<TableSchema>>,
}

fn field<'a>(fields: &'a [(String, AvroValue)], name: &str) -> Option<&'a AvroValue> {
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

fn unwrap_union(v: &AvroValue) -> &AvroValue {
    match v {
        AvroValue::Union(_, b) => b,
        o => o,
    }
}

fn as_str(v: &AvroValue) -> Option<&str> {
    match unwrap_union(v) {
        AvroValue::String(s) => Some(s),
        _ => None,
    }
}

fn as_long(v: &AvroValue) -> Option<i64> {
    match unwrap_union(v) {
        AvroValue::Long(n) => Some(*n),
        AvroValue::Int(n) => Some(*n as i64),
        _ => None,
    }
}

/// A required field that is a long, in `what` (`heartbeat`, `source`, ...).
fn need_long(fields: &[(String, AvroValue)], what: &str, name: &str) -> Result<i64, String> {
    field(fields, name)
        .and_then(as_long)
        .ok_or_else(|| format!("{what}.{name} is missing or not a number"))
}

/// A required field that is a long and fits `T` (a server id, an index, a binlog offset).
fn need_int<T: TryFrom<i64>>(
    fields: &[(String, AvroValue)],
    what: &str,
    name: &str,
) -> Result<T, String> {
    let v = need_long(fields, what, name)?;
    T::try_from(v).map_err(|_| format!("{what}.{name} is {v}, out of its range"))
}

fn need_str<'a>(
    fields: &'a [(String, AvroValue)],
    what: &str,
    name: &str,
) -> Result<&'a str, String> {
    field(fields, name)
        .and_then(as_str)
        .ok_or_else(|| format!("{what}.{name} is missing or not a string"))
}

/// The MariaDB column names of a key record's fields, in key order; every field must name its
/// column (`mariadb.name`), or the key cannot be matched to the row's columns.
fn key_columns(json: &Json, record: &str) -> Result<Vec<String>, String> {
    let fields = json
        .get("fields")
        .and_then(Json::as_array)
        .ok_or_else(|| format!("key record {record} has no fields array"))?;
    fields
        .iter()
        .map(|f| {
            f.get(avro::PROP_NAME)
                .and_then(Json::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    format!(
                        "key record {record}: field {f} has no {} property",
                        avro::PROP_NAME
                    )
                })
        })
        .collect()
}

/// A transaction place: `index` and `last`, both required.
fn tx_place(t: &[(String, AvroValue)]) -> Result<TxPlace, String> {
    Ok(TxPlace {
        index: need_int(t, "transaction", "index")?,
        last: match field(t, "last").map(unwrap_union) {
            Some(AvroValue::Boolean(b)) => *b,
            _ => return Err("transaction.last is missing or not a boolean".into()),
        },
    })
}

impl Decoder {
    pub fn new(registry: Registry) -> Self {
        Decoder {
            registry,
            writers: HashMap::new(),
            tables: HashMap::new(),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    async fn writer(
        &mut self,
        id: u32,
        at: &RecordAt,
        part: &'static str,
    ) -> Result<Arc<Writer>, CodecError> {
        if let Some(w) = self.writers.get(&id) {
            return Ok(w.clone());
        }
        let text = self.registry.schema_by_id(id).await.map_err(|e| match e {
            RegistryError::UnknownId { url, id } => CodecError::UnknownSchemaId {
                at: at.clone(),
                part,
                id,
                registry: url,
            },
            other => CodecError::Registry(other),
        })?;
        let undecodable = |reason: String| CodecError::Undecodable {
            at: at.clone(),
            part,
            id,
            reason,
        };
        let schema = avro::parse_schema(&text).map_err(undecodable)?;
        let json: Json = serde_json::from_str(&text).map_err(|e| undecodable(e.to_string()))?;
        let fullname = schema
            .name()
            .map(|n| n.fullname(None))
            .ok_or_else(|| undecodable("schema is not a named record".into()))?;
        let kind = match fullname.as_str() {
            avro::SCHEMA_CHANGE_NAME => WriterKind::SchemaChange,
            avro::HEARTBEAT_NAME => WriterKind::Heartbeat,
            avro::SNAPSHOT_MARKER_NAME => WriterKind::Snapshot,
            avro::CHUNK_END_NAME => WriterKind::ChunkEnd,
            n if n.ends_with(".Envelope") => WriterKind::Envelope {
                columns: avro::table_from_schema("", "", &json, None).map_err(undecodable)?,
            },
            n if n.ends_with(".Key") => {
                let pk_names = key_columns(&json, n).map_err(undecodable)?;
                WriterKind::Key { pk_names }
            }
            other => {
                return Err(undecodable(format!(
                    "record type '{other}' is not a Continuum record"
                )))
            }
        };
        let w = Arc::new(Writer { schema, kind });
        self.writers.insert(id, w.clone());
        Ok(w)
    }

    /// Decodes one Kafka record.
    pub async fn decode(
        &mut self,
        at: &RecordAt,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<StreamRecord, CodecError> {
        let (id, body) = split_wire(value, at, "value")?;
        let w = self.writer(id, at, "value").await?;
        let undecodable = |reason: String| CodecError::Undecodable {
            at: at.clone(),
            part: "value",
            id,
            reason,
        };
        let mut reader = body;
        let decoded = apache_avro::reader::datum::GenericDatumReader::builder(&w.schema)
            .build()
            .and_then(|r| r.read_value(&mut reader))
            .map_err(|e| undecodable(e.to_string()))?;
        if !reader.is_empty() {
            return Err(undecodable(format!(
                "{} bytes left over after the record",
                reader.len()
            )));
        }
        let AvroValue::Record(fields) = decoded else {
            return Err(undecodable("not a record".into()));
        };
        let invalid = |reason: String| CodecError::Invalid {
            at: at.clone(),
            reason,
        };
        match &w.kind {
            WriterKind::Envelope { columns } => {
                let source = field(&fields, "source")
                    .ok_or_else(|| invalid("envelope has no source".into()))?;
                let (source_info, db, table) = source_from_avro(source).map_err(invalid)?;
                let table =
                    table.ok_or_else(|| invalid("row change without source.table".into()))?;
                let key =
                    key.ok_or_else(|| invalid(format!("row change to {db}.{table} has no key")))?;
                let (key_id, _) = split_wire(key, at, "key")?;
                let cache_key = (id, key_id, db.clone(), table.clone());
                let schema = match self.tables.get(&cache_key) {
                    Some(t) => t.clone(),
                    None => {
                        let kw = self.writer(key_id, at, "key").await?;
                        let WriterKind::Key { pk_names } = &kw.kind else {
                            return Err(invalid(format!(
                                "key schema id {key_id} is not a key record"
                            )));
                        };
                        let mut t = columns.clone();
                        t.db = db.clone();
                        t.table = table.clone();
                        t.primary_key = pk_names
                            .iter()
                            .map(|n| {
                                t.column_index(n).ok_or_else(|| {
                                    invalid(format!(
                                        "key column '{n}' is not a column of {db}.{table}"
                                    ))
                                })
                            })
                            .collect::<Result<_, _>>()?;
                        let t = Arc::new(t);
                        self.tables.insert(cache_key, t.clone());
                        t
                    }
                };
                let image = |name: &str| -> Result<Option<Vec<crate::types::Value>>, CodecError> {
                    match field(&fields, name).map(unwrap_union) {
                        None | Some(AvroValue::Null) => Ok(None),
                        Some(v) => avro::row_from_avro(&schema, v)
                            .map(Some)
                            .map_err(|e| invalid(format!("{name} image of {db}.{table}: {e}"))),
                    }
                };
                let before = image("before")?;
                let after = image("after")?;
                let op = field(&fields, "op")
                    .and_then(as_str)
                    .and_then(Op::from_code)
                    .ok_or_else(|| invalid("envelope has no valid op".into()))?;
                // A consistent snapshot's read belongs to no transaction; every other row change
                // has a place: in its source transaction, or (a read with no GTID) in a chunk of
                // an incremental snapshot, whose id the transaction's id then is.
                let tx = match field(&fields, "transaction").map(unwrap_union) {
                    Some(AvroValue::Record(t)) => {
                        if source_info.gtid.is_none() {
                            let id = field(t, "id").and_then(as_str);
                            if op != Op::Read
                                || source_info.snapshot_id.is_none()
                                || id != source_info.snapshot_id.as_deref()
                            {
                                return Err(invalid(format!(
                                    "a {} row change of {db}.{table} has no GTID but has transaction {id:?}: only a snapshot read in a chunk has that, under its snapshot id ({:?})",
                                    op.code(),
                                    source_info.snapshot_id
                                )));
                            }
                        }
                        Some(tx_place(t).map_err(invalid)?)
                    }
                    None | Some(AvroValue::Null) if op == Op::Read => None,
                    other => {
                        return Err(invalid(format!(
                            "a {} row change of {db}.{table} has transaction {other:?}, not a transaction record",
                            op.code()
                        )))
                    }
                };
                Ok(StreamRecord::Change(ChangeEvent {
                    op,
                    table: schema,
                    before,
                    after,
                    source: source_info,
                    tx,
                }))
            }
            WriterKind::SchemaChange => {
                let source = field(&fields, "source")
                    .ok_or_else(|| invalid("schema change has no source".into()))?;
                let (source_info, _, _) = source_from_avro(source).map_err(invalid)?;
                let tx = match field(&fields, "transaction").map(unwrap_union) {
                    Some(AvroValue::Record(t)) => tx_place(t).map_err(invalid)?,
                    _ => return Err(invalid("schema change has no transaction".into())),
                };
                Ok(StreamRecord::SchemaChange(SchemaChange {
                    database: need_str(&fields, "schema change", "database")
                        .map_err(invalid)?
                        .to_owned(),
                    ddl: field(&fields, "ddl")
                        .and_then(as_str)
                        .ok_or_else(|| invalid("schema change has no ddl".into()))?
                        .to_owned(),
                    source: source_info,
                    tx,
                }))
            }
            WriterKind::Heartbeat => Ok(StreamRecord::Heartbeat(Heartbeat {
                server_id: need_int(&fields, "heartbeat", "server_id").map_err(invalid)?,
                position: need_str(&fields, "heartbeat", "gtid_position")
                    .map_err(invalid)?
                    .parse()
                    .map_err(|e: crate::position::ParsePositionError| {
                        invalid(format!("heartbeat.gtid_position: {e}"))
                    })?,
                ts_ms: need_long(&fields, "heartbeat", "ts_ms").map_err(invalid)?,
            })),
            WriterKind::Snapshot => Ok(StreamRecord::Snapshot(SnapshotMarker {
                snapshot_id: need_str(&fields, "snapshot marker", "snapshot_id")
                    .map_err(invalid)?
                    .to_owned(),
                phase: match field(&fields, "phase") {
                    Some(AvroValue::Enum(0, _)) => SnapshotPhase::Start,
                    Some(AvroValue::Enum(1, _)) => SnapshotPhase::End,
                    other => return Err(invalid(format!("snapshot marker with phase {other:?}"))),
                },
                server_id: need_int(&fields, "snapshot marker", "server_id").map_err(invalid)?,
                position: need_str(&fields, "snapshot marker", "gtid_position")
                    .map_err(invalid)?
                    .parse()
                    .map_err(|e: crate::position::ParsePositionError| {
                        invalid(format!("snapshot marker.gtid_position: {e}"))
                    })?,
                tables: match field(&fields, "tables") {
                    Some(AvroValue::Array(a)) => a
                        .iter()
                        .map(|t| {
                            as_str(t).map(str::to_owned).ok_or_else(|| {
                                invalid(format!(
                                    "snapshot marker.tables holds {t:?}, not a table name"
                                ))
                            })
                        })
                        .collect::<Result<_, _>>()?,
                    _ => {
                        return Err(invalid(
                            "snapshot marker.tables is missing or not an array".into(),
                        ))
                    }
                },
                ts_ms: need_long(&fields, "snapshot marker", "ts_ms").map_err(invalid)?,
            })),
            WriterKind::ChunkEnd => {
                let key = |name: &str| -> Result<Option<Vec<KeyPart>>, CodecError> {
                    match field(&fields, name).map(unwrap_union) {
                        None | Some(AvroValue::Null) => Ok(None),
                        Some(AvroValue::String(text)) => serde_json::from_str(text)
                            .map(Some)
                            .map_err(|e| invalid(format!("chunk end.{name} '{text}': {e}"))),
                        Some(other) => Err(invalid(format!(
                            "chunk end.{name} is {other:?}, not a string"
                        ))),
                    }
                };
                Ok(StreamRecord::ChunkEnd(ChunkEnd {
                    snapshot_id: need_str(&fields, "chunk end", "snapshot_id")
                        .map_err(invalid)?
                        .to_owned(),
                    server_id: need_int(&fields, "chunk end", "server_id").map_err(invalid)?,
                    table: need_str(&fields, "chunk end", "table")
                        .map_err(invalid)?
                        .to_owned(),
                    position: need_str(&fields, "chunk end", "gtid_position")
                        .map_err(invalid)?
                        .parse()
                        .map_err(|e: crate::position::ParsePositionError| {
                            invalid(format!("chunk end.gtid_position: {e}"))
                        })?,
                    rows: need_int(&fields, "chunk end", "rows").map_err(invalid)?,
                    key: match field(&fields, "key_columns") {
                        Some(AvroValue::Array(a)) => a
                            .iter()
                            .map(|k| {
                                as_str(k).map(str::to_owned).ok_or_else(|| {
                                    invalid(format!(
                                        "chunk end.key_columns holds {k:?}, not a column name"
                                    ))
                                })
                            })
                            .collect::<Result<_, _>>()?,
                        _ => {
                            return Err(invalid(
                                "chunk end.key_columns is missing or not an array".into(),
                            ))
                        }
                    },
                    from: key("from_key")?,
                    to: key("to_key")?,
                    ts_ms: need_long(&fields, "chunk end", "ts_ms").map_err(invalid)?,
                }))
            }
            WriterKind::Key { .. } => Err(invalid(format!("value uses key schema id {id}"))),
        }
    }
}

/// Reads a `continuum.Source` record back: the source info, db and table.
fn source_from_avro(v: &AvroValue) -> Result<(SourceInfo, String, Option<String>), String> {
    let AvroValue::Record(f) = v else {
        return Err("source is not a record".into());
    };
    let s = |n: &str| field(f, n).and_then(as_str).map(str::to_owned);
    let need = |n: &str| s(n).ok_or_else(|| format!("source.{n} is missing"));
    let gtid: Option<Gtid> = match s("gtid") {
        Some(g) => Some(
            g.parse()
                .map_err(|e: crate::position::ParsePositionError| e.to_string())?,
        ),
        None => None,
    };
    let pos = |n: &str| -> Result<GtidPosition, String> {
        need(n)?
            .parse()
            .map_err(|e: crate::position::ParsePositionError| e.to_string())
    };
    Ok((
        SourceInfo {
            server_id: need_int(f, "source", "server_id")?,
            gtid,
            gtid_position: pos("gtid_position")?,
            resume_position: pos("resume_position")?,
            binlog: BinlogPosition::new(need("file")?, need_int(f, "source", "pos")?),
            commit_ts_ms: need_long(f, "source", "ts_ms")?,
            snapshot_id: s("snapshot_id"),
        },
        need("db")?,
        s("table"),
    ))
}

#[cfg(test)]
mod strict_tests {
    use super::*;

    fn rec(pairs: &[(&str, AvroValue)]) -> Vec<(String, AvroValue)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn a_key_field_without_its_column_name_is_an_error_not_a_shorter_key() {
        let good = serde_json::json!({"fields": [{"name": "id", "mariadb.name": "id"}]});
        assert_eq!(key_columns(&good, "d.t.Key"), Ok(vec!["id".to_owned()]));
        let unnamed = serde_json::json!({"fields": [
            {"name": "id", "mariadb.name": "id"}, {"name": "k2"}
        ]});
        let e = key_columns(&unnamed, "d.t.Key").unwrap_err();
        assert!(
            e.contains("d.t.Key") && e.contains("k2") && e.contains("mariadb.name"),
            "{e}"
        );
        let e = key_columns(&serde_json::json!({}), "d.t.Key").unwrap_err();
        assert_eq!(e, "key record d.t.Key has no fields array");
    }

    #[test]
    fn a_missing_or_wrong_field_is_an_error_naming_it_never_a_default() {
        let f = rec(&[
            ("server_id", AvroValue::Long(1 << 40)),
            ("ts_ms", AvroValue::Long(5)),
        ]);
        assert_eq!(need_long(&f, "heartbeat", "ts_ms"), Ok(5));
        assert_eq!(
            need_int::<u32>(&f, "heartbeat", "server_id"),
            Err(format!(
                "heartbeat.server_id is {}, out of its range",
                1i64 << 40
            ))
        );
        assert_eq!(
            need_long(&f, "heartbeat", "pos"),
            Err("heartbeat.pos is missing or not a number".into())
        );
        assert_eq!(
            need_str(&f, "source", "file"),
            Err("source.file is missing or not a string".into())
        );
        assert_eq!(
            need_int::<u64>(&rec(&[("pos", AvroValue::Long(-1))]), "source", "pos"),
            Err("source.pos is -1, out of its range".into())
        );
    }

    #[test]
    fn a_transaction_place_needs_both_its_fields() {
        let ok = rec(&[
            ("index", AvroValue::Long(3)),
            ("last", AvroValue::Boolean(true)),
        ]);
        assert_eq!(
            tx_place(&ok),
            Ok(TxPlace {
                index: 3,
                last: true
            })
        );
        let no_last = rec(&[("index", AvroValue::Long(3))]);
        assert_eq!(
            tx_place(&no_last),
            Err("transaction.last is missing or not a boolean".into())
        );
        let no_index = rec(&[("last", AvroValue::Boolean(false))]);
        assert_eq!(
            tx_place(&no_index),
            Err("transaction.index is missing or not a number".into())
        );
    }
}
