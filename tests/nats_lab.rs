//! Smoke tests of the NATS JetStream lab (`tests/common/nats.rs`) the scale-out tests run on:
//! real `nats-server` processes on loopback. A three-node cluster keeps an R3 stream's
//! messages, exactly once and in order, across stopping the stream's leader, and the node
//! rejoins when restarted with every message; an R3 key-value bucket survives a stopped
//! follower and a crashed (SIGKILLed) leader; user/password and TLS refuse a client without the password or trusting another
//! CA; a one-node broker stopped for 3 s and restarted keeps its stream and the client made
//! before the outage publishes again; a test that panics leaves no server and no directory.
//! Each test prints its measured timings (`measured:`).
//! Skipped with a note when nats-server is missing, unless CI is set.

#[path = "common/nats.rs"]
mod nats;

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::context::Context;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, kv};
use async_nats::{ConnectErrorKind, ConnectOptions};
use bytes::Bytes;
use futures_util::StreamExt;
use nats::{NatsCluster, NatsOpts, create_bucket, write_pki};

/// Bound on any one operation that has to wait out an election or a reconnect.
const RECOVERY_LIMIT: Duration = Duration::from_secs(20);

/// Retries `op` with backoff (50 ms doubling to 1 s) until it succeeds; fails after `limit`
/// with the last error.
async fn retry<T, E: Display, Fut: Future<Output = Result<T, E>>>(
    what: &str,
    limit: Duration,
    mut op: impl FnMut() -> Fut,
) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if start.elapsed() > limit => {
                panic!("{what}: still failing after {limit:?}: {e}")
            }
            Err(_) => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

fn payload(i: usize) -> String {
    format!("event-{i:06}")
}

/// Publishes `payload(i)` with its message id (`m{i}`, so a retried publish whose first ack
/// was lost is stored once: the stream's duplicate window drops the copy) until acked.
async fn publish_acked(js: &Context, subject: &str, i: usize) -> PublishAck {
    retry(&format!("publish {i}"), RECOVERY_LIMIT, || async {
        let msg = PublishMessage::build()
            .payload(Bytes::from(payload(i)))
            .message_id(format!("m{i}"));
        js.send_publish(subject.to_owned(), msg).await?.await
    })
    .await
}

/// Publishes `range` pipelined (100 awaiting acks at a time), every ack required.
async fn publish_window(js: &Context, subject: &str, range: std::ops::Range<usize>) {
    let ids: Vec<usize> = range.collect();
    for chunk in ids.chunks(100) {
        let mut acks = Vec::new();
        for &i in chunk {
            let msg = PublishMessage::build()
                .payload(Bytes::from(payload(i)))
                .message_id(format!("m{i}"));
            acks.push(
                js.send_publish(subject.to_owned(), msg)
                    .await
                    .expect("publish"),
            );
        }
        for a in acks {
            let ack = a.await.expect("ack");
            assert!(!ack.duplicate, "first publish reported a duplicate");
        }
    }
}

fn context(client: async_nats::Client) -> Context {
    // Short enough that a request to a dead leader fails fast and is retried.
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client)
}

async fn stream_info(js: &Context, name: &str) -> stream::Info {
    retry(&format!("info of {name}"), RECOVERY_LIMIT, || async {
        let stream = js.get_stream(name).await.map_err(|e| e.to_string())?;
        stream.get_info().await.map_err(|e| e.to_string())
    })
    .await
}

/// The node holding `stream`'s leadership.
async fn stream_leader(lab: &NatsCluster, js: &Context, name: &str) -> usize {
    let info = stream_info(js, name).await;
    let cluster = info.cluster.expect("a clustered stream has cluster info");
    let leader = cluster.leader.expect("the stream has a leader");
    lab.node_index(&leader)
        .unwrap_or_else(|| panic!("leader {leader} is not a lab node"))
}

