//! The metrics contract, checked without a server: the code's lists of metrics
//! (`continuum_producer::metrics::ALL`, `continuum_consumer::metrics::ALL`) against
//!
//! - `docs/metrics.md`: it lists exactly those metrics, each with the code's type, unit and
//!   labels, under its binary's heading;
//! - `docker/grafana/continuum.json`: every metric a query names exists (a histogram's
//!   `_sum`/`_count` series included; the exporter renders histograms as summaries, so there is
//!   no `_bucket` series and `histogram_quantile` is wrong), every selector filters by the `site`
//!   variable, and the rows `Lag`, `Throughput`, `Batch sizes` and `Errors` each hold panels
//!   querying the metrics that row is about.
//!
//! `cargo test -p continuum-consumer --test metrics_contract`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use continuum_common::observe::{MetricKind, MetricSpec};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Every metric of every component, by name, with the binary that serves it.
fn code() -> BTreeMap<&'static str, (&'static str, MetricSpec)> {
    let mut all = BTreeMap::new();
    for (binary, list) in [
        ("continuum-producer", continuum_producer::metrics::ALL),
        ("continuum-consumer", continuum_consumer::metrics::ALL),
    ] {
        for s in list {
            assert!(
                all.insert(s.name, (binary, *s)).is_none(),
                "{} is listed twice",
                s.name
            );
        }
    }
    all
}

#[test]
fn the_code_lists_are_well_formed() {
    for (name, (_, s)) in code() {
        assert!(
            name.starts_with("continuum_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name}: not a continuum_ metric name"
        );
        assert_eq!(
            s.kind == MetricKind::Counter,
            name.ends_with("_total"),
            "{name}: counters, and only counters, end in _total"
        );
        assert!(
            !s.help.is_empty() && !s.help.contains('\n'),
            "{name}: help is one line"
        );
    }
}

/// A row of a table in docs/metrics.md: the heading above it, and its cells.
struct DocRow {
    heading: String,
    cells: Vec<String>,
}

fn doc_rows() -> BTreeMap<String, DocRow> {
    let mut rows = BTreeMap::new();
    let mut heading = String::new();
    for line in read("docs/metrics.md").lines() {
        if let Some(h) = line.strip_prefix("## ") {
            heading = h.to_owned();
        } else if line.starts_with("| `continuum_") {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect();
            let name = cells[0].trim_matches('`').to_owned();
            let row = DocRow {
                heading: heading.clone(),
                cells,
            };
            assert!(
                rows.insert(name.clone(), row).is_none(),
                "docs/metrics.md lists {name} twice"
            );
        }
    }
    rows
}

#[test]
fn docs_list_exactly_the_metrics_in_the_code() {
    let code = code();
    let docs = doc_rows();
    let in_code: BTreeSet<&str> = code.keys().copied().collect();
    let in_docs: BTreeSet<&str> = docs.keys().map(String::as_str).collect();
    let undocumented: Vec<_> = in_code.difference(&in_docs).collect();
    let unknown: Vec<_> = in_docs.difference(&in_code).collect();
    assert!(
        undocumented.is_empty(),
        "metrics missing from docs/metrics.md: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "docs/metrics.md lists metrics the code does not have: {unknown:?}"
    );
    for (name, (binary, s)) in &code {
        let row = &docs[*name];
        assert!(
            row.heading.contains(&format!("`{binary}`")),
            "{name} is under '## {}', not under its binary {binary}",
            row.heading
        );
        assert!(
            row.cells.len() >= 5,
            "{name}: a row is | metric | type | unit | labels | meaning |"
        );
        assert_eq!(row.cells[1], s.kind.as_str(), "{name}: type");
        assert_eq!(row.cells[2], s.unit.as_str(), "{name}: unit");
        let labels = if s.labels.is_empty() {
            "—".to_owned()
        } else {
            s.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        assert_eq!(row.cells[3], labels, "{name}: labels");
    }
}

/// Every `continuum_…` name in a PromQL expression, with the text that follows it.
fn names_in(expr: &str) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("continuum_") {
        let tail = &rest[i..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.push((tail[..len].to_owned(), &tail[len..]));
        rest = &tail[len..];
    }
    out
}

/// The metric a series name belongs to: itself, or the histogram whose `_sum` or `_count` it is.
fn metric_of<'a>(
    series: &str,
    code: &'a BTreeMap<&'static str, (&'static str, MetricSpec)>,
) -> Result<&'a MetricSpec, String> {
    if let Some((_, s)) = code.get(series) {
        return Ok(s);
    }
    for suffix in ["_sum", "_count"] {
        if let Some((_, s)) = series.strip_suffix(suffix).and_then(|b| code.get(b)) {
            return if s.kind == MetricKind::Histogram {
                Ok(s)
            } else {
                Err(format!(
                    "{series}: {} is a {}, it has no {suffix} series",
                    s.name,
                    s.kind.as_str()
                ))
            };
        }
    }
    if let Some(base) = series.strip_suffix("_bucket") {
        if code.contains_key(base) {
            return Err(format!(
                "{series}: histograms are rendered as summaries, there are no _bucket series (use quantile=\"…\")"
            ));
        }
    }
    Err(format!("{series}: no such metric in the code"))
}

struct Panel {
    row: String,
    title: String,
    exprs: Vec<String>,
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("docker/grafana/continuum.json"))
        .expect("docker/grafana/continuum.json is JSON")
}

