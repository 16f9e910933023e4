//! The mirror against the real local stack: kill -9 at random moments during a stream of
//! changelog records; the EU copy holds every record exactly once, in order, and decodes
//! through the EU registry alone.

mod mirror_support;

use std::time::Duration;

use continuum_tests::process::{kill9, signal, wait_for_takeover, Killed};
use continuum_tests::stack;
use mirror_support::*;
use rand::Rng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_random_moments_copies_every_record_exactly_once() {
    let case = MirrorCase::with_records("mirror_kill", 0).await;
    let topic = case.topic.clone();
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
        kill9(&mut mirror);
        kills += 1;
        mirror = case.spawn();
    }
    source.await.unwrap();
    wait_mirrored(&topic, N as i64, Duration::from_secs(300));
    kill9(&mut mirror);
    assert_exact_copy(&topic, N as usize).await;
    let log = case.log();
    assert!(
        log.matches("mirroring").count() >= 2,
        "the mirror resumed after kills:\n{log}"
    );
    eprintln!("{kills} kills, {N} records mirrored exactly once");
}

/// The MariaDB connection id that holds the named lock `name` on EU, if any.
async fn lock_holder(name: &str) -> Option<i64> {
    use mysql_async::prelude::Queryable;
    let mut c = stack().eu.admin_conn().await;
    c.exec_first::<Option<i64>, _, _>("SELECT IS_USED_LOCK(?)", (name,))
        .await
        .unwrap()
        .flatten()
}

/// A second mirror of the same topic does not exit: it waits for the lock, saying which
/// connection holds it, and takes over when the first one is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_mirror_of_the_same_topic_waits_for_the_lock_and_takes_over() {
    let case = MirrorCase::with_records("mirror_lock", 3).await;
    let topic = case.topic.clone();
    let mut first = Killed(case.spawn_as("first"));
    wait_mirrored(&topic, 3, Duration::from_secs(60));
    let lock = format!("continuum.mirror.eu.{topic}");
    let holder = lock_holder(&lock)
        .await
        .expect("the first mirror holds the lock");
    let mut second = Killed(case.spawn_as("second"));
    let waiting = format!("held by connection {holder}: a mirror of {topic}");
    continuum_tests::wait_for_blocking(
        "the second mirror to say it waits for the lock",
        Duration::from_secs(60),
        || {
            assert!(
                second.0.try_wait().unwrap().is_none(),
                "the second mirror exited instead of waiting:\n{}",
                case.log_of("second")
            );
            case.log_of("second").contains(&waiting).then_some(())
        },
    );
    let log = case.log_of("second");
    assert!(log.contains(&format!("a mirror of {topic}")), "{log}");
    assert!(
        !log.contains("mirroring"),
        "it waits before mirroring:\n{log}"
    );

    let _ = first.0.kill();
    let _ = first.0.wait();
    produce(&topic, 3, 6, Duration::ZERO).await;
    wait_mirrored(&topic, 6, Duration::from_secs(60));
    assert!(
        second.0.try_wait().unwrap().is_none(),
        "the second mirror runs"
    );
    drop(second);
    assert_exact_copy(&topic, 6).await;
}

/// The mirror's host stops answering (simulated: the process is SIGSTOPped, so its TCP
/// connections stay open and silent, like a dead host's half-open ones). MariaDB keeps its
/// lock only until it drops that silent connection (the lock connection's short
/// `wait_timeout`), so a replacement started meanwhile waits, then takes over and mirrors.
/// When the stopped process wakes up, it finds its lock gone and writes nothing more: the copy
/// is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_on_a_host_that_stopped_answering_is_replaced() {
    let case = MirrorCase::with_records("mirror_dead_host", 3).await;
    let topic = case.topic.clone();
    let first = Killed(case.spawn_as("first"));
    wait_mirrored(&topic, 3, Duration::from_secs(60));
    let lock = format!("continuum.mirror.eu.{topic}");
    let holder = lock_holder(&lock)
        .await
        .expect("the first mirror holds the lock");
    assert!(signal(first.0.id(), "STOP"), "SIGSTOP the first mirror");
    let stopped = std::time::Instant::now();

    let mut second = Killed(case.spawn_as("second"));
    produce(&topic, 3, 6, Duration::ZERO).await;
    wait_for_takeover(
        &mut second.0,
        Duration::from_secs(90),
        stopped,
        holder,
        async || high_watermark(&stack().eu, &topic) >= Some(6),
        async || lock_holder(&lock).await,
        || case.log_of("second"),
    )
    .await;

    // The first mirror wakes up: it must notice that the lock is gone before it writes.
    assert!(signal(first.0.id(), "CONT"), "SIGCONT the first mirror");
    continuum_tests::wait_for_blocking(
        "the first mirror to notice it lost the lock",
        Duration::from_secs(30),
        || case.log_of("first").contains("lost the lock").then_some(()),
    );
    produce(&topic, 6, 9, Duration::ZERO).await;
    wait_mirrored(&topic, 9, Duration::from_secs(60));
    drop(first);
    drop(second);
    assert_exact_copy(&topic, 9).await;
}

