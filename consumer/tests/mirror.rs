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

/// The EU cluster's copy of the topic takes smaller records than SF's (its `max.message.bytes`
/// was set lower by hand): the mirror stops at the first record it would refuse, naming the
/// record, its size and the target's setting, writes nothing from that record on, and stops at
/// the same record again when restarted. It never skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_target_limit_stops_the_mirror_and_is_never_skipped() {
    let s = stack();
    let topic = unique_name("mirror_limit");
    let (source_max, target_max) = ((8 << 20).to_string(), (1 << 20).to_string());
    s.sf.create_topic_with(&topic, 1, &[("max.message.bytes", &source_max)])
        .await;
    s.eu.create_topic_with(&topic, 1, &[("max.message.bytes", &target_max)])
        .await;
    let t = table();
    produce(&topic, 0, 3, Duration::ZERO).await;
    // Record 3: a row with 2 MiB of text that does not compress.
    let mut big = record(&t, 3);
    if let continuum_schemas::StreamRecord::Change(ev) = &mut big {
        let text: String = (0..2 << 20)
            .map(|_| char::from(rand::rng().random_range(b'a'..=b'z')))
            .collect();
        ev.after.as_mut().unwrap()[1] = continuum_schemas::Value::Text(text);
    }
    let size = produce_record(&topic, &big, 3).await;
    produce(&topic, 4, 6, Duration::ZERO).await;

    let case = MirrorCase::new(&topic);
    for attempt in ["first run", "restart"] {
        let mut mirror = case.spawn();
        let status = continuum_tests::wait_for_blocking(
            &format!("the mirror to stop at the large record ({attempt})"),
            Duration::from_secs(90),
            || mirror.try_wait().unwrap(),
        );
        assert!(!status.success(), "{attempt}: the mirror exits with an error");
        let log = case.log();
        let err = log
            .lines()
            .rev()
            .find(|l| l.contains("continuum-consumer: error"))
            .unwrap_or_else(|| panic!("{attempt}: no error line in the mirror's log:\n{log}"));
        for want in [
            format!("record {topic}@3 of the sf cluster"),
            format!("{size} bytes of key and value"),
            format!("max.message.bytes = {target_max}"),
            "nothing from this record on was mirrored".to_owned(),
        ] {
            assert!(err.contains(&want), "{attempt}: the error names {want:?}:\n{err}");
        }
        assert_eq!(
            high_watermark(&s.eu, &topic),
            Some(3),
            "{attempt}: the EU copy holds the three records before the large one, nothing after"
        );
    }
}