/// The dashboard's panels in order, each with the row above it (panels inside a collapsed row
/// included).
fn panels(d: &serde_json::Value) -> Vec<Panel> {
    fn walk(list: &[serde_json::Value], row: &mut String, out: &mut Vec<Panel>) {
        for p in list {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            if p["type"] == "row" {
                *row = title;
                walk(p["panels"].as_array().map_or(&[], |v| v), row, out);
                continue;
            }
            let exprs = p["targets"]
                .as_array()
                .map_or(&[][..], |v| v)
                .iter()
                .filter_map(|t| t["expr"].as_str().map(str::to_owned))
                .collect();
            out.push(Panel {
                row: row.clone(),
                title,
                exprs,
            });
        }
    }
    let mut out = Vec::new();
    walk(
        d["panels"].as_array().expect("a panels list"),
        &mut String::new(),
        &mut out,
    );
    out
}

/// Whether a metric is what a row of the dashboard is about.
type About = fn(&MetricSpec) -> bool;

/// The problems of a dashboard: an empty list when it holds to the contract.
fn problems(d: &serde_json::Value) -> Vec<String> {
    let code = code();
    let mut bad = Vec::new();
    let vars = d["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let var = |n: &str| vars.iter().find(|v| v["name"] == n);
    match var("datasource") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        _ => bad.push("no Prometheus `datasource` variable".to_owned()),
    }
    let Some(site) = var("site") else {
        bad.push("no `site` variable".to_owned());
        return bad;
    };
    if site["includeAll"] != true || site["multi"] != true {
        bad.push("the `site` variable must allow both sites at once (multi, include all)".into());
    }
    // The queries: every panel target's, and the site variable's own.
    let panels = panels(d);
    let mut queries: Vec<(String, String)> = panels
        .iter()
        .flat_map(|p| p.exprs.iter().map(|e| (p.title.clone(), e.clone())))
        .collect();
    for q in [&site["query"]["query"], &site["query"], &site["definition"]] {
        if let Some(q) = q.as_str() {
            queries.push(("variable site".into(), q.to_owned()));
        }
    }
    for (panel, expr) in &queries {
        if expr.contains("histogram_quantile") {
            bad.push(format!(
                "{panel}: histogram_quantile over summaries (use the quantile label)"
            ));
        }
        let names = names_in(expr);
        if names.is_empty() && panel != "variable site" {
            bad.push(format!("{panel}: query names no continuum_ metric: {expr}"));
        }
        for (series, after) in names {
            if let Err(e) = metric_of(&series, &code) {
                bad.push(format!("{panel}: {e}"));
            }
            if panel != "variable site" && !after.starts_with("{site=~\"$site\"") {
                bad.push(format!(
                    "{panel}: {series} is not selected by the site variable ({{site=~\"$site\"…}})"
                ));
            }
        }
    }
    // Each required row holds panels about what it is named after.
    let rows: [(&str, About); 4] = [
        ("Lag", |s| {
            s.name.contains("seconds_behind_source") || s.name.contains("_lag_")
        }),
        ("Throughput", |s| s.kind == MetricKind::Counter),
        ("Batch sizes", |s| s.kind == MetricKind::Histogram),
        ("Errors", |s| s.name.ends_with("_errors_total")),
    ];
    for (row, about) in rows {
        let used: BTreeSet<&str> = panels
            .iter()
            .filter(|p| p.row == row)
            .flat_map(|p| p.exprs.iter())
            .flat_map(|e| names_in(e))
            .filter_map(|(n, _)| metric_of(&n, &code).ok())
            .filter(|s| about(s))
            .map(|s| s.name)
            .collect();
        if used.is_empty() {
            bad.push(format!("no `{row}` row with a panel about it"));
        }
    }
    // Lag and errors of each component, not just of one.
    for needed in [
        "continuum_producer_seconds_behind_source",
        "continuum_mirror_lag_seconds",
        "continuum_apply_seconds_behind_source",
        "continuum_producer_errors_total",
        "continuum_mirror_errors_total",
        "continuum_apply_errors_total",
        "continuum_apply_stalled",
    ] {
        if !queries
            .iter()
            .any(|(_, e)| names_in(e).iter().any(|(n, _)| n == needed))
        {
            bad.push(format!("no panel shows {needed}"));
        }
    }
    bad
}

#[test]
fn the_dashboard_names_only_metrics_that_exist() {
    let bad = problems(&dashboard());
    assert!(
        bad.is_empty(),
        "docker/grafana/continuum.json:\n{}",
        bad.join("\n")
    );
}

/// The check can fail: a dashboard with a name the code does not have, a `_bucket` series, a
/// `_sum` of a counter, or a selector without the site is refused.
#[test]
fn a_broken_dashboard_is_refused() {
    for (from, to, expect) in [
        (
            "continuum_apply_seconds_behind_source{",
            "continuum_apply_seconds_behind_sorce{",
            "continuum_apply_seconds_behind_sorce: no such metric",
        ),
        (
            "continuum_apply_batch_rows_sum{",
            "continuum_apply_batch_rows_bucket{",
            "no _bucket series",
        ),
        (
            "continuum_producer_bytes_total{",
            "continuum_producer_bytes_total_sum{",
            "has no _sum series",
        ),
        (
            "continuum_mirror_lag_records{site=~\\\"$site\\\"}",
            "continuum_mirror_lag_records",
            "not selected by the site variable",
        ),
        (
            "\"title\": \"Batch sizes\"",
            "\"title\": \"Sizes\"",
            "no `Batch sizes` row",
        ),
    ] {
        let text = read("docker/grafana/continuum.json");
        assert!(text.contains(from), "the dashboard no longer holds {from}");
        let broken: serde_json::Value = serde_json::from_str(&text.replacen(from, to, 1)).unwrap();
        let bad = problems(&broken);
        assert!(
            bad.iter().any(|b| b.contains(expect)),
            "replacing {from} by {to}: expected a problem with '{expect}', got {bad:?}"
        );
    }
}
