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

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("the metrics recorder is installed once")
        })
        .clone()
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
