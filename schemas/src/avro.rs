//! The Avro side of the contract: schema generation from a table's shape, name escaping, and
//! the binary encoding of rows, keys and envelopes.
//!
//! Encoding uses a writer precomputed per table shape: it writes Avro binary straight from
//! [`Value`]s, without building an intermediate Avro value tree. Tests prove the bytes equal what
//! the `apache-avro` crate writes for the same data, and that the stock reader decodes them with
//! nothing but the registered schema. Decoding goes through `apache-avro`.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use apache_avro::types::Value as AvroValue;
use apache_avro::Schema;
use num_bigint::BigInt;
use serde_json::{json, Map, Value as Json};

use crate::model::{ChangeEvent, Op, SourceInfo};
use crate::position::{Gtid, GtidPosition};
use crate::types::{ColumnType, Date, DateTime, IntWidth, Row, TableSchema, Value};

pub const SOURCE_AVSC: &str = include_str!("../avro/Source.avsc");
pub const TRANSACTION_AVSC: &str = include_str!("../avro/Transaction.avsc");
pub const SCHEMA_CHANGE_AVSC: &str = include_str!("../avro/SchemaChange.avsc");
pub const HEARTBEAT_AVSC: &str = include_str!("../avro/Heartbeat.avsc");
pub const SNAPSHOT_MARKER_AVSC: &str = include_str!("../avro/SnapshotMarker.avsc");
pub const CHUNK_END_AVSC: &str = include_str!("../avro/ChunkEnd.avsc");

pub const SOURCE_NAME: &str = "continuum.Source";
pub const TRANSACTION_NAME: &str = "continuum.Transaction";
pub const SCHEMA_CHANGE_NAME: &str = "continuum.SchemaChange";
pub const HEARTBEAT_NAME: &str = "continuum.Heartbeat";
pub const SNAPSHOT_MARKER_NAME: &str = "continuum.SnapshotMarker";
pub const CHUNK_END_NAME: &str = "continuum.ChunkEnd";

/// Field property holding the column's original MariaDB name.
pub const PROP_NAME: &str = "mariadb.name";
/// Field property holding the column's canonical type text ([`ColumnType::sql`]).
pub const PROP_TYPE: &str = "mariadb.type";

/// The version written into `source.version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Turns any MariaDB identifier into a valid Avro name, injectively and stably.
///
/// A name made only of ASCII letters, digits and `_`, not starting with a digit and not
/// containing `__`, is kept as it is. Any other name becomes `__` followed by its characters,
/// where ASCII letters and digits stay and every other character (including `_`) becomes `_` and
/// its Unicode code point as six hex digits. So `order id` is `__order_000020id` and `1st` is
/// `__1st`. Kept names never contain `__` and escaped ones always start with it, so no two
/// identifiers share an Avro name.
pub fn escape_name(name: &str) -> String {
    let plain = !name.is_empty()
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.contains("__");
    if plain {
        return name.to_owned();
    }
    let mut out = String::with_capacity(name.len() * 2 + 2);
    out.push_str("__");
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            out.push_str(&format!("_{:06x}", c as u32));
        }
    }
    out
}

/// The Avro namespace of a table's records: `<db>.<table>`, each part escaped.
pub fn table_namespace(db: &str, table: &str) -> String {
    format!("{}.{}", escape_name(db), escape_name(table))
}

/// Subject name under TopicRecordNameStrategy: `<topic>-<record full name>`.
pub fn subject(topic: &str, record_fullname: &str) -> String {
    format!("{topic}-{record_fullname}")
}

fn parsed(avsc: &str) -> Json {
    serde_json::from_str(avsc).expect("bundled .avsc files are valid JSON")
}

