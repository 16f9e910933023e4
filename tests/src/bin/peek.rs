//! `peek`: print the records of a topic on the local stack, decoded. `make peek TOPIC=sf.cdc`
//! runs it with `.stack/env`.
//!
//! For each record: offset, timestamp, headers, then key and value. A key or value in
//! Confluent wire format (magic byte 0, schema id) is decoded with the writer's schema from the
//! site's registry and printed as JSON; anything else prints as text, or as hex when it is not
//! UTF-8. It reads up to the end of the partition as it was when it started, then exits. It uses
//! the workspace's own rdkafka, so it needs nothing installed.

use std::io::Write;
use std::time::Duration;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::Schema;
use clap::Parser;
use continuum_schemas::{Registry, RegistrySettings, RetryPolicy};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, Timestamp, TopicPartitionList};

#[derive(Parser)]
#[command(about = "Print the records of a topic on the local stack, decoded")]
struct Args {
    /// Topic to read.
    #[arg(long, short)]
    topic: String,
    /// Site whose cluster and registry to use (`sf` or `eu`): reads SF_BROKERS and SF_REGISTRY
    /// (or EU_...) from the environment (`. .stack/env`).
    #[arg(long, short, default_value = "sf")]
    site: String,
    /// Brokers, instead of <SITE>_BROKERS.
    #[arg(long)]
    brokers: Option<String>,
    /// Registry URL, instead of <SITE>_REGISTRY.
    #[arg(long)]
    registry: Option<String>,
    #[arg(long, default_value_t = 0)]
    partition: i32,
    /// First offset to print; negative counts back from the end (-10: the last ten records).
    #[arg(long, allow_negative_numbers = true)]
    from: Option<i64>,
    /// How many records to print at most (0: up to the end).
    #[arg(long, short = 'n', default_value_t = 20)]
    count: usize,
    /// Print keys and values as bytes, without decoding.
    #[arg(long)]
    raw: bool,
}

fn env_or(v: Option<String>, name: &str) -> Result<String, String> {
    v.or_else(|| std::env::var(name).ok())
        .ok_or_else(|| format!("{name} is not set: run `make peek TOPIC=...`, or `. .stack/env` first, or pass it as a flag"))
}

fn text_or_hex(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => format!("{s:?}"),
        _ => format!(
            "0x{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

async fn decode(reg: &Registry, b: &[u8]) -> String {
    if b.len() < 5 || b[0] != 0 {
        return text_or_hex(b);
    }
    let id = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
    let schema = match reg.schema_by_id(id).await {
        Ok(s) => s,
        Err(e) => return format!("[schema {id}: {e}] {}", text_or_hex(b)),
    };
    let schema = match Schema::parse_str(&schema) {
        Ok(s) => s,
        Err(e) => return format!("[schema {id} does not parse: {e}] {}", text_or_hex(b)),
    };
    let mut rest = &b[5..];
    match GenericDatumReader::builder(&schema)
        .build()
        .and_then(|r| r.read_value(&mut rest))
    {
        Ok(v) => match serde_json::Value::try_from(v) {
            Ok(j) => format!("[schema {id}] {j}"),
            Err(e) => format!("[schema {id}] (not representable as JSON: {e})"),
        },
        Err(e) => format!("[schema {id}: does not decode: {e}] {}", text_or_hex(b)),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run(Args::parse()).await {
        eprintln!("peek: {e}");
        std::process::exit(1);
    }
}

async fn run(a: Args) -> Result<(), String> {
    let site = a.site.to_uppercase();
    let brokers = env_or(a.brokers, &format!("{site}_BROKERS"))?;
    let registry = if a.raw {
        String::new()
    } else {
        env_or(a.registry, &format!("{site}_REGISTRY"))?
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "continuum-peek")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| format!("client for {brokers}: {e}"))?;
    let (low, high) = consumer
        .fetch_watermarks(&a.topic, a.partition, Duration::from_secs(10))
        .map_err(|e| format!("{}[{}] on {brokers}: {e}", a.topic, a.partition))?;
    let start = match a.from {
        None => low,
        Some(f) if f < 0 => (high + f).max(low),
        Some(f) => f.max(low),
    };
    let end = if a.count == 0 {
        high
    } else {
        high.min(start + a.count as i64)
    };
    eprintln!(
        "{}[{}] on {brokers}: offsets {low}..{high}; printing {start}..{end}",
        a.topic, a.partition
    );
    if start >= end {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&a.topic, a.partition, Offset::Offset(start))
        .map_err(|e| e.to_string())?;
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let reg = Registry::new(&RegistrySettings {
        url: registry,
        ..Default::default()
    })
    .map(|r| {
        r.with_retry(RetryPolicy {
            max_elapsed: Some(Duration::from_secs(10)),
        })
    })
    .ok();
    let mut out = std::io::stdout().lock();
    let mut next = start;
    let mut idle = 0;
    while next < end {
        let m = match consumer.poll(Duration::from_secs(1)) {
            Some(m) => m.map_err(|e| format!("reading {} at {next}: {e}", a.topic))?,
            None => {
                idle += 1;
                if idle >= 30 {
                    return Err(format!(
                        "no record at offset {next} of {} within 30s (end {end})",
                        a.topic
                    ));
                }
                continue;
            }
        };
        idle = 0;
        next = m.offset() + 1;
        let ts = match m.timestamp() {
            Timestamp::CreateTime(t) => format!("create {t}"),
            Timestamp::LogAppendTime(t) => format!("append {t}"),
            Timestamp::NotAvailable => "none".into(),
        };
        let _ = writeln!(out, "offset {}  ts {ts}", m.offset());
        if let Some(h) = m.headers() {
            for h in h.iter() {
                let v = h.value.map(text_or_hex).unwrap_or_else(|| "null".into());
                let _ = writeln!(out, "  header {} = {v}", h.key);
            }
        }
        for (what, bytes) in [("key  ", m.key()), ("value", m.payload())] {
            let shown = match (bytes, &reg) {
                (None, _) => "null".to_owned(),
                (Some(b), Some(r)) if !a.raw => decode(r, b).await,
                (Some(b), _) => text_or_hex(b),
            };
            let _ = writeln!(out, "  {what} {shown}");
        }
    }
    Ok(())
}
