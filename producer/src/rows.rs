//! Row images: the rows of a WRITE/UPDATE/DELETE_ROWS event, decoded straight into Continuum's
//! [`Row`]s.
//!
//! Why not `RowsEvent::rows` from mysql_common: its `BinlogRow` builds a `Column` with six
//! reference-counted names for every column of every row image, and reads the TABLE_MAP's
//! optional metadata again for each image. In the producer-alone phase of the 1M bench that was
//! the largest part of the producer's allocations (malloc and free took about 30% of its CPU).
//! This module walks the same bytes with the crate's own value decoder (`BinlogValue` as
//! `MyDeserialize`), with each column's type, metadata and signedness read once per TABLE_MAP
//! into a [`RowLayout`].
//!
//! Guarantees: a row image is accepted only when it holds every column of the table
//! (`binlog_row_image=FULL`); anything else, and any byte the decoder cannot read, is an error
//! naming the table, never a row with a missing value. The values are converted by
//! [`shape::convert_binlog`], the one conversion the producer has.

use mysql_async::binlog::events::{OptionalMetaExtractor, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType as MyType;
use mysql_common::io::ParseBuf;

use continuum_schemas::{Row, TableSchema};

use crate::error::ProducerError;
use crate::shape;

/// How to read each column of a table from a row image: what the TABLE_MAP says of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RowLayout {
    columns: Vec<ColumnLayout>,
}

#[derive(Debug, Clone, PartialEq)]
struct ColumnLayout {
    ty: MyType,
    meta: Vec<u8>,
    unsigned: bool,
}

impl RowLayout {
    /// The layout a TABLE_MAP event describes (its column types, their metadata, and the
    /// signedness from its optional metadata).
    pub fn from_table_map(tme: &TableMapEvent<'_>) -> Result<Self, String> {
        let meta = OptionalMetaExtractor::new(tme.iter_optional_meta())
            .map_err(|e| format!("unreadable TABLE_MAP metadata: {e}"))?;
        let mut signedness = meta.iter_signedness();
        let n = tme.columns_count() as usize;
        let mut columns = Vec::with_capacity(n);
        for i in 0..n {
            let ty = tme
                .get_column_type(i)
                .map_err(|e| format!("column {i}: {e}"))?
                .ok_or_else(|| format!("column {i}: no type"))?;
            let unsigned = ty.is_numeric_type() && signedness.next().unwrap_or(false);
            columns.push(ColumnLayout {
                ty,
                meta: tme.get_column_metadata(i).unwrap_or(&[]).to_vec(),
                unsigned,
            });
        }
        Ok(RowLayout { columns })
    }

    #[cfg(test)]
    fn new(columns: Vec<(MyType, Vec<u8>, bool)>) -> Self {
        RowLayout {
            columns: columns
                .into_iter()
                .map(|(ty, meta, unsigned)| ColumnLayout { ty, meta, unsigned })
                .collect(),
        }
    }

    /// Reads one row image from the front of `buf`: the null bitmap of the columns `present`
    /// names, then each present, non-null value. `present` is the event's column bitmap, one
    /// flag per column of the table.
    pub fn read_image<'a>(
        &'a self,
        t: &TableSchema,
        present: &[bool],
        buf: &mut ParseBuf<'a>,
    ) -> Result<Row, ProducerError> {
        let undecodable = |what: String| {
            ProducerError::Binlog(format!(
                "undecodable row image of {}: {what}",
                t.qualified_name()
            ))
        };
        let count = present.iter().filter(|p| **p).count();
        if present.len() != self.columns.len()
            || count != self.columns.len()
            || t.columns.len() != self.columns.len()
        {
            return Err(ProducerError::Preflight {
                setting: "binlog_row_image".into(),
                expected: "FULL".into(),
                actual: format!(
                    "a row image of {} with {count} of its {} columns",
                    t.qualified_name(),
                    t.columns.len()
                ),
                fix: "SET GLOBAL binlog_row_image=FULL on the source and restart the producer with --resnapshot".into(),
            });
        }
        let nulls: &[u8] = buf
            .parse(count.div_ceil(8))
            .map_err(|e| undecodable(format!("null bitmap: {e}")))?;
        let mut row = Vec::with_capacity(count);
        for (i, c) in self.columns.iter().enumerate() {
            let is_null = nulls[i / 8] & (1 << (i % 8)) != 0;
            let v = if is_null {
                None
            } else {
                let ctx = (c.ty, &c.meta[..], c.unsigned, false);
                Some(
                    buf.parse::<BinlogValue<'_>>(ctx)
                        .map_err(|e| undecodable(format!("column {}: {e}", t.columns[i].name)))?,
                )
            };
            row.push(shape::convert_binlog(t, i, v)?);
        }
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use continuum_schemas::Value;

    fn table() -> TableSchema {
        TableSchema::parse(
            "d",
            "t",
            &["id int", "v varchar null", "n int unsigned null"],
            &["id"],
        )
        .unwrap()
    }

    fn layout() -> RowLayout {
        RowLayout::new(vec![
            (MyType::MYSQL_TYPE_LONG, vec![], false),
            (MyType::MYSQL_TYPE_VARCHAR, vec![40, 0], false),
            (MyType::MYSQL_TYPE_LONG, vec![], true),
        ])
    }

    #[test]
    fn reads_consecutive_images_with_nulls() {
        // Image 1: (-2, 'ab', 4294967295). Image 2: (7, NULL, NULL).
        let mut bytes = vec![0b000];
        bytes.extend((-2i32).to_le_bytes());
        bytes.extend([2, b'a', b'b']);
        bytes.extend(u32::MAX.to_le_bytes());
        bytes.push(0b110);
        bytes.extend(7i32.to_le_bytes());
        let mut buf = ParseBuf(&bytes);
        let t = table();
        let all = [true, true, true];
        let layout = layout();
        let first = layout.read_image(&t, &all, &mut buf).unwrap();
        assert_eq!(
            first,
            vec![
                Value::Int(-2),
                Value::Text("ab".into()),
                Value::Int(u32::MAX as i64)
            ]
        );
        let second = layout.read_image(&t, &all, &mut buf).unwrap();
        assert_eq!(second, vec![Value::Int(7), Value::Null, Value::Null]);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_partial_image_is_refused_naming_the_setting() {
        let bytes = [0u8, 1, 0, 0, 0];
        let layout = layout();
        let e = layout
            .read_image(&table(), &[true, false, false], &mut ParseBuf(&bytes))
            .unwrap_err();
        assert!(e.to_string().contains("binlog_row_image"), "{e}");
    }

    #[test]
    fn a_truncated_image_is_an_error_naming_the_table_and_column() {
        let bytes = [0u8, 1, 0];
        let layout = layout();
        let e = layout
            .read_image(&table(), &[true, true, true], &mut ParseBuf(&bytes))
            .unwrap_err();
        let e = e.to_string();
        assert!(e.contains("d.t") && e.contains("column id"), "{e}");
    }
}