/// Replaces the first reference to each of `defs`' names with the full definition, so that a
/// schema that refers to `continuum.Source` by name becomes self-contained.
fn expand(schema: &mut Json, defs: &[(&str, &str)], defined: &mut HashSet<String>) {
    match schema {
        Json::String(s) => {
            if let Some((name, avsc)) = defs.iter().find(|(n, _)| *n == s.as_str()) {
                if defined.insert((*name).to_owned()) {
                    let mut full = parsed(avsc);
                    expand(&mut full, defs, defined);
                    *schema = full;
                }
            }
        }
        Json::Array(items) => items.iter_mut().for_each(|i| expand(i, defs, defined)),
        Json::Object(map) => {
            if let (Some(Json::String(name)), Some(Json::String(ns))) =
                (map.get("name"), map.get("namespace"))
            {
                defined.insert(format!("{ns}.{name}"));
            }
            for (k, v) in map.iter_mut() {
                if k == "type" || k == "items" || k == "fields" {
                    expand(v, defs, defined);
                }
            }
        }
        _ => {}
    }
}

fn fixed_defs() -> [(&'static str, &'static str); 2] {
    [
        (SOURCE_NAME, SOURCE_AVSC),
        (TRANSACTION_NAME, TRANSACTION_AVSC),
    ]
}

/// A self-contained schema text for one of the fixed record types.
pub fn fixed_schema_json(avsc: &str) -> String {
    let mut j = parsed(avsc);
    let mut defined = HashSet::new();
    expand(&mut j, &fixed_defs(), &mut defined);
    j.to_string()
}

/// The Avro type of one column's value, without nullability.
fn column_avro_type(ty: &ColumnType) -> Vec<Json> {
    let decimal = |p: u32, s: u32| json!({"type": "bytes", "logicalType": "decimal", "precision": p, "scale": s});
    match ty {
        ColumnType::Integer {
            width: IntWidth::Big,
            unsigned: true,
        } => vec![decimal(20, 0)],
        ColumnType::Integer {
            width: IntWidth::Big,
            unsigned: false,
        }
        | ColumnType::Integer {
            width: IntWidth::Int,
            unsigned: true,
        } => vec![json!("long")],
        ColumnType::Integer { .. } | ColumnType::Year => vec![json!("int")],
        ColumnType::Decimal { precision, scale } => {
            vec![decimal(*precision as u32, *scale as u32)]
        }
        ColumnType::Float => vec![json!("float")],
        ColumnType::Double => vec![json!("double")],
        ColumnType::Date => vec![
            json!({"type": "int", "logicalType": "date"}),
            json!("string"),
        ],
        ColumnType::DateTime { .. } => vec![
            json!({"type": "long", "logicalType": "local-timestamp-micros"}),
            json!("string"),
        ],
        ColumnType::Timestamp { .. } => {
            vec![json!({"type": "long", "logicalType": "timestamp-micros"})]
        }
        ColumnType::Time { .. } => vec![json!("long")],
        ColumnType::Text { .. } | ColumnType::Enum { .. } | ColumnType::Set { .. } => {
            vec![json!("string")]
        }
        ColumnType::Bit { .. }
        | ColumnType::Binary { .. }
        | ColumnType::Blob { .. }
        | ColumnType::Geometry => vec![json!("bytes")],
    }
}

fn field_json(name: &str, ty: &ColumnType, nullable: bool) -> Json {
    let branches = column_avro_type(ty);
    let mut f = Map::new();
    f.insert("name".into(), json!(escape_name(name)));
    if nullable {
        let mut u = vec![json!("null")];
        u.extend(branches);
        f.insert("type".into(), Json::Array(u));
        f.insert("default".into(), Json::Null);
    } else if branches.len() == 1 {
        f.insert("type".into(), branches.into_iter().next().unwrap());
    } else {
        f.insert("type".into(), Json::Array(branches));
    }
    f.insert(PROP_NAME.into(), json!(name));
    f.insert(PROP_TYPE.into(), json!(ty.sql()));
    Json::Object(f)
}

/// The generated schemas of one table shape.
#[derive(Debug, Clone)]
pub struct TableSchemas {
    pub key_json: String,
    pub value_json: String,
    pub key_fullname: String,
    pub value_fullname: String,
}

