//! The mirror against the real local stack: kill -9 at random moments during a stream of
//! changelog records; the EU copy holds every record exactly once, in order, and decodes
//! through the EU registry alone.

mod mirror_support;

use std::time::Duration;

use continuum_tests::{stack, unique_name};
use mirror_support::*;
use rand::Rng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_random_moments_copies_every_record_exactly_once() {
    let s = stack();
    let topic = unique_name("mirror_kill");
    s.sf.create_topic(&topic, 1).await;
    let case = MirrorCase::new(&topic);
    const N: u64 = 1500;
    let source = tokio::spawn({
        let topic = topic.clone();
        async move { produce(&topic, 0, N, Duration::from_millis(10)).await }
    });
    let mut mirror = case.spawn();
    let mut rng = rand::rng();
    let mut kills = 0;
    while !source.is_finished() || kills < 20 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1200))).await;
        let _ = mirror.kill();
        let _ = mirror.wait();
        kills += 1;
        mirror = case.spawn();
    }
    source.await.unwrap();
    wait_mirrored(&topic, N as i64, Duration::from_secs(300));
    let _ = mirror.kill();
    let _ = mirror.wait();
    assert_exact_copy(&topic, N as usize).await;
    let log = case.log();
    assert!(
        log.matches("mirroring").count() >= 2,
        "the mirror resumed after kills:\n{log}"
    );
    eprintln!("{kills} kills, {N} records mirrored exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_mirror_of_the_same_topic_is_refused() {
    let s = stack();
    let topic = unique_name("mirror_lock");
    s.sf.create_topic(&topic, 1).await;
    produce(&topic, 0, 3, Duration::ZERO).await;
    let case = MirrorCase::new(&topic);
    let mut first = case.spawn();
    wait_mirrored(&topic, 3, Duration::from_secs(60));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_continuum-consumer"))
        .args(["--config", case.config.to_str().unwrap(), "mirror"])
        .env("CONTINUUM_DB_PASSWORD", &s.eu.db_password)
        .output()
        .unwrap();
    let _ = first.kill();
    let _ = first.wait();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is held by connection") && err.contains(&format!("a mirror of {topic}")),
        "{err}"
    );
}
