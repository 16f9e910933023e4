//! Round trips through the real local registry (`SF_REGISTRY`, written to `.stack/env` by
//! `make up`): every row of the mapping table in the crate docs, schema evolution, a stock Avro
//! reader, and every malformed-input error.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use apache_avro::types::Value as AvroValue;
use continuum_schemas::types::{BlobKind, Date, DateTime, IntWidth, TextKind};
use continuum_schemas::{
    avro, BinlogPosition, ChangeEvent, CodecError, Column, ColumnType, Decoder, Encoder, Gtid,
    GtidPosition, Op, RecordAt, Registry, RegistrySettings, SourceInfo, StreamRecord, TableSchema,
    TxPlace, Value,
};

fn registry_url() -> String {
    std::env::var("SF_REGISTRY")
        .expect("SF_REGISTRY is not set: run `make test`, or `make up` and `. .stack/env` first")
}

fn registry() -> Registry {
    Registry::new(&RegistrySettings {
        url: registry_url(),
        ..Default::default()
    })
    .unwrap()
}

/// A topic name no other test run uses, so subjects never collide.
fn unique_topic(name: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test.{name}.{n}")
}

fn at(topic: &str, offset: i64) -> RecordAt {
    RecordAt {
        topic: topic.to_owned(),
        partition: 0,
        offset,
    }
}

fn table(name: &str, ty: ColumnType) -> Arc<TableSchema> {
    let v = format!("v {} null", ty.sql());
    Arc::new(TableSchema::parse("roundtrip", name, &["id int", &v], &["id"]).unwrap())
}

fn source() -> SourceInfo {
    SourceInfo {
        server_id: 1,
        gtid: Some(Gtid::new(1, 1, 42)),
        gtid_position: "1-1-42,2-2-7".parse().unwrap(),
        resume_position: "1-1-41,2-2-7".parse().unwrap(),
        binlog: BinlogPosition::new("sf-bin.000001", 1234),
        commit_ts_ms: 1_700_000_000_000,
        snapshot_id: None,
    }
}

fn change(t: &Arc<TableSchema>, id: i64, v: Value) -> StreamRecord {
    StreamRecord::Change(ChangeEvent {
        op: Op::Insert,
        table: t.clone(),
        before: None,
        after: Some(vec![Value::Int(id), v]),
        source: source(),
        tx: Some(TxPlace {
            index: id as u64,
            last: false,
        }),
    })
}

async fn round_trip(topic: &str, t: &Arc<TableSchema>, values: Vec<Value>) {
    let reg = registry();
    let mut enc = Encoder::new(reg.clone(), topic);
    let mut dec = Decoder::new(reg);
    for (i, v) in values.into_iter().enumerate() {
        let rec = change(t, i as i64, v.clone());
        let e = enc.encode(&rec, 5).await.unwrap();
        let back = dec
            .decode(&at(topic, i as i64), e.key.as_deref(), &e.value)
            .await
            .unwrap_or_else(|err| panic!("{}: {v:?}: {err}", t.table));
        let StreamRecord::Change(c) = back else {
            panic!("decoded a {:?}", back.kind())
        };
        let got = &c.after.as_ref().unwrap()[1];
        match (&v, got) {
            (Value::Float(a), Value::Float(b)) if a.is_nan() => assert!(b.is_nan()),
            (Value::Double(a), Value::Double(b)) if a.is_nan() => assert!(b.is_nan()),
            _ => assert_eq!(got, &v, "{} {}", t.table, t.columns[1].ty),
        }
        assert_eq!(
            c.table.columns, t.columns,
            "shape read back from the registry"
        );
        assert_eq!(c.table.primary_key, t.primary_key);
        assert_eq!(c.source, source());
        assert_eq!(
            c.tx,
            Some(TxPlace {
                index: i as u64,
                last: false
            })
        );
    }
}

fn int(width: IntWidth, unsigned: bool) -> ColumnType {
    ColumnType::Integer { width, unsigned }
}