/// Generates the key and envelope schemas of a table shape.
pub fn table_schemas(t: &TableSchema) -> TableSchemas {
    let ns = table_namespace(&t.db, &t.table);
    let key_fields: Vec<Json> = t
        .primary_key
        .iter()
        .map(|&i| field_json(&t.columns[i].name, &t.columns[i].ty, false))
        .collect();
    let key = json!({
        "type": "record", "name": "Key", "namespace": ns,
        "doc": format!("Primary key of {}", t.qualified_name()),
        "fields": key_fields,
    });
    let value_fields: Vec<Json> = t
        .columns
        .iter()
        .map(|c| field_json(&c.name, &c.ty, c.nullable))
        .collect();
    let row = json!({
        "type": "record", "name": "Value", "namespace": ns,
        "doc": format!("A row of {}", t.qualified_name()),
        "fields": value_fields,
    });
    let row_ref = format!("{ns}.Value");
    let mut envelope = json!({
        "type": "record", "name": "Envelope", "namespace": ns,
        "doc": format!("A change to a row of {}", t.qualified_name()),
        "fields": [
            {"name": "before", "type": ["null", row], "default": null},
            {"name": "after", "type": ["null", row_ref], "default": null},
            {"name": "source", "type": SOURCE_NAME},
            {"name": "op", "type": "string", "doc": "c: insert, u: update, d: delete, r: snapshot read"},
            {"name": "ts_ms", "type": "long", "doc": "When the producer wrote the record"},
            {"name": "transaction", "type": ["null", TRANSACTION_NAME], "default": null},
        ]
    });
    let mut defined = HashSet::new();
    expand(&mut envelope, &fixed_defs(), &mut defined);
    TableSchemas {
        key_json: key.to_string(),
        value_json: envelope.to_string(),
        key_fullname: format!("{ns}.Key"),
        value_fullname: format!("{ns}.Envelope"),
    }
}

