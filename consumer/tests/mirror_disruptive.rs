//! Mirror faults that restart servers of the stack, so this suite runs on its own (see the
//! Makefile): a restart of the SF broker mid-stream loses nothing, and once mirrored, the EU
//! site decodes everything with the SF registry stopped.

mod mirror_support;

use std::time::Duration;

use continuum_schemas::{Decoder, RecordAt};
use continuum_tests::process::kill9;
use continuum_tests::{restart_part, stack, stack_cmd};
use mirror_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sf_broker_restart_mid_stream_loses_nothing() {
    let s = stack();
    let case = MirrorCase::with_records("mirror_bounce", 0).await;
    let topic = case.topic.clone();
    produce(&topic, 0, 300, Duration::ZERO).await;
    let mut mirror = case.spawn();
    wait_mirrored(&topic, 1, Duration::from_secs(60));
    // Kill the SF broker while the mirror reads it, and bring it back.
    restart_part(&s.sf.broker_part(), "kill");
    s.sf.wait_topic_ready(&topic, Duration::from_secs(60));
    produce(&topic, 300, 600, Duration::ZERO).await;
    wait_mirrored(&topic, 600, Duration::from_secs(300));
    kill9(&mut mirror);
    assert_exact_copy(&topic, 600).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_mirrored_the_eu_site_decodes_without_the_sf_registry() {
    let s = stack();
    let case = MirrorCase::with_records("mirror_noreg", 90).await;
    let topic = case.topic.clone();
    let mut mirror = case.spawn();
    wait_mirrored(&topic, 90, Duration::from_secs(120));
    kill9(&mut mirror);
    stack_cmd("stop", &s.sf.registry_part());
    let result = std::panic::AssertUnwindSafe(async {
        let mut dec = Decoder::new(registry(&s.eu));
        let copy = s.eu.read_from(&topic, 0, 90, Duration::from_secs(60));
        for m in &copy {
            use rdkafka::Message;
            let at = RecordAt {
                topic: topic.clone(),
                partition: 0,
                offset: m.offset(),
            };
            dec.decode(&at, m.key(), m.payload().unwrap())
                .await
                .unwrap_or_else(|e| panic!("EU decode of {at} with SF's registry down: {e}"));
        }
    });
    let outcome = futures::FutureExt::catch_unwind(result).await;
    stack_cmd("start", &s.sf.registry_part());
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}
