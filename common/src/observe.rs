//! Observability: structured logs (`tracing`, text or JSON), Prometheus metrics on
//! `/metrics`, and a `/health` endpoint that reports each component's state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global tracing subscriber. Logs go to stderr.
pub fn init_logging(cfg: &LogConfig) {
    let filter = EnvFilter::try_new(&cfg.filter).unwrap_or_else(|e| {
        eprintln!("invalid log filter '{}': {e}; using 'info'", cfg.filter);
        EnvFilter::new("info")
    });
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match cfg.format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Starting,
    Ok,
    Failed,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentHealth {
    pub status: Status,
    pub detail: String,
}

/// Health of the process's components; `/health` answers 200 while none has failed.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<String, ComponentHealth>>>);

impl Health {
    pub fn set(&self, component: &str, status: Status, detail: impl Into<String>) {
        self.0.lock().unwrap().insert(
            component.to_owned(),
            ComponentHealth {
                status,
                detail: detail.into(),
            },
        );
    }

    pub fn snapshot(&self) -> BTreeMap<String, ComponentHealth> {
        self.0.lock().unwrap().clone()
    }

    fn overall(&self) -> Status {
        let m = self.0.lock().unwrap();
        if m.values().any(|c| c.status == Status::Failed) {
            Status::Failed
        } else if m.values().all(|c| c.status == Status::Ok) && !m.is_empty() {
            Status::Ok
        } else {
            Status::Starting
        }
    }
}

#[derive(Clone)]
struct AppState {
    prom: PrometheusHandle,
    health: Health,
}

/// The kind of a metric, as the `metrics` crate records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    /// Rendered by the exporter as a Prometheus summary (no buckets are configured): the series
    /// `name{quantile="…"}`, `name_sum` and `name_count`.
    Histogram,
}

impl MetricKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One metric of a component: the single description from which its `describe_*` call, the
/// component's list of metrics (`ALL`) and the checks of `docs/metrics.md` and the dashboard
/// are driven.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    pub name: &'static str,
    pub kind: MetricKind,
    pub unit: metrics::Unit,
    /// Label names, in the order the call sites give them.
    pub labels: &'static [&'static str],
    /// One line: what the metric counts or measures.
    pub help: &'static str,
}

/// Gives each metric its unit and help line (the `# HELP` line on `/metrics`), whenever the
/// recorder is installed: now if it is, else when [`install_metrics`] installs it (the `metrics`
/// crate drops descriptions given while no recorder is installed). Call it once at start-up;
/// describing a metric again changes nothing.
pub fn describe(specs: &'static [MetricSpec]) {
    let mut described = DESCRIBED.lock().unwrap();
    described.push(specs);
    if HANDLE.get().is_some() {
        describe_now(specs);
    }
}

fn describe_now(specs: &[MetricSpec]) {
    for s in specs {
        match s.kind {
            MetricKind::Counter => metrics::describe_counter!(s.name, s.unit, s.help),
            MetricKind::Gauge => metrics::describe_gauge!(s.name, s.unit, s.help),
            MetricKind::Histogram => metrics::describe_histogram!(s.name, s.unit, s.help),
        }
    }
}

/// The recorder's handle, once installed.
static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
/// Every list given to [`describe`], described again when the recorder is installed.
static DESCRIBED: Mutex<Vec<&'static [MetricSpec]>> = Mutex::new(Vec::new());

/// How often histogram samples are folded into their summaries when nobody scrapes.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the Prometheus recorder (once per process) and returns its handle. The metrics
/// given to [`describe`] so far are described to it.
pub fn install_metrics() -> PrometheusHandle {
    let handle = HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("the metrics recorder is installed once")
        })
        .clone();
    for specs in DESCRIBED.lock().unwrap().iter() {
        describe_now(specs);
    }
    handle
}

/// Serves `/metrics` and `/health` on `addr` until the process ends. Fails at once if the
/// address cannot be bound.
pub async fn serve(addr: SocketAddr, health: Health) -> std::io::Result<SocketAddr> {
    let prom = install_metrics();
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot serve metrics on {addr}: {e} (set metrics_listen to a free address)"),
        )
    })?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health_handler))
        .with_state(AppState { prom, health });
    // Histogram samples wait in per-metric buckets until upkeep folds them into the summaries.
    // Scrapes run it too, but a process nobody scrapes would grow without bound: fold them in
    // every few seconds regardless.
    let upkeep = install_metrics();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    tracing::info!(%bound, "serving /metrics and /health");
    Ok(bound)
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    s.prom.run_upkeep();
    s.prom.render()
}

async fn health_handler(State(s): State<AppState>) -> impl IntoResponse {
    let overall = s.health.overall();
    let body = serde_json::json!({ "status": overall, "components": s.health.snapshot() });
    let code = if overall == Status::Failed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, axum::Json(body))
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An error and its causes as one line, `outer: cause: cause`, leaving out a cause whose text the
/// line already holds (Continuum's errors name their cause in their own message).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// The exit status of a binary that stopped at an error (the README's: 0 success, 1 a
/// difference found by `verify` or `orphans`, 2 an error).
pub const EXIT_ERROR: u8 = 2;

#[cfg(test)]
mod error_chain_tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {source}")]
    struct Outer {
        source: std::io::Error,
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let e = Outer {
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(error_chain(&e), "outer: disk full");
        let bare = std::io::Error::other("alone");
        assert_eq!(error_chain(&bare), "alone");
    }
}

#[cfg(test)]
mod describe_tests {
    use super::*;

    const BEFORE: &[MetricSpec] = &[MetricSpec {
        name: "observe_test_before_total",
        kind: MetricKind::Counter,
        unit: metrics::Unit::Count,
        labels: &[],
        help: "Described before the recorder was installed.",
    }];
    const AFTER: &[MetricSpec] = &[MetricSpec {
        name: "observe_test_after_seconds",
        kind: MetricKind::Gauge,
        unit: metrics::Unit::Seconds,
        labels: &[],
        help: "Described after.",
    }];

    #[test]
    fn descriptions_given_before_and_after_install_are_served() {
        describe(BEFORE);
        let handle = install_metrics();
        describe(AFTER);
        metrics::counter!(BEFORE[0].name).increment(1);
        metrics::gauge!(AFTER[0].name).set(1.5);
        let text = handle.render();
        assert!(
            text.contains("# HELP observe_test_before_total Described before the recorder was installed.\n# TYPE observe_test_before_total counter\nobserve_test_before_total 1\n"),
            "{text}"
        );
        // Units do not change the names (no unit suffix).
        assert!(
            text.contains("# HELP observe_test_after_seconds Described after.\n"),
            "{text}"
        );
        assert!(
            text.contains("\nobserve_test_after_seconds 1.5\n"),
            "{text}"
        );
    }
}