#[tokio::test]
async fn integers_keep_their_extremes() {
    let topic = unique_topic("ints");
    for (name, width) in [
        ("tinyint", IntWidth::Tiny),
        ("smallint", IntWidth::Small),
        ("mediumint", IntWidth::Medium),
        ("int", IntWidth::Int),
        ("bigint", IntWidth::Big),
    ] {
        let (lo, hi) = width.range(false);
        round_trip(
            &topic,
            &table(name, int(width, false)),
            vec![
                Value::Int(lo as i64),
                Value::Int(hi as i64),
                Value::Int(0),
                Value::Null,
            ],
        )
        .await;
        if width == IntWidth::Big {
            continue;
        }
        let (_, uhi) = width.range(true);
        round_trip(
            &topic,
            &table(&format!("{name}_unsigned"), int(width, true)),
            vec![Value::Int(0), Value::Int(uhi as i64), Value::Null],
        )
        .await;
    }
    round_trip(
        &topic,
        &table("bigint_unsigned", int(IntWidth::Big, true)),
        vec![
            Value::UInt(0),
            Value::UInt(18_446_744_073_709_551_615),
            Value::UInt(1 << 63),
            Value::Null,
        ],
    )
    .await;
    // BOOL is TINYINT(1): 2 is a legal value and must survive.
    round_trip(
        &topic,
        &table("bool", int(IntWidth::Tiny, false)),
        vec![Value::Int(0), Value::Int(1), Value::Int(2), Value::Null],
    )
    .await;
}

/// Round-trips each `(table name, column type, values)` in topic `topic`.
async fn round_trip_each(topic: &str, cases: Vec<(&str, ColumnType, Vec<Value>)>) {
    for (name, ty, values) in cases {
        round_trip(topic, &table(name, ty), values).await;
    }
}

