//! Connecting to the broker with the configured log-in and TLS, and making sure the
//! streams and the checkpoint bucket exist.

use std::time::Duration;

use async_nats::jetstream::{self, object_store, stream};

use super::config::{Auth, NatsConfig};

/// How long JetStream remembers a message id to drop a republished copy: longer than any
/// broker outage a sensor rides out by retrying.
const EVENTS_DEDUP: Duration = Duration::from_secs(10 * 60);
/// Alerts keep their ids for an hour: a correlator restarted within it never publishes an
/// alert twice even before it has read back what it sent.
const ALERTS_DEDUP: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to NATS at {servers}: {source}")]
    Connect {
        servers: String,
        source: async_nats::ConnectError,
    },
    #[error("JetStream stream {name}: {message}")]
    Stream { name: String, message: String },
    #[error("JetStream object store {name}: {message}")]
    Bucket { name: String, message: String },
}

/// Connects with the configured log-in and TLS. The client reconnects by itself (forever)
/// when the broker goes away later; the first connection must succeed within
/// `connect_timeout`.
pub async fn connect(cfg: &NatsConfig, name: &str) -> Result<async_nats::Client, ConnectError> {
    let mut o = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(cfg.connect_timeout)
        .max_reconnects(None::<usize>)
        .event_callback(|e| async move {
            match e {
                async_nats::Event::Disconnected => tracing::warn!("NATS connection lost"),
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                other => tracing::debug!(event = %other, "NATS"),
            }
        });
    match &cfg.auth {
        Auth::None => {}
        Auth::UserPassword { user, password } => {
            o = o.user_and_password(user.clone(), password.clone());
        }
        Auth::NKey { seed } => o = o.nkey(seed.clone()),
    }
    if let Some(ca) = &cfg.tls_ca {
        o = o.add_root_certificates(ca.clone());
    }
    if let Some((c, k)) = &cfg.tls_client {
        o = o.add_client_certificate(c.clone(), k.clone());
    }
    o = o.require_tls(cfg.require_tls);
    let servers: Vec<async_nats::ServerAddr> =
        cfg.servers.iter().filter_map(|s| s.parse().ok()).collect();
    o.connect(servers.as_slice())
        .await
        .map_err(|source| ConnectError::Connect {
            servers: cfg.servers.join(","),
            source,
        })
}

/// The events stream (every partition's subject), created or updated.
pub async fn events_stream(js: &jetstream::Context, cfg: &NatsConfig) -> Result<(), ConnectError> {
    ensure_stream(
        js,
        stream::Config {
            name: cfg.stream.clone(),
            subjects: vec![format!("{}.events.>", cfg.subject_prefix)],
            num_replicas: cfg.replicas,
            max_bytes: cfg.max_stream_bytes,
            duplicate_window: EVENTS_DEDUP,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            description: Some("shieldtap detect-shard messages from sensors".into()),
            ..Default::default()
        },
    )
    .await
}

/// The alerts stream, created or updated.
pub async fn alerts_stream(js: &jetstream::Context, cfg: &NatsConfig) -> Result<(), ConnectError> {
    ensure_stream(
        js,
        stream::Config {
            name: cfg.alerts_stream.clone(),
            subjects: vec![format!("{}.alerts.>", cfg.subject_prefix)],
            num_replicas: cfg.replicas,
            max_bytes: cfg.max_stream_bytes / 4,
            duplicate_window: ALERTS_DEDUP,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            description: Some("shieldtap alerts from correlators".into()),
            ..Default::default()
        },
    )
    .await
}

/// Makes sure the stream exists with the fields shieldtap sets. A stream that already has
/// them is left alone: every sensor and correlator runs this at start, and sending the broker
/// an update it does not need is what crashed nats-server 2.9 (a nil dereference in
/// `updateWithAdvisory` when two clients updated a stream at once; Debian bookworm ships
/// 2.9.10). An update is sent only when a field differs (an operator changed
/// `max_stream_bytes` or `replicas`), and fields shieldtap does not set (limits an operator
/// tuned on the broker) are kept from the broker's copy.
async fn ensure_stream(js: &jetstream::Context, want: stream::Config) -> Result<(), ConnectError> {
    retry_briefly(async || ensure_stream_once(js, &want).await)
        .await
        .map_err(|message| ConnectError::Stream {
            name: want.name.clone(),
            message,
        })
}

/// Runs `op` until it succeeds, 20 times at most with growing pauses (about 15 s in all):
/// a cluster that is still electing answers with errors for a moment. The last error when
/// every attempt failed.
async fn retry_briefly<T>(mut op: impl AsyncFnMut() -> Result<T, String>) -> Result<T, String> {
    let mut last = String::new();
    for attempt in 0..20u64 {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100 * (attempt + 1).min(10))).await;
    }
    Err(last)
}

async fn ensure_stream_once(js: &jetstream::Context, want: &stream::Config) -> Result<(), String> {
    match js.get_stream(&want.name).await {
        Ok(s) => {
            let have = &s.cached_info().config;
            match stream_update(have, want) {
                None => Ok(()),
                Some(update) => {
                    tracing::info!(stream = %want.name, "updating the JetStream stream's settings");
                    js.update_stream(&update)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            }
        }
        // When another sensor or correlator created it first, it is read on the next turn.
        Err(e) if is_stream_not_found(&e) => js
            .create_stream(want.clone())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn is_stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(j)
            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// The update to send when the broker's stream differs from what shieldtap wants in a field
/// shieldtap sets; `None` when it does not. The update starts from the broker's copy, so
/// settings shieldtap leaves at their defaults keep whatever the operator gave them.
/// Storage is not compared: the broker refuses to change it, so a stream made with other
/// storage would be sent a useless update at every start.
fn stream_update(have: &stream::Config, want: &stream::Config) -> Option<stream::Config> {
    let same = have.subjects == want.subjects
        && have.num_replicas == want.num_replicas
        && have.max_bytes == want.max_bytes
        && have.duplicate_window == want.duplicate_window
        && have.discard == want.discard
        && have.description == want.description;
    if same {
        return None;
    }
    Some(stream::Config {
        subjects: want.subjects.clone(),
        num_replicas: want.num_replicas,
        max_bytes: want.max_bytes,
        duplicate_window: want.duplicate_window,
        discard: want.discard,
        description: want.description.clone(),
        ..have.clone()
    })
}

/// The checkpoint bucket (an object store: a checkpoint can be larger than one message),
/// created when missing.
pub async fn checkpoint_store(
    js: &jetstream::Context,
    cfg: &NatsConfig,
) -> Result<object_store::ObjectStore, ConnectError> {
    let c = object_store::Config {
        bucket: cfg.checkpoint_bucket.clone(),
        description: Some("shieldtap correlator checkpoints".into()),
        num_replicas: cfg.replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    retry_briefly(async || {
        if let Ok(s) = js.get_object_store(&cfg.checkpoint_bucket).await {
            return Ok(s);
        }
        js.create_object_store(c.clone())
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|message| ConnectError::Bucket {
        name: cfg.checkpoint_bucket.clone(),
        message,
    })
}