/// Reads a table shape back from an envelope or key schema (as fetched from a registry):
/// the `mariadb.name` and `mariadb.type` properties of the row record's fields. `primary_key`
/// comes from the key schema when given.
pub fn table_from_schema(
    db: &str,
    table: &str,
    envelope: &Json,
    key: Option<&Json>,
) -> Result<TableSchema, String> {
    let fields = envelope
        .get("fields")
        .and_then(Json::as_array)
        .ok_or("envelope has no fields")?;
    let before = fields
        .iter()
        .find(|f| f.get("name") == Some(&json!("before")))
        .ok_or("envelope has no 'before' field")?;
    let row = before
        .get("type")
        .and_then(Json::as_array)
        .and_then(|u| u.iter().find(|b| b.is_object()))
        .ok_or("'before' is not a union with a row record")?;
    let columns = columns_from_record(row)?;
    let primary_key = match key {
        Some(k) => columns_from_record(k)?
            .iter()
            .map(|kc| {
                columns
                    .iter()
                    .position(|c| c.name == kc.name)
                    .ok_or_else(|| format!("key column '{}' is not a column of the row", kc.name))
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok(TableSchema {
        db: db.to_owned(),
        table: table.to_owned(),
        columns,
        primary_key,
    })
}

fn columns_from_record(rec: &Json) -> Result<Vec<crate::types::Column>, String> {
    rec.get("fields")
        .and_then(Json::as_array)
        .ok_or("row record has no fields")?
        .iter()
        .map(|f| {
            let name = f
                .get(PROP_NAME)
                .and_then(Json::as_str)
                .ok_or_else(|| format!("field {f} has no {PROP_NAME} property"))?;
            let ty = f
                .get(PROP_TYPE)
                .and_then(Json::as_str)
                .ok_or_else(|| format!("field '{name}' has no {PROP_TYPE} property"))?
                .parse::<ColumnType>()
                .map_err(|e| format!("field '{name}': {e}"))?;
            let nullable =
                matches!(f.get("type"), Some(Json::Array(u)) if u.first() == Some(&json!("null")));
            Ok(crate::types::Column {
                name: name.to_owned(),
                ty,
                nullable,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Avro `long`/`int`: zig-zag, then base-128 varint (Avro spec, "Binary Encoding").
#[inline]
pub(crate) fn put_long(buf: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

#[inline]
pub(crate) fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_long(buf, b.len() as i64);
    buf.extend_from_slice(b);
}

/// A value that does not fit its column: a bug upstream, or a source value outside the type's
/// documented range. Names the column, the type and the value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("column '{column}' ({ty}): cannot encode {value}: {reason}")]
pub struct ValueError {
    pub column: String,
    pub ty: String,
    pub value: String,
    pub reason: String,
}

/// Two's-complement big-endian bytes of the unscaled value of a decimal text with `scale`
/// fractional digits (the Avro `decimal` logical type).
pub fn decimal_to_bytes(text: &str, scale: u8) -> Result<Vec<u8>, String> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    let (int_part, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac.is_empty()
        || !int_part
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(format!("'{text}' is not a decimal number"));
    }
    if frac.len() > scale as usize && frac[scale as usize..].bytes().any(|b| b != b'0') {
        return Err(format!("'{text}' has more than {scale} fractional digits"));
    }
    let mut unscaled = String::with_capacity(int_part.len() + scale as usize + 1);
    if neg {
        unscaled.push('-');
    }
    unscaled.push_str(if int_part.is_empty() { "0" } else { int_part });
    let kept = &frac[..frac.len().min(scale as usize)];
    unscaled.push_str(kept);
    for _ in kept.len()..scale as usize {
        unscaled.push('0');
    }
    let n: BigInt = unscaled
        .parse()
        .map_err(|_| format!("'{text}' is not a decimal number"))?;
    Ok(n.to_signed_bytes_be())
}

/// The decimal text (with exactly `scale` fractional digits) of Avro decimal bytes.
pub fn decimal_from_bytes(bytes: &[u8], scale: u8) -> String {
    let n = BigInt::from_signed_bytes_be(bytes);
    let s = n.magnitude().to_string();
    let neg = n.sign() == num_bigint::Sign::Minus;
    let scale = scale as usize;
    let padded = if s.len() <= scale {
        format!("{}{}", "0".repeat(scale + 1 - s.len()), s)
    } else {
        s
    };
    let (i, f) = padded.split_at(padded.len() - scale);
    let mut out = String::with_capacity(padded.len() + 2);
    if neg {
        out.push('-');
    }
    out.push_str(i);
    if scale > 0 {
        out.push('.');
        out.push_str(f);
    }
    out
}

fn fits_int(width: IntWidth, unsigned: bool, v: i128) -> bool {
    let (lo, hi) = width.range(unsigned);
    (lo..=hi).contains(&v)
}

/// Writes one column value (with its union branch when the column is nullable or a date type).
pub fn write_value(
    buf: &mut Vec<u8>,
    name: &str,
    ty: &ColumnType,
    nullable: bool,
    v: &Value,
) -> Result<(), ValueError> {
    let bad = |reason: String| ValueError {
        column: name.to_owned(),
        ty: ty.sql(),
        value: format!("{v:?}"),
        reason,
    };
    // Branch offset: nullable unions put "null" first.
    let off = nullable as i64;
    if v.is_null() {
        if !nullable {
            return Err(bad("NULL in a NOT NULL column".into()));
        }
        put_long(buf, 0);
        return Ok(());
    }
    let mismatch = || bad("value variant does not match the column type".into());
    match ty {
        ColumnType::Date => {
            let Value::Date(d) = v else {
                return Err(mismatch());
            };
            match d.to_epoch_days() {
                Some(days) => {
                    put_long(buf, off);
                    put_long(buf, days as i64);
                }
                None => {
                    put_long(buf, off + 1);
                    put_bytes(buf, d.to_string().as_bytes());
                }
            }
            return Ok(());
        }
        ColumnType::DateTime { .. } => {
            let Value::DateTime(dt) = v else {
                return Err(mismatch());
            };
            match dt.to_epoch_micros() {
                Some(us) => {
                    put_long(buf, off);
                    put_long(buf, us);
                }
                None => {
                    put_long(buf, off + 1);
                    put_bytes(buf, dt.to_string().as_bytes());
                }
            }
            return Ok(());
        }
        _ => {}
    }
    if nullable {
        put_long(buf, 1);
    }
    match (ty, v) {
        (
            ColumnType::Integer {
                width: IntWidth::Big,
                unsigned: true,
            },
            Value::UInt(u),
        ) => {
            let n = BigInt::from(*u);
            put_bytes(buf, &n.to_signed_bytes_be());
        }
        (ColumnType::Integer { width, unsigned }, Value::Int(i)) => {
            if !fits_int(*width, *unsigned, *i as i128) || (*width == IntWidth::Big && *unsigned) {
                return Err(bad("out of the column's range".into()));
            }
            put_long(buf, *i);
        }
        (ColumnType::Year, Value::Int(i)) => put_long(buf, *i),
        (ColumnType::Decimal { scale, .. }, Value::Decimal(d)) => {
            put_bytes(buf, &decimal_to_bytes(d, *scale).map_err(bad)?)
        }
        (ColumnType::Float, Value::Float(f)) => buf.extend_from_slice(&f.to_le_bytes()),
        (ColumnType::Double, Value::Double(f)) => buf.extend_from_slice(&f.to_le_bytes()),
        (ColumnType::Timestamp { .. }, Value::Timestamp(us)) => put_long(buf, *us),
        (ColumnType::Time { .. }, Value::Time(us)) => put_long(buf, *us),
        (
            ColumnType::Text { .. } | ColumnType::Enum { .. } | ColumnType::Set { .. },
            Value::Text(s),
        ) => put_bytes(buf, s.as_bytes()),
        (ColumnType::Binary { len }, Value::Bytes(b)) => {
            if b.len() != *len as usize {
                return Err(bad(format!("BINARY({len}) value of {} bytes", b.len())));
            }
            put_bytes(buf, b)
        }
        (
            ColumnType::Bit { .. } | ColumnType::Blob { .. } | ColumnType::Geometry,
            Value::Bytes(b),
        ) => put_bytes(buf, b),
        _ => return Err(mismatch()),
    }
    Ok(())
}

/// Writes a row record: every column in order.
pub fn write_row(buf: &mut Vec<u8>, t: &TableSchema, row: &Row) -> Result<(), ValueError> {
    if row.len() != t.columns.len() {
        return Err(ValueError {
            column: "*".into(),
            ty: t.qualified_name(),
            value: format!("{} values", row.len()),
            reason: format!("table has {} columns", t.columns.len()),
        });
    }
    for (c, v) in t.columns.iter().zip(row) {
        write_value(buf, &c.name, &c.ty, c.nullable, v)?;
    }
    Ok(())
}

/// Writes the key record: the primary-key columns, never null.
pub fn write_key(buf: &mut Vec<u8>, t: &TableSchema, row: &Row) -> Result<(), ValueError> {
    for &i in &t.primary_key {
        let c = &t.columns[i];
        write_value(buf, &c.name, &c.ty, false, &row[i])?;
    }
    Ok(())
}

/// Writes a `continuum.Source` record.
/// The text of the GTID and the positions a record's source block carries, kept from the
/// record before: the rows of one transaction share them, and formatting them again for every
/// row showed in the producer's profile.
#[derive(Debug, Default)]
pub struct PositionTexts {
    gtid: Option<(Gtid, String)>,
    /// The position after the transaction, and the one before it.
    positions: [Option<(GtidPosition, String)>; 2],
}

impl PositionTexts {
    pub fn gtid(&mut self, g: &Gtid) -> &str {
        if self.gtid.as_ref().is_none_or(|(k, _)| k != g) {
            self.gtid = Some((*g, g.to_string()));
        }
        &self.gtid.as_ref().expect("just set").1
    }

    fn position(&mut self, slot: usize, p: &GtidPosition) -> &str {
        let e = &mut self.positions[slot];
        if e.as_ref().is_none_or(|(k, _)| k != p) {
            *e = Some((p.clone(), p.to_string()));
        }
        &e.as_ref().expect("just set").1
    }
}

pub fn write_source(
    buf: &mut Vec<u8>,
    topic: &str,
    db: &str,
    table: Option<&str>,
    s: &SourceInfo,
    texts: &mut PositionTexts,
) {
    put_bytes(buf, VERSION.as_bytes());
    put_bytes(buf, b"continuum");
    put_bytes(buf, topic.as_bytes());
    put_long(buf, s.server_id as i64);
    match &s.gtid {
        Some(g) => {
            put_long(buf, 1);
            put_bytes(buf, texts.gtid(g).as_bytes());
        }
        None => put_long(buf, 0),
    }
    put_bytes(buf, texts.position(0, &s.gtid_position).as_bytes());
    put_bytes(buf, texts.position(1, &s.resume_position).as_bytes());
    put_bytes(buf, s.binlog.file.as_bytes());
    put_long(buf, s.binlog.pos as i64);
    put_long(buf, s.commit_ts_ms);
    put_bytes(buf, db.as_bytes());
    match table {
        Some(t) => {
            put_long(buf, 1);
            put_bytes(buf, t.as_bytes());
        }
        None => put_long(buf, 0),
    }
    buf.push(s.snapshot_id.is_some() as u8);
    match &s.snapshot_id {
        Some(id) => {
            put_long(buf, 1);
            put_bytes(buf, id.as_bytes());
        }
        None => put_long(buf, 0),
    }
}

/// Writes a `continuum.Transaction` record.
pub fn write_transaction(buf: &mut Vec<u8>, gtid: &str, index: u64, last: bool) {
    put_bytes(buf, gtid.as_bytes());
    put_long(buf, index as i64);
    buf.push(last as u8);
}

/// Writes the envelope of a row change (without the wire-format header).
pub fn write_envelope(
    buf: &mut Vec<u8>,
    topic: &str,
    ev: &ChangeEvent,
    now_ms: i64,
    texts: &mut PositionTexts,
) -> Result<(), ValueError> {
    let t = &ev.table;
    for image in [&ev.before, &ev.after] {
        match image {
            Some(row) => {
                put_long(buf, 1);
                write_row(buf, t, row)?;
            }
            None => put_long(buf, 0),
        }
    }
    write_source(buf, topic, &t.db, Some(&t.table), &ev.source, texts);
    put_bytes(buf, ev.op.code().as_bytes());
    put_long(buf, now_ms);
    match (&ev.source.gtid, &ev.tx, &ev.source.snapshot_id) {
        (Some(g), Some(tx), _) => {
            put_long(buf, 1);
            write_transaction(buf, texts.gtid(g), tx.index, tx.last);
        }
        // A chunk of an incremental snapshot: its place in the chunk, under the snapshot's id.
        (None, Some(tx), Some(id)) => {
            put_long(buf, 1);
            write_transaction(buf, id, tx.index, tx.last);
        }
        _ => put_long(buf, 0),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Decoding (through apache-avro)

/// Converts a decoded Avro field value back to a column [`Value`].
pub fn value_from_avro(ty: &ColumnType, v: &AvroValue) -> Result<Value, String> {
    let v = match v {
        AvroValue::Union(_, inner) => inner.as_ref(),
        other => other,
    };
    let wrong = || format!("Avro value {v:?} does not fit column type {}", ty.sql());
    Ok(match (ty, v) {
        (_, AvroValue::Null) => Value::Null,
        (
            ColumnType::Integer {
                width: IntWidth::Big,
                unsigned: true,
            },
            AvroValue::Decimal(d),
        ) => {
            let bytes: Vec<u8> = d.try_into().map_err(|_| wrong())?;
            let n = BigInt::from_signed_bytes_be(&bytes);
            Value::UInt(u64::try_from(n).map_err(|_| wrong())?)
        }
        (ColumnType::Integer { .. } | ColumnType::Year, AvroValue::Int(i)) => Value::Int(*i as i64),
        (ColumnType::Integer { .. }, AvroValue::Long(i)) => Value::Int(*i),
        (ColumnType::Decimal { scale, .. }, AvroValue::Decimal(d)) => {
            let bytes: Vec<u8> = d.try_into().map_err(|_| wrong())?;
            Value::Decimal(decimal_from_bytes(&bytes, *scale))
        }
        (ColumnType::Float, AvroValue::Float(f)) => Value::Float(*f),
        (ColumnType::Double, AvroValue::Double(f)) => Value::Double(*f),
        (ColumnType::Date, AvroValue::Date(d)) => Value::Date(Date::from_epoch_days(*d)),
        (ColumnType::Date, AvroValue::String(s)) => Value::Date(s.parse().map_err(|_| wrong())?),
        (ColumnType::DateTime { .. }, AvroValue::LocalTimestampMicros(us)) => {
            Value::DateTime(DateTime::from_epoch_micros(*us))
        }
        (ColumnType::DateTime { .. }, AvroValue::String(s)) => {
            Value::DateTime(s.parse().map_err(|_| wrong())?)
        }
        (ColumnType::Timestamp { .. }, AvroValue::TimestampMicros(us)) => Value::Timestamp(*us),
        (ColumnType::Time { .. }, AvroValue::Long(us)) => Value::Time(*us),
        (
            ColumnType::Text { .. } | ColumnType::Enum { .. } | ColumnType::Set { .. },
            AvroValue::String(s),
        ) => Value::Text(s.clone()),
        (
            ColumnType::Bit { .. }
            | ColumnType::Binary { .. }
            | ColumnType::Blob { .. }
            | ColumnType::Geometry,
            AvroValue::Bytes(b),
        ) => Value::Bytes(b.clone()),
        _ => return Err(wrong()),
    })
}

/// Converts a decoded row record back to a [`Row`] in the table's column order.
pub fn row_from_avro(t: &TableSchema, v: &AvroValue) -> Result<Row, String> {
    let AvroValue::Record(fields) = v else {
        return Err(format!("expected a row record, got {v:?}"));
    };
    if fields.len() != t.columns.len() {
        return Err(format!(
            "row record has {} fields, {} has {} columns",
            fields.len(),
            t.qualified_name(),
            t.columns.len()
        ));
    }
    t.columns
        .iter()
        .zip(fields)
        .map(|(c, (_, fv))| {
            value_from_avro(&c.ty, fv).map_err(|e| format!("column '{}': {e}", c.name))
        })
        .collect()
}

/// A parsed schema, shared.
pub fn parse_schema(json: &str) -> Result<Arc<Schema>, String> {
    Schema::parse_str(json)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Parsed fixed schemas, built once.
pub fn fixed_schema(avsc: &'static str) -> Arc<Schema> {
    type Parsed = std::sync::Mutex<Vec<(&'static str, Arc<Schema>)>>;
    static CACHE: OnceLock<Parsed> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut c = cache.lock().unwrap();
    if let Some((_, s)) = c.iter().find(|(k, _)| std::ptr::eq(*k, avsc)) {
        return s.clone();
    }
    let s = parse_schema(&fixed_schema_json(avsc)).expect("bundled schemas parse");
    c.push((avsc, s.clone()));
    s
}

/// Encodes a record through `apache-avro`'s own writer (used for the low-volume fixed records
/// and, in tests, as the reference for the precomputed writers).
pub fn encode_with_apache(schema: &Schema, value: AvroValue) -> Result<Vec<u8>, String> {
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .map_err(|e| e.to_string())
}

/// Op code as Avro value (for control record builders).
pub fn op_value(op: Op) -> AvroValue {
    AvroValue::String(op.code().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_texts_follow_each_new_value() {
        let mut t = PositionTexts::default();
        let p1: GtidPosition = "0-1-5,1-1-9".parse().unwrap();
        let p2: GtidPosition = "0-1-5,1-1-10".parse().unwrap();
        assert_eq!(t.position(0, &p1), "0-1-5,1-1-9");
        assert_eq!(t.position(1, &p2), "0-1-5,1-1-10");
        assert_eq!(t.position(0, &p1), "0-1-5,1-1-9");
        assert_eq!(t.position(0, &p2), "0-1-5,1-1-10");
        let g1: Gtid = "1-1-9".parse().unwrap();
        let g2: Gtid = "1-2-9".parse().unwrap();
        assert_eq!(t.gtid(&g1), "1-1-9");
        assert_eq!(t.gtid(&g2), "1-2-9");
        assert_eq!(t.gtid(&g1), "1-1-9");
    }

    #[test]
    fn names_escape_injectively() {
        assert_eq!(escape_name("orders"), "orders");
        assert_eq!(escape_name("order_id"), "order_id");
        assert_eq!(escape_name("order id"), "__order_000020id");
        assert_eq!(escape_name("1st"), "__1st");
        assert_eq!(escape_name("a__b"), "__a_00005f_00005fb");
        assert_eq!(escape_name("größe"), "__gr_0000f6_0000dfe");
        assert_eq!(escape_name("😀"), "___01f600");
        let names = [
            "a b",
            "a_b",
            "a__b",
            "__a",
            "a-b",
            "a_0000_20b",
            "1",
            "_1",
            "a.b",
        ];
        let escaped: HashSet<String> = names.iter().map(|n| escape_name(n)).collect();
        assert_eq!(escaped.len(), names.len());
        let re = |s: &str| {
            let b = s.as_bytes();
            (b[0].is_ascii_alphabetic() || b[0] == b'_')
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        };
        for e in &escaped {
            assert!(re(e), "{e} is not a valid Avro name");
        }
    }

    #[test]
    fn decimals_round_trip_with_scale() {
        for (text, scale) in [
            ("0.00", 2),
            ("-0.01", 2),
            ("12345.678000000000000000000000000000", 30),
            (
                "99999999999999999999999999999999999.999999999999999999999999999999",
                30,
            ),
            (
                "-99999999999999999999999999999999999.999999999999999999999999999999",
                30,
            ),
            ("18446744073709551615", 0),
            ("-128", 0),
            ("127", 0),
        ] {
            let b = decimal_to_bytes(text, scale).unwrap();
            assert_eq!(decimal_from_bytes(&b, scale), text);
        }
        assert_eq!(
            decimal_to_bytes("1.5", 3)
                .map(|b| decimal_from_bytes(&b, 3))
                .unwrap(),
            "1.500"
        );
        assert!(decimal_to_bytes("1.234", 2).is_err());
        assert!(decimal_to_bytes("abc", 2).is_err());
    }

    #[test]
    fn fixed_schemas_are_self_contained() {
        for avsc in [
            SCHEMA_CHANGE_AVSC,
            HEARTBEAT_AVSC,
            SNAPSHOT_MARKER_AVSC,
            CHUNK_END_AVSC,
            SOURCE_AVSC,
            TRANSACTION_AVSC,
        ] {
            let j = fixed_schema_json(avsc);
            Schema::parse_str(&j).unwrap_or_else(|e| panic!("{e}: {j}"));
        }
    }

    #[test]
    fn long_encoding_matches_spec_examples() {
        let enc = |n| {
            let mut b = Vec::new();
            put_long(&mut b, n);
            b
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(-1), [0x01]);
        assert_eq!(enc(1), [0x02]);
        assert_eq!(enc(-64), [0x7f]);
        assert_eq!(enc(64), [0x80, 0x01]);
        assert_eq!(
            enc(i64::MIN),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }
}