/// The EU cluster's copy of the topic takes smaller records than SF's (its `max.message.bytes`
/// was set lower by hand): the mirror stops at the first record it would refuse, naming the
/// record, its size and the target's setting, writes nothing from that record on, and stops at
/// the same record again when restarted. It never skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_target_limit_stops_the_mirror_and_is_never_skipped() {
    let s = stack();
    let case = MirrorCase::new("mirror_limit");
    let topic = case.topic.clone();
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

    for attempt in ["first run", "restart"] {
        let mut mirror = case.spawn();
        let status = continuum_tests::wait_for_blocking(
            &format!("the mirror to stop at the large record ({attempt})"),
            Duration::from_secs(90),
            || mirror.try_wait().unwrap(),
        );
        assert!(
            !status.success(),
            "{attempt}: the mirror exits with an error"
        );
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
            assert!(
                err.contains(&want),
                "{attempt}: the error names {want:?}:\n{err}"
            );
        }
        assert_eq!(
            high_watermark(&s.eu, &topic),
            Some(3),
            "{attempt}: the EU copy holds the three records before the large one, nothing after"
        );
    }
}

/// Deletes `topic` on the SF cluster and creates it again, empty (Kafka deletes a topic in the
/// background: the creation is retried, bounded, until the name is free).
async fn recreate_sf_topic(topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let s = stack();
    let admin: AdminClient<DefaultClientContext> =
        s.sf.kafka_config("test-admin").create().unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.delete_topics(&[topic], &opts).await.unwrap() {
        r.unwrap_or_else(|(t, e)| panic!("deleting {t}: {e}"));
    }
    continuum_tests::wait_for(
        &format!("{topic} to be created again on the SF cluster"),
        Duration::from_secs(60),
        || async {
            let topic =
                rdkafka::admin::NewTopic::new(topic, 1, rdkafka::admin::TopicReplication::Fixed(1))
                    .set("retention.ms", "-1");
            let r = admin.create_topics(&[topic], &opts).await.ok()?;
            r.into_iter().all(|x| x.is_ok()).then_some(())
        },
    )
    .await;
    assert_eq!(
        s.sf.wait_topic_ready(topic, Duration::from_secs(60)),
        (0, 0),
        "the recreated topic is empty"
    );
}

/// Runs a mirror that must stop by itself; returns its error line.
fn mirror_error(case: &MirrorCase) -> String {
    let mut mirror = case.spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = mirror.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            kill9(&mut mirror);
            panic!(
                "the mirror did not stop within 90s; its log:\n{}",
                tail(&case.log(), 15)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = case.log();
    assert!(!status.success(), "the mirror exits with an error:\n{log}");
    log.lines()
        .rev()
        .find(|l| l.contains("continuum-consumer: error"))
        .unwrap_or_else(|| panic!("no error line in the mirror's log:\n{log}"))
        .to_owned()
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The SF topic was deleted and recreated after the mirror copied records 0..6; the new one
/// holds records `from..to`. Runs the mirror on it: it must stop, writing nothing, with an
/// error that says each of `wants` and not librdkafka's raw "offset out of range".
async fn recreated_source_stops_the_mirror(prefix: &str, from: u64, to: u64, wants: &[&str]) {
    let s = stack();
    let case = MirrorCase::with_records(prefix, 6).await;
    let topic = &case.topic;
    let mut first = case.spawn();
    wait_mirrored(topic, 6, Duration::from_secs(60));
    kill9(&mut first);

    recreate_sf_topic(topic).await;
    produce(topic, from, to, Duration::ZERO).await;
    let err = mirror_error(&case);
    for want in wants {
        let want = want.replace("{topic}", topic);
        assert!(err.contains(&want), "the error says {want:?}:\n{err}");
    }
    assert!(!err.contains("out of range"), "{err}");
    assert_eq!(
        high_watermark(&s.eu, topic),
        Some(6),
        "nothing was mirrored"
    );
}

/// The new topic holds 2 records. The mirror would resume at source offset 6, beyond the new
/// topic's end: its fatal error says so (both offsets, what happened, what to do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_topic_recreated_shorter_than_the_copy_stops_the_mirror() {
    recreated_source_stops_the_mirror(
        "mirror_recreated",
        0,
        2,
        &[
            "{topic} on the sf cluster ends at offset 2",
            "resume at source offset 6",
            "deleted and recreated",
            "replay --from-beginning",
        ],
    )
    .await;
}

/// The recreated SF topic already holds more records (9) than were mirrored (6): resuming at
/// offset 6 would copy records 6..9 of a different topic after the old 0..6. The source record
/// before the resume offset is not the one the copy ends with, so the mirror stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_topic_recreated_longer_than_the_copy_stops_the_mirror() {
    recreated_source_stops_the_mirror(
        "mirror_replaced",
        100,
        109,
        &[
            "record {topic}@5 on the sf cluster is not the record",
            "deleted and recreated",
            "replay --from-beginning",
        ],
    )
    .await;
}
