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
    #[error("JetStream stream {name}: {source}")]
    Stream {
        name: String,
        source: async_nats::error::Error<jetstream::context::CreateStreamErrorKind>,
    },
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

async fn ensure_stream(js: &jetstream::Context, c: stream::Config) -> Result<(), ConnectError> {
    let name = c.name.clone();
    // A cluster that is still electing answers with errors for a moment: retry briefly.
    let mut last = None;
    for attempt in 0..20u64 {
        match js.create_or_update_stream(c.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1).min(10))).await;
            }
        }
    }
    Err(ConnectError::Stream {
        name,
        source: last.expect("at least one attempt"),
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
    let mut last = String::new();
    for attempt in 0..20u64 {
        if let Ok(s) = js.get_object_store(&cfg.checkpoint_bucket).await {
            return Ok(s);
        }
        match js.create_object_store(c.clone()).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100 * (attempt + 1).min(10))).await;
    }
    Err(ConnectError::Bucket {
        name: cfg.checkpoint_bucket.clone(),
        message: last,
    })
}