/// Waits until `name` has a leader and every other replica is current and online; returns
/// how long that took.
async fn wait_all_replicas_current(js: &Context, name: &str, replicas: usize) -> Duration {
    let start = Instant::now();
    loop {
        let info = stream_info(js, name).await;
        let cluster = info.cluster.expect("cluster info");
        let peers_ok = cluster.replicas.len() == replicas - 1
            && cluster.replicas.iter().all(|p| p.current && !p.offline);
        if cluster.leader.is_some() && peers_ok {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < RECOVERY_LIMIT,
            "{name}: replicas not all current after {RECOVERY_LIMIT:?}: {cluster:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stream_config(name: &str, subjects: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![subjects.to_owned()],
        num_replicas: replicas,
        storage: StorageType::File,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_stream_keeps_every_message_across_a_stopped_leader() {
    let started = Instant::now();
    let opts = NatsOpts {
        nodes: 3,
        ..Default::default()
    };
    let Some(mut lab) = NatsCluster::start(&opts) else {
        return;
    };
    eprintln!(
        "measured: 3-node cluster ready (meta leader agreed) in {:?}",
        started.elapsed()
    );
    let js = context(lab.connect().await);
    let config = stream_config("DETECT", "detect.>", 3);
    let created = Instant::now();
    retry("create the R3 stream", RECOVERY_LIMIT, || {
        js.create_stream(config.clone())
    })
    .await;
    eprintln!("measured: R3 stream created in {:?}", created.elapsed());

    publish_window(&js, "detect.p0", 0..1000).await;
    let leader = stream_leader(&lab, &js, "DETECT").await;
    tokio::task::block_in_place(|| lab.stop(leader));
    assert!(!lab.is_running(leader));
    let stopped = Instant::now();
    let first = publish_acked(&js, "detect.p0", 1000).await;
    let first_ack = stopped.elapsed();
    assert_eq!(first.sequence, 1001, "the first publish after the stop");
    let new_leader = stream_leader(&lab, &js, "DETECT").await;
    assert_ne!(new_leader, leader, "a stopped node cannot lead");
    eprintln!(
        "measured: stream leader {} stopped; first ack after {first_ack:?} \
         (new leader {}, known after {:?})",
        lab.node_name(leader),
        lab.node_name(new_leader),
        stopped.elapsed()
    );
    for i in 1001..2000 {
        publish_acked(&js, "detect.p0", i).await;
    }

    // One durable pull consumer reads everything once, in publish order.
    let consumer = retry("create the durable consumer", RECOVERY_LIMIT, || async {
        js.create_consumer_on_stream(
            pull::Config {
                durable_name: Some("correlator".to_owned()),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
            "DETECT",
        )
        .await
    })
    .await;
    let mut got = Vec::new();
    let consume_start = Instant::now();
    while got.len() < 2000 {
        assert!(
            consume_start.elapsed() < RECOVERY_LIMIT,
            "consumed only {} of 2000",
            got.len()
        );
        let Ok(mut batch) = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_secs(1))
            .messages()
            .await
        else {
            continue;
        };
        while let Some(msg) = batch.next().await {
            let Ok(msg) = msg else { break };
            got.push(String::from_utf8(msg.payload.to_vec()).expect("utf-8 payload"));
            msg.ack().await.expect("ack");
        }
    }
    let mut rest = consumer
        .fetch()
        .max_messages(10)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .expect("final fetch");
    let mut extra = 0;
    while let Some(Ok(_)) = rest.next().await {
        extra += 1;
    }
    assert_eq!(extra, 0, "messages beyond the 2,000 published");
    let want: Vec<String> = (0..2000).map(payload).collect();
    assert!(
        got == want,
        "consumed {} messages, not 0..2000 in order",
        got.len()
    );
    assert_eq!(stream_info(&js, "DETECT").await.state.messages, 2000);

    let restart = Instant::now();
    tokio::task::block_in_place(|| lab.restart(leader));
    let ready = restart.elapsed();
    wait_all_replicas_current(&js, "DETECT", 3).await;
    // The node stopped before messages 1000.. holds all 2,000 again (its own /jsz count).
    let start = Instant::now();
    loop {
        let held = lab.jsz(leader).and_then(|j| j["messages"].as_u64());
        if held == Some(2000) {
            break;
        }
        assert!(
            start.elapsed() < RECOVERY_LIMIT,
            "{} holds {held:?} messages, not 2000",
            lab.node_name(leader)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "measured: {} restarted: ready in {ready:?}, caught up (3 current replicas, \
         2000 messages held) after {:?}",
        lab.node_name(leader),
        restart.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_key_value_survives_a_stopped_follower_and_a_crashed_leader() {
    let opts = NatsOpts {
        nodes: 3,
        ..Default::default()
    };
    let Some(mut lab) = NatsCluster::start(&opts) else {
        return;
    };
    let js = context(lab.connect().await);
    let kv = retry("create the R3 bucket", RECOVERY_LIMIT, || {
        create_bucket(&js, "checkpoints", 3)
    })
    .await;
    kv.put("p0", "100".into()).await.expect("put p0");

    // Reads may be served by any replica (direct get), so a value just written is polled for.
    async fn expect_value(kv: &kv::Store, key: &str, want: &str) {
        let start = Instant::now();
        loop {
            let got = kv.get(key).await;
            if let Ok(Some(v)) = &got
                && v.as_ref() == want.as_bytes()
            {
                return;
            }
            assert!(
                start.elapsed() < RECOVERY_LIMIT,
                "{key}: {got:?}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let leader = stream_leader(&lab, &js, "KV_checkpoints").await;
    let follower = (0..3).find(|&i| i != leader).expect("three nodes");
    tokio::task::block_in_place(|| lab.stop(follower));
    expect_value(&kv, "p0", "100").await;
    retry("put p1 without a follower", RECOVERY_LIMIT, || {
        kv.put("p1", "7".into())
    })
    .await;
    expect_value(&kv, "p1", "7").await;
    tokio::task::block_in_place(|| lab.restart(follower));
    wait_all_replicas_current(&js, "KV_checkpoints", 3).await;

    // A crash of the leader: no leadership handed over, the others must elect one.
    let leader = stream_leader(&lab, &js, "KV_checkpoints").await;
    tokio::task::block_in_place(|| lab.kill(leader));
    let killed = Instant::now();
    retry("put p0 after the leader crashed", RECOVERY_LIMIT, || {
        kv.put("p0", "200".into())
    })
    .await;
    eprintln!(
        "measured: bucket leader {} killed (SIGKILL); put acked after {:?}",
        lab.node_name(leader),
        killed.elapsed()
    );
    expect_value(&kv, "p0", "200").await;
    expect_value(&kv, "p1", "7").await;
    let restart = Instant::now();
    tokio::task::block_in_place(|| lab.restart(leader));
    wait_all_replicas_current(&js, "KV_checkpoints", 3).await;
    eprintln!(
        "measured: crashed node back, all replicas current after {:?}",
        restart.elapsed()
    );
    expect_value(&kv, "p0", "200").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_tls_refuse_strangers_and_admit_the_sensor() {
    let opts = NatsOpts {
        nodes: 1,
        user: Some(("sensor".to_owned(), "s3cret pass\"word".to_owned())),
        tls: true,
        ..Default::default()
    };
    let Some(lab) = NatsCluster::start(&opts) else {
        return;
    };
    let url = lab.url(0);
    assert!(url.starts_with("tls://"), "{url}");
    let ca = lab.ca_file().expect("a TLS lab has a CA");
    let tls_only = || {
        ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .add_root_certificates(ca.clone())
            .require_tls(true)
    };

    let err = tls_only().connect(&url).await.expect_err("no password");
    assert_eq!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
    let err = tls_only()
        .user_and_password("sensor".to_owned(), "guess".to_owned())
        .connect(&url)
        .await
        .expect_err("wrong password");
    assert_eq!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );

    let other = tempfile::tempdir().expect("temp dir");
    let (foreign_ca, _, _) = write_pki(other.path());
    let (user, password) = lab.creds().expect("creds");
    let err = ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .user_and_password(user, password)
        .add_root_certificates(foreign_ca)
        .require_tls(true)
        .connect(&url)
        .await
        .expect_err("a CA that did not sign the server");
    // rustls refuses the chain (async-nats reports that as an I/O error of the handshake).
    assert!(
        matches!(err.kind(), ConnectErrorKind::Tls | ConnectErrorKind::Io)
            && err.to_string().contains("invalid peer certificate"),
        "{err}"
    );

    let js = context(lab.connect().await);
    js.create_stream(stream_config("AUTHED", "authed.>", 1))
        .await
        .expect("create stream over TLS");
    let ack = publish_acked(&js, "authed.x", 7).await;
    let stream = js.get_stream("AUTHED").await.expect("stream");
    let msg = stream
        .get_raw_message(ack.sequence)
        .await
        .expect("message back");
    assert_eq!(msg.payload.as_ref(), payload(7).as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_outlives_a_three_second_broker_outage() {
    let Some(mut lab) = NatsCluster::start(&NatsOpts::default()) else {
        return;
    };
    // Made before the outage, with the client's default reconnect (unbounded, backoff to 4 s).
    let js = context(lab.connect().await);
    js.create_stream(stream_config("SENSOR", "sensor.>", 1))
        .await
        .expect("create stream");
    publish_window(&js, "sensor.p0", 0..100).await;
    let urls = lab.urls();

    tokio::task::block_in_place(|| lab.stop(0));
    assert!(!lab.is_running(0));
    let down = Instant::now();
    // While the broker is down a publish is not acknowledged (the client may hold it and
    // send it on reconnect: its message id keeps the retry below from storing it twice).
    let during = tokio::time::timeout(Duration::from_secs(3), async {
        let msg = PublishMessage::build()
            .payload(Bytes::from(payload(100)))
            .message_id("m100");
        js.send_publish("sensor.p0", msg).await?.await
    })
    .await;
    assert!(
        !matches!(during, Ok(Ok(_))),
        "acked with the broker down: {during:?}"
    );
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down.elapsed())).await;
    tokio::task::block_in_place(|| lab.restart(0));
    assert_eq!(lab.urls(), urls, "a restart keeps the port");
    let restarted = Instant::now();
    publish_acked(&js, "sensor.p0", 100).await;
    eprintln!(
        "measured: broker down {:?}; first ack {:?} after its restart",
        restarted.duration_since(down),
        restarted.elapsed()
    );
    for i in 101..200 {
        publish_acked(&js, "sensor.p0", i).await;
    }
    let stream = js.get_stream("SENSOR").await.expect("stream");
    let info = stream.get_info().await.expect("info");
    assert_eq!(
        info.state.messages, 200,
        "earlier messages kept, none twice"
    );
    for (seq, i) in [(1, 0), (100, 99), (101, 100), (200, 199)] {
        let msg = stream.get_raw_message(seq).await.expect("message");
        assert_eq!(msg.payload.as_ref(), payload(i).as_bytes(), "seq {seq}");
    }
}

#[test]
fn a_panicking_test_leaves_no_server_behind() {
    let opts = NatsOpts {
        nodes: 3,
        ..Default::default()
    };
    let outcome = std::panic::catch_unwind(|| {
        let Some(lab) = NatsCluster::start(&opts) else {
            return; // skipped: nats-server missing
        };
        let pids: Vec<u32> = (0..3).filter_map(|i| lab.pid(i)).collect();
        assert_eq!(pids.len(), 3, "three nodes run");
        let dir = lab.dir().to_owned();
        std::panic::panic_any((pids, dir));
    });
    let Err(payload) = outcome else {
        return;
    };
    let (pids, dir) = payload
        .downcast_ref::<(Vec<u32>, std::path::PathBuf)>()
        .expect("the lab's own panic");
    for pid in pids {
        // Reaped by the drop: the pid is gone, or reused by something that is not ours.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()),
            "nats-server {pid} outlived its lab"
        );
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// A node that dies on its own (here SIGKILL from outside the lab, as a crash of the broker
/// itself would end it) is restarted by `revive_crashed`, with its port and store; a node
/// the test stopped is not, and nothing is restarted while every node runs.
#[test]
fn a_node_that_dies_on_its_own_is_revived_and_a_stopped_one_is_not() {
    let opts = NatsOpts {
        nodes: 1,
        ..Default::default()
    };
    let Some(mut lab) = NatsCluster::start(&opts) else {
        return;
    };
    assert!(lab.revive_crashed().is_empty(), "nothing to revive");
    let urls = lab.urls();
    let pid = lab.pid(0).expect("running");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let revived = loop {
        let r = lab.revive_crashed();
        if !r.is_empty() || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(revived, vec![lab.node_name(0).to_owned()]);
    assert!(lab.is_running(0));
    assert_ne!(lab.pid(0), Some(pid), "a new process");
    assert_eq!(lab.urls(), urls, "the same port");
    assert!(lab.jsz(0).is_some(), "it serves again");
    lab.stop(0);
    assert!(
        lab.revive_crashed().is_empty(),
        "a stopped node stays stopped"
    );
    assert!(!lab.is_running(0));
}
