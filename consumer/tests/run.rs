//! `consumer run` against the real local stack: the mirror and apply in one process, as each
//! site runs them. The source topic is written on the SF cluster in the producer's format; the
//! process mirrors it into the EU cluster and applies the copy to the EU MariaDB.

mod support;

use std::time::Duration;

use continuum_schemas::Value;
use support::*;

async fn get(url: &str) -> String {
    match reqwest::get(url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// EU's copy of the topic: its high watermark.
fn eu_high(topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", std::env::var("EU_BROKERS").unwrap())
        .create()
        .unwrap();
    c.fetch_watermarks(topic, 0, Duration::from_secs(5))
        .map(|w| w.1)
        .unwrap_or(-1)
}

/// A record the replica refuses stalls apply, not the process: the mirror goes on copying (so
/// what SF writes still reaches the EU cluster, which bounds what a loss of SF costs), the
/// error shows in `/health`, in a metric and in `status`, and apply retries the record until the
/// replica is fixed, then goes on by itself. Before, `run` ended with "apply failed, so run stops
/// (the mirror stopped with it)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_apply_cannot_apply_stalls_apply_but_not_the_mirror() {
    let fx = Fixture::new(
        "runstall",
        &["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20) NOT NULL) ENGINE=InnoDB"],
        "retry_failed_after = \"1s\"",
    )
    .await;
    // The replica's column is too narrow for what the source writes.
    fx.on_replica(&["ALTER TABLE t MODIFY v VARCHAR(2) NOT NULL"])
        .await;
    let mut src = fx.source_on("sf").await;
    src.table(table(
        &fx.db,
        "t",
        vec![int_col("id", false), varchar_col("v", false)],
        vec![0],
    ));
    src.insert("t", vec![Value::Int(1), Value::Text("ok".into())])
        .await;
    src.insert("t", vec![Value::Int(2), Value::Text("far too long".into())])
        .await;
    src.flush().await;
    let port = free_port();
    let log = std::fs::File::create(fx.log_path()).unwrap();
    let mut run = Killed(
        fx.command(&["run", "--metrics-listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let run = &mut run.0;
    let health = format!("http://127.0.0.1:{port}/health");
    wait_for(
        "apply to report the refused record in /health",
        Duration::from_secs(90),
        || async {
            let h = get(&health).await;
            (h.contains("\"apply\"")
                && h.contains("failed")
                && h.contains(&format!("{}@1", fx.topic)))
            .then_some(())
        },
    )
    .await;
    // Still running, and the mirror goes on: records written now reach the EU cluster.
    assert!(run.try_wait().unwrap().is_none(), "run must not end");
    for i in 3..=5 {
        src.insert("t", vec![Value::Int(i), Value::Text("x".into())])
            .await;
    }
    src.flush().await;
    wait_for(
        "the mirror to copy what SF wrote meanwhile",
        Duration::from_secs(60),
        || async { (eu_high(&fx.topic) >= 5).then_some(()) },
    )
    .await;
    let metrics = get(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert!(
        metrics.contains("continuum_apply_stalled 1"),
        "the stall is a metric:\n{metrics}"
    );
    let status = fx.run(&["status"]);
    let status_text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status_text.contains("Data too long") || status_text.contains("too long"),
        "status shows the error:\n{status_text}"
    );
    assert_eq!(
        fx.checkpoint().await.unwrap().0,
        1,
        "the checkpoint stays before the record"
    );

    // The operator fixes the replica; apply goes on by itself.
    fx.on_replica(&["ALTER TABLE t MODIFY v VARCHAR(20) NOT NULL"])
        .await;
    fx.wait_checkpoint(
        "apply to go on past the fixed record",
        Duration::from_secs(60),
        |o| o >= 5,
    )
    .await;
    fx.assert_same(&["t"]).await;
    wait_for(
        "/health to be ok again",
        Duration::from_secs(30),
        || async {
            let h = get(&health).await;
            (h.contains("\"status\":\"ok\"") && !h.contains("failed")).then_some(())
        },
    )
    .await;
    signal(run.id(), "TERM");
    let _ = run.wait();
    fx.drop_databases().await;
}