#[tokio::test]
async fn decimals_floats_and_bits_are_exact() {
    let topic = unique_topic("exact");
    let max65 = format!("{}.{}", "9".repeat(35), "9".repeat(30));
    let dec = |s: &str| Value::Decimal(s.into());
    let decimal = |precision, scale| ColumnType::Decimal { precision, scale };
    round_trip_each(
        &topic,
        vec![
            (
                "dec65_30",
                decimal(65, 30),
                vec![
                    dec(&max65),
                    dec(&format!("-{max65}")),
                    dec(&format!("0.{}1", "0".repeat(29))),
                    dec(&format!("0.{}", "0".repeat(30))),
                    Value::Null,
                ],
            ),
            (
                "dec10_0",
                decimal(10, 0),
                vec![dec("9999999999"), dec("-9999999999")],
            ),
            (
                "float",
                ColumnType::Float,
                vec![
                    Value::Float(f32::MAX),
                    Value::Float(f32::MIN),
                    Value::Float(f32::MIN_POSITIVE),
                    Value::Float(-0.0),
                    Value::Float(1.5),
                    Value::Null,
                ],
            ),
            (
                "double",
                ColumnType::Double,
                vec![
                    Value::Double(f64::MAX),
                    Value::Double(f64::MIN),
                    Value::Double(f64::MIN_POSITIVE),
                    Value::Double(std::f64::consts::PI),
                    Value::Null,
                ],
            ),
            (
                "bit1",
                ColumnType::Bit { bits: 1 },
                vec![Value::Bytes(vec![0]), Value::Bytes(vec![1]), Value::Null],
            ),
            (
                "bit64",
                ColumnType::Bit { bits: 64 },
                vec![
                    Value::Bytes(vec![0xff; 8]),
                    Value::Bytes(vec![0; 8]),
                    Value::Null,
                ],
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn dates_and_times_keep_microseconds_and_zero_values() {
    let topic = unique_topic("time");
    let d = |s: &str| Value::Date(s.parse::<Date>().unwrap());
    let dt = |s: &str| Value::DateTime(s.parse::<DateTime>().unwrap());
    round_trip(
        &topic,
        &table("year", ColumnType::Year),
        vec![
            Value::Int(1901),
            Value::Int(2155),
            Value::Int(0),
            Value::Null,
        ],
    )
    .await;
    round_trip(
        &topic,
        &table("date", ColumnType::Date),
        vec![
            d("1000-01-01"),
            d("9999-12-31"),
            d("1970-01-01"),
            d("0000-00-00"),
            d("2024-00-15"),
            d("2024-02-00"),
            Value::Null,
        ],
    )
    .await;
    let max = ((838 * 3600 + 59 * 60 + 59) * 1_000_000) + 999_999;
    for fsp in 0..=6u8 {
        let (datetime, timestamp, time) = (
            format!("datetime{fsp}"),
            format!("timestamp{fsp}"),
            format!("time{fsp}"),
        );
        round_trip_each(
            &topic,
            vec![
                (
                    &datetime,
                    ColumnType::DateTime { fsp },
                    vec![
                        dt("1000-01-01 00:00:00"),
                        dt("9999-12-31 23:59:59.999999"),
                        dt("2024-01-02 03:04:05.678901"),
                        dt("0000-00-00 00:00:00"),
                        dt("2024-00-00 12:00:00.5"),
                        Value::Null,
                    ],
                ),
                (
                    &timestamp,
                    ColumnType::Timestamp { fsp },
                    vec![
                        Value::Timestamp(1_000_000),             // 1970-01-01 00:00:01 UTC
                        Value::Timestamp(2_147_483_647_999_999), // 2038-01-19 03:14:07.999999 UTC
                        Value::Timestamp(0),                     // the zero timestamp
                        Value::Null,
                    ],
                ),
                (
                    &time,
                    ColumnType::Time { fsp },
                    vec![
                        Value::Time(max),
                        Value::Time(-max),
                        Value::Time(25 * 3_600_000_000),
                        Value::Time(-1),
                        Value::Null,
                    ],
                ),
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn strings_and_bytes_survive_exactly() {
    let topic = unique_topic("strings");
    for kind in [
        TextKind::Char,
        TextKind::VarChar,
        TextKind::TinyText,
        TextKind::Text,
        TextKind::MediumText,
        TextKind::LongText,
    ] {
        round_trip(
            &topic,
            &table(
                &format!("{kind:?}").to_lowercase(),
                ColumnType::Text { kind },
            ),
            vec![
                Value::Text(String::new()),
                Value::Text("héllo 😀 𝄞 中文".into()),
                Value::Text("quote ' backslash \\ nul \0".into()),
                Value::Null,
            ],
        )
        .await;
    }
    let not_utf8 = vec![0xff, 0xfe, 0x00, 0xc3, 0x28];
    for kind in [
        BlobKind::VarBinary,
        BlobKind::TinyBlob,
        BlobKind::Blob,
        BlobKind::MediumBlob,
        BlobKind::LongBlob,
    ] {
        round_trip(
            &topic,
            &table(
                &format!("{kind:?}").to_lowercase(),
                ColumnType::Blob { kind },
            ),
            vec![
                Value::Bytes(vec![]),
                Value::Bytes(not_utf8.clone()),
                Value::Null,
            ],
        )
        .await;
    }
    // POINT(1 2) with SRID 4326, as MariaDB stores it.
    let point = [
        &[0xe6, 0x10, 0, 0][..],
        &[1, 1, 0, 0, 0],
        &1.0f64.to_le_bytes(),
        &2.0f64.to_le_bytes(),
    ]
    .concat();
    let uuid = vec![
        0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x55, 0x44, 0, 0,
    ];
    let text = |s: &str| Value::Text(s.into());
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cases = [
        (
            "binary16",
            ColumnType::Binary { len: 16 },
            vec![
                Value::Bytes(vec![0; 16]),
                Value::Bytes((0..16).collect()),
                Value::Null,
            ],
        ),
        // INET4, INET6, UUID travel as BINARY(4) / BINARY(16).
        (
            "inet4",
            ColumnType::Binary { len: 4 },
            vec![Value::Bytes(vec![10, 0, 0, 1])],
        ),
        (
            "uuid",
            ColumnType::Binary { len: 16 },
            vec![Value::Bytes(uuid)],
        ),
        (
            "enum",
            ColumnType::Enum {
                values: names(&["x", "y z", "it's"]),
            },
            vec![text("y z"), text("it's"), text(""), Value::Null],
        ),
        (
            "set",
            ColumnType::Set {
                values: names(&["a", "b", "c"]),
            },
            vec![text("a,c"), text(""), Value::Null],
        ),
        (
            "json",
            ColumnType::Text {
                kind: TextKind::LongText,
            },
            vec![text(r#"{"a": [1, 2.5, "ü"], "b": null}"#)],
        ),
        (
            "geometry",
            ColumnType::Geometry,
            vec![Value::Bytes(point), Value::Null],
        ),
    ];
    for (name, ty, values) in cases {
        round_trip(&topic, &table(name, ty), values).await;
    }
}

#[tokio::test]
async fn a_16_mib_blob_round_trips() {
    let topic = unique_topic("bigblob");
    let blob: Vec<u8> = (0..16 * 1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    round_trip(
        &topic,
        &table(
            "longblob",
            ColumnType::Blob {
                kind: BlobKind::LongBlob,
            },
        ),
        vec![Value::Bytes(blob)],
    )
    .await;
}

/// Fetches a schema with plain HTTP and decodes with the stock `apache-avro` reader: none of
/// our codec is involved on the reading side.
#[tokio::test]
async fn a_stock_reader_decodes_our_bytes_with_the_registry_schema_alone() {
    let topic = unique_topic("stock");
    let t = Arc::new(TableSchema {
        db: "shop".into(),
        table: "order items".into(),
        columns: vec![
            Column {
                name: "id".into(),
                ty: int(IntWidth::Big, true),
                nullable: false,
            },
            Column {
                name: "price".into(),
                ty: ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
                nullable: false,
            },
            Column {
                name: "when".into(),
                ty: ColumnType::DateTime { fsp: 6 },
                nullable: true,
            },
            Column {
                name: "note text".into(),
                ty: ColumnType::Text {
                    kind: TextKind::VarChar,
                },
                nullable: true,
            },
            Column {
                name: "at".into(),
                ty: ColumnType::Timestamp { fsp: 3 },
                nullable: false,
            },
        ],
        primary_key: vec![0],
    });
    let rec = StreamRecord::Change(ChangeEvent {
        op: Op::Update,
        table: t.clone(),
        before: Some(vec![
            Value::UInt(u64::MAX),
            Value::Decimal("12.30".into()),
            Value::Null,
            Value::Null,
            Value::Timestamp(1_000),
        ]),
        after: Some(vec![
            Value::UInt(u64::MAX),
            Value::Decimal("-0.05".into()),
            Value::DateTime("2024-05-06 07:08:09.123456".parse().unwrap()),
            Value::Text("ok 😀".into()),
            Value::Timestamp(1_700_000_000_123_000),
        ]),
        source: source(),
        tx: Some(TxPlace {
            index: 3,
            last: true,
        }),
    });
    let mut enc = Encoder::new(registry(), &topic);
    let e = enc.encode(&rec, 77).await.unwrap();
    let id = u32::from_be_bytes(e.value[1..5].try_into().unwrap());
    let body: serde_json::Value = reqwest::get(format!("{}/schemas/ids/{id}", registry_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema = apache_avro::Schema::parse_str(body["schema"].as_str().unwrap()).unwrap();
    let mut payload = &e.value[5..];
    let decoded = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .unwrap()
        .read_value(&mut payload)
        .unwrap();
    assert!(payload.is_empty());
    let AvroValue::Record(fields) = decoded else {
        panic!()
    };
    let get =
        |r: &[(String, AvroValue)], n: &str| r.iter().find(|(k, _)| k == n).unwrap().1.clone();
    let AvroValue::Union(1, after) = get(&fields, "after") else {
        panic!("after is not set")
    };
    let AvroValue::Record(after) = *after else {
        panic!()
    };
    let AvroValue::Decimal(id_dec) = get(&after, "id") else {
        panic!()
    };
    assert_eq!(
        Vec::<u8>::try_from(id_dec).unwrap(),
        vec![0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
    );
    let AvroValue::Decimal(price) = get(&after, "price") else {
        panic!()
    };
    assert_eq!(Vec::<u8>::try_from(price).unwrap(), vec![0xfb], "-5 cents");
    assert_eq!(
        get(&after, "when"),
        AvroValue::Union(
            1,
            Box::new(AvroValue::LocalTimestampMicros(1_714_979_289_123_456))
        )
    );
    assert_eq!(
        get(&after, "__note_000020text"),
        AvroValue::Union(1, Box::new(AvroValue::String("ok 😀".into())))
    );
    assert_eq!(
        get(&after, "at"),
        AvroValue::TimestampMicros(1_700_000_000_123_000)
    );
    assert_eq!(get(&fields, "op"), AvroValue::String("u".into()));
    assert_eq!(get(&fields, "ts_ms"), AvroValue::Long(77));
    let AvroValue::Record(src) = get(&fields, "source") else {
        panic!()
    };
    assert_eq!(
        get(&src, "gtid"),
        AvroValue::Union(1, Box::new(AvroValue::String("1-1-42".into())))
    );
    assert_eq!(
        get(&src, "gtid_position"),
        AvroValue::String("1-1-42,2-2-7".into())
    );
    assert_eq!(
        get(&src, "table"),
        AvroValue::Union(1, Box::new(AvroValue::String("order items".into())))
    );
    let AvroValue::Union(1, tx) = get(&fields, "transaction") else {
        panic!()
    };
    assert_eq!(
        *tx,
        AvroValue::Record(vec![
            ("id".into(), AvroValue::String("1-1-42".into())),
            ("index".into(), AvroValue::Long(3)),
            ("last".into(), AvroValue::Boolean(true)),
        ])
    );
    // The generated envelope embeds the fixed .avsc parts exactly.
    let env: serde_json::Value = serde_json::from_str(&avro::table_schemas(&t).value_json).unwrap();
    let src_field = env["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "source")
        .unwrap();
    let source_avsc: serde_json::Value = serde_json::from_str(avro::SOURCE_AVSC).unwrap();
    assert_eq!(src_field["type"], source_avsc);
    let tx_field = env["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "transaction")
        .unwrap();
    let tx_avsc: serde_json::Value = serde_json::from_str(avro::TRANSACTION_AVSC).unwrap();
    assert_eq!(tx_field["type"][1], tx_avsc);
}

/// The precomputed writer produces exactly the bytes `apache-avro`'s own writer produces.
#[tokio::test]
async fn precomputed_writer_matches_apache_avro_writer() {
    let t = table("cmp", ColumnType::Date);
    let schemas = avro::table_schemas(&t);
    let schema = apache_avro::Schema::parse_str(&schemas.value_json).unwrap();
    let ev = ChangeEvent {
        op: Op::Delete,
        table: t.clone(),
        before: Some(vec![
            Value::Int(-7),
            Value::Date("0000-00-00".parse().unwrap()),
        ]),
        after: None,
        source: SourceInfo {
            snapshot_id: Some("s1".into()),
            gtid: None,
            ..source()
        },
        tx: None,
    };
    let mut ours = Vec::new();
    avro::write_envelope(&mut ours, "topic", &ev, 99, &mut Default::default()).unwrap();
    let s = |v: &str| AvroValue::String(v.into());
    let reference = AvroValue::Record(vec![
        (
            "before".into(),
            AvroValue::Union(
                1,
                Box::new(AvroValue::Record(vec![
                    ("id".into(), AvroValue::Int(-7)),
                    ("v".into(), AvroValue::Union(2, Box::new(s("0000-00-00")))),
                ])),
            ),
        ),
        (
            "after".into(),
            AvroValue::Union(0, Box::new(AvroValue::Null)),
        ),
        (
            "source".into(),
            AvroValue::Record(vec![
                ("version".into(), s(avro::VERSION)),
                ("connector".into(), s("continuum")),
                ("name".into(), s("topic")),
                ("server_id".into(), AvroValue::Long(1)),
                (
                    "gtid".into(),
                    AvroValue::Union(0, Box::new(AvroValue::Null)),
                ),
                ("gtid_position".into(), s("1-1-42,2-2-7")),
                ("resume_position".into(), s("1-1-41,2-2-7")),
                ("file".into(), s("sf-bin.000001")),
                ("pos".into(), AvroValue::Long(1234)),
                ("ts_ms".into(), AvroValue::Long(1_700_000_000_000)),
                ("db".into(), s("roundtrip")),
                ("table".into(), AvroValue::Union(1, Box::new(s("cmp")))),
                ("snapshot".into(), AvroValue::Boolean(true)),
                ("snapshot_id".into(), AvroValue::Union(1, Box::new(s("s1")))),
            ]),
        ),
        ("op".into(), s("d")),
        ("ts_ms".into(), AvroValue::Long(99)),
        (
            "transaction".into(),
            AvroValue::Union(0, Box::new(AvroValue::Null)),
        ),
    ]);
    let theirs = avro::encode_with_apache(&schema, reference).unwrap();
    assert_eq!(ours, theirs);
}

#[tokio::test]
async fn schema_evolution_registers_versions_and_old_records_still_decode() {
    let topic = unique_topic("evolve");
    let reg = registry();
    let mut enc = Encoder::new(reg.clone(), &topic);
    // A table name of its own: a registry gives identical schema texts the same id across
    // subjects, so reruns must not reuse texts, or the versions would not be new.
    let name = topic.replace('.', "_");
    let v1 = table(
        &name,
        ColumnType::Text {
            kind: TextKind::VarChar,
        },
    );
    let mut add = (*v1).clone();
    add.columns.push(Column {
        name: "added".into(),
        ty: ColumnType::Double,
        nullable: true,
    });
    let add = Arc::new(add);
    let mut drop = (*add).clone();
    drop.columns.remove(1);
    let drop = Arc::new(drop);
    let mut modify = (*drop).clone();
    modify.columns[1].ty = ColumnType::Decimal {
        precision: 12,
        scale: 4,
    };
    let modify = Arc::new(modify);

    let rows = [
        (v1.clone(), vec![Value::Int(1), Value::Text("one".into())]),
        (
            add.clone(),
            vec![Value::Int(2), Value::Text("two".into()), Value::Double(2.5)],
        ),
        (drop.clone(), vec![Value::Int(3), Value::Double(3.5)]),
        (
            modify.clone(),
            vec![Value::Int(4), Value::Decimal("4.1234".into())],
        ),
    ];
    let mut encoded = Vec::new();
    let mut ids = Vec::new();
    for (t, row) in &rows {
        let rec = StreamRecord::Change(ChangeEvent {
            op: Op::Insert,
            table: t.clone(),
            before: None,
            after: Some(row.clone()),
            source: source(),
            tx: Some(TxPlace {
                index: 0,
                last: true,
            }),
        });
        let e = enc.encode(&rec, 1).await.unwrap();
        ids.push(u32::from_be_bytes(e.value[1..5].try_into().unwrap()));
        encoded.push(e);
    }
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        4,
        "each shape is a new schema version: {ids:?}"
    );
    let subject = avro::subject(&topic, &format!("roundtrip.{name}.Envelope"));
    let versions: Vec<u32> =
        reqwest::get(format!("{}/subjects/{subject}/versions", registry_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(versions.len(), 4, "four versions under {subject}");

    // A fresh decoder (no cache) reads every version, oldest first and newest first.
    for order in [vec![0, 1, 2, 3], vec![3, 2, 1, 0]] {
        let mut dec = Decoder::new(registry());
        for i in order {
            let e = &encoded[i];
            let StreamRecord::Change(c) = dec
                .decode(&at(&topic, i as i64), e.key.as_deref(), &e.value)
                .await
                .unwrap()
            else {
                panic!()
            };
            assert_eq!(c.after.as_ref().unwrap(), &rows[i].1);
            assert_eq!(c.table.columns, rows[i].0.columns);
        }
    }
    // Encoding the first shape again reuses its id: the cache is keyed by shape, not subject.
    let again = enc
        .encode(&change(&v1, 9, Value::Text("again".into())), 1)
        .await
        .unwrap();
    assert_eq!(
        u32::from_be_bytes(again.value[1..5].try_into().unwrap()),
        ids[0]
    );
}

#[tokio::test]
async fn malformed_records_give_fatal_errors_that_name_the_position() {
    let topic = unique_topic("malformed");
    let reg = registry();
    let t = table(
        "bad",
        ColumnType::Text {
            kind: TextKind::VarChar,
        },
    );
    let mut enc = Encoder::new(reg.clone(), &topic);
    let good = enc
        .encode(&change(&t, 1, Value::Text("x".into())), 1)
        .await
        .unwrap();
    let mut dec = Decoder::new(reg);
    let pos = at(&topic, 17);

    // Wrong magic byte.
    let mut bad = good.value.clone();
    bad[0] = 1;
    let e = dec
        .decode(&pos, good.key.as_deref(), &bad)
        .await
        .unwrap_err();
    assert!(matches!(e, CodecError::BadMagic { found: 1, .. }), "{e}");
    assert!(e.to_string().contains(&format!("{topic}[0]@17")), "{e}");
    assert!(!e.is_transient());

    // Too short for a header.
    let e = dec
        .decode(&pos, good.key.as_deref(), &[0, 0, 1])
        .await
        .unwrap_err();
    assert!(matches!(e, CodecError::TooShort { len: 3, .. }), "{e}");

    // Unknown schema id.
    let mut unknown = good.value.clone();
    unknown[1..5].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
    let e = dec
        .decode(&pos, good.key.as_deref(), &unknown)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            CodecError::UnknownSchemaId {
                id: 0x7fff_fff0,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("@17"), "{e}");
    assert!(!e.is_transient());

    // Truncated Avro body.
    let cut = &good.value[..good.value.len() - 3];
    let e = dec
        .decode(&pos, good.key.as_deref(), cut)
        .await
        .unwrap_err();
    assert!(matches!(e, CodecError::Undecodable { .. }), "{e}");

    // Trailing garbage after a complete record.
    let mut long = good.value.clone();
    long.extend_from_slice(&[1, 2, 3]);
    let e = dec
        .decode(&pos, good.key.as_deref(), &long)
        .await
        .unwrap_err();
    assert!(
        matches!(e, CodecError::Undecodable { ref reason, .. } if reason.contains("left over")),
        "{e}"
    );

    // Row change without a key.
    let e = dec.decode(&pos, None, &good.value).await.unwrap_err();
    assert!(e.to_string().contains("has no key"), "{e}");

    // A value that does not fit its column is refused at encode time, naming the column.
    let e = enc
        .encode(&change(&t, 1, Value::Int(5)), 1)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("column 'v'"), "{e}");
}

#[tokio::test]
async fn control_records_round_trip() {
    use continuum_schemas::{
        ChunkEnd, Heartbeat, KeyPart, SchemaChange, SnapshotMarker, SnapshotPhase,
    };
    let topic = unique_topic("control");
    let reg = registry();
    let mut enc = Encoder::new(reg.clone(), &topic);
    let mut dec = Decoder::new(reg);
    let pos: GtidPosition = "1-1-9,2-2-3".parse().unwrap();
    let records = [
        StreamRecord::Heartbeat(Heartbeat {
            server_id: 1,
            position: pos.clone(),
            ts_ms: 123,
        }),
        StreamRecord::Snapshot(SnapshotMarker {
            snapshot_id: "snap-1".into(),
            phase: SnapshotPhase::Start,
            server_id: 1,
            position: pos.clone(),
            tables: vec!["a.b".into(), "c.d e".into()],
            ts_ms: 5,
        }),
        StreamRecord::Snapshot(SnapshotMarker {
            snapshot_id: "snap-1".into(),
            phase: SnapshotPhase::End,
            server_id: 1,
            position: pos.clone(),
            tables: vec![],
            ts_ms: 6,
        }),
        // A chunk's end: a closed range of a composite key, and an open one.
        StreamRecord::ChunkEnd(ChunkEnd {
            snapshot_id: "r3-19af".into(),
            server_id: 1,
            table: "shop.order lines".into(),
            position: pos.clone(),
            rows: 2,
            key: vec!["order".into(), "ü".into()],
            from: Some(vec![KeyPart::Int(-4), KeyPart::Bytes("00ff61".into())]),
            to: Some(vec![
                KeyPart::Uint(u64::MAX),
                KeyPart::Date([2026, 12, 7, 3, 4, 5, 6]),
            ]),
            ts_ms: 7,
        }),
        StreamRecord::ChunkEnd(ChunkEnd {
            snapshot_id: "r3-19af".into(),
            server_id: 1,
            table: "shop.t".into(),
            position: pos.clone(),
            rows: 0,
            key: vec!["id".into()],
            from: None,
            to: None,
            ts_ms: 8,
        }),
        StreamRecord::SchemaChange(SchemaChange {
            database: "shop".into(),
            ddl: "ALTER TABLE t ADD COLUMN `ü` INT".into(),
            source: source(),
            tx: TxPlace {
                index: 0,
                last: true,
            },
        }),
    ];
    // A table's definition at the start of a chunk of an incremental snapshot.
    let mut chunk_source = source();
    chunk_source.gtid = None;
    chunk_source.snapshot_id = Some("r3-19af".into());
    let definition = StreamRecord::SchemaChange(SchemaChange {
        database: "shop".into(),
        ddl: "CREATE TABLE IF NOT EXISTS `shop`.`t` (`id` int NOT NULL, PRIMARY KEY (`id`))".into(),
        source: chunk_source,
        tx: TxPlace {
            index: 1,
            last: false,
        },
    });
    assert_eq!(
        definition.position().to_string(),
        format!("chunk:r3-19af:1:more:{}", source().gtid_position)
    );
    let records: Vec<StreamRecord> = records.into_iter().chain([definition]).collect();
    for (i, r) in records.iter().enumerate() {
        let e = enc.encode(r, 8).await.unwrap();
        assert!(e.key.is_none());
        let back = dec
            .decode(&at(&topic, i as i64), None, &e.value)
            .await
            .unwrap();
        assert_eq!(&back, r);
    }
}

/// Writers that register the same subject at once (a mirror restarted while its predecessor's
/// request is still in flight, or two pipelines sharing a registry) all succeed with one id.
/// Apicurio answers a second concurrent `PUT /config/<subject>` with 409 "A rule named
/// 'COMPATIBILITY' already exists"; that stopped the chaos suite's mirror for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_of_one_subject_all_succeed() {
    for round in 0..5 {
        let topic = unique_topic("concurrent");
        let subject = format!("{topic}-Concurrent");
        let schema = format!(
            r#"{{"type":"record","name":"Concurrent","namespace":"{}","fields":[{{"name":"a","type":"long"}}]}}"#,
            topic.replace('.', "_")
        );
        let clients: Vec<Registry> = (0..8).map(|_| registry()).collect();
        let calls: Vec<_> = clients
            .into_iter()
            .map(|reg| {
                // A client of its own each: nothing cached between them.
                let (subject, schema) = (subject.clone(), schema.clone());
                tokio::spawn(async move { reg.register(&subject, &schema).await })
            })
            .collect();
        let mut ids = Vec::new();
        for c in calls {
            ids.push(
                c.await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("round {round}: {e}")),
            );
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "one id for one schema: {ids:?}");
    }
}

/// A chunk row of an incremental snapshot keeps its place in the chunk and its position; a read
/// with no GTID whose transaction names another id than its snapshot's does not decode.
#[tokio::test]
async fn chunk_rows_round_trip_with_their_place_and_a_wrong_id_is_refused() {
    use continuum_schemas::StreamPosition;
    let topic = unique_topic("chunk");
    let t = table(
        "chunked",
        ColumnType::Text {
            kind: TextKind::VarChar,
        },
    );
    let reg = registry();
    let mut enc = Encoder::new(reg.clone(), &topic);
    let mut dec = Decoder::new(reg);
    let chunk_row = |index: u64, last: bool, snapshot_id: &str| {
        let mut src = source();
        src.gtid = None;
        src.resume_position = src.gtid_position.clone();
        src.snapshot_id = Some(snapshot_id.into());
        StreamRecord::Change(ChangeEvent {
            op: Op::Read,
            table: t.clone(),
            before: None,
            after: Some(vec![Value::Int(index as i64), Value::Text("r".into())]),
            source: src,
            tx: Some(TxPlace { index, last }),
        })
    };
    for (i, last) in [(0u64, false), (1, true)] {
        let r = chunk_row(i, last, "r7-19a");
        let e = enc.encode(&r, 9).await.unwrap();
        let back = dec
            .decode(&at(&topic, i as i64), e.key.as_deref(), &e.value)
            .await
            .unwrap();
        assert_eq!(back, r);
        assert_eq!(
            back.position(),
            StreamPosition::Chunk {
                id: "r7-19a".into(),
                index: i,
                last,
                position: "1-1-42,2-2-7".parse().unwrap(),
            }
        );
    }
    // The transaction record carries the snapshot id: a record whose two ids disagree was not
    // written by the producer. The encoder writes the same id twice (the source's, then the
    // transaction's); change the last one.
    let e = enc.encode(&chunk_row(2, true, "r8-1"), 9).await.unwrap();
    let mut bytes = e.value.clone();
    let last = bytes
        .windows(4)
        .rposition(|w| w == b"r8-1")
        .expect("the id in the transaction record");
    bytes[last..last + 4].copy_from_slice(b"r7-1");
    let err = dec
        .decode(&at(&topic, 9), e.key.as_deref(), &bytes)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("only a snapshot read in a chunk has that"),
        "{err}"
    );
    assert!(dec
        .decode(&at(&topic, 10), e.key.as_deref(), &e.value)
        .await
        .is_ok());
}
