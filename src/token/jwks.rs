//! JWKS over HTTPS: fetched at startup, refreshed on an interval, last good set kept.
//!
//! Input: the families' `jwks_url`s (HTTPS only, rustls with the system roots plus an
//! optional CA file). Output: each family's [`FetchedKeys`], swapped whole under a lock
//! that readers hold only to clone an `Arc`, with a generation number bumped on every
//! change (cached verdicts judged with an older generation are judged again). Owns one
//! background thread running a single-threaded tokio runtime; it ends when the [`Fetcher`]
//! is dropped. A failed fetch (network, status, body over [`MAX_JWKS_BYTES`], no usable key)
//! keeps the previous keys, is counted and logged at warn once per attempt, and is retried
//! after [`RETRY_AFTER_FAILURE`] or the refresh interval, whichever is sooner. Keys are only
//! ever fetched from configured URLs, never from URLs a token names (`jku`, `x5u`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::TokenError;
use super::keys::{KeySet, MAX_JWKS_BYTES};

/// Retry delay after a failed fetch (capped by the family's refresh interval).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// Whole-request timeout for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The keys last fetched for one family.
#[derive(Default)]
pub struct FetchedKeys {
    current: RwLock<Arc<KeySet>>,
    generation: AtomicU64,
    /// Digest of the body behind `current`, so an unchanged document changes nothing.
    body_digest: Mutex<Option<[u8; 32]>>,
}

impl FetchedKeys {
    pub fn current(&self) -> Arc<KeySet> {
        // A poisoned lock still holds a complete Arc (writers only swap it).
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn install(&self, set: KeySet, digest: [u8; 32]) {
        let mut last = self.body_digest.lock().unwrap_or_else(|e| e.into_inner());
        if *last == Some(digest) {
            return;
        }
        *last = Some(digest);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[derive(Default, Debug)]
pub struct JwksCounters {
    pub refresh_ok: AtomicU64,
    pub refresh_failed: AtomicU64,
}

/// What the fetcher needs for one family.
pub struct Target {
    pub family: Arc<str>,
    pub url: String,
    pub ca_file: Option<std::path::PathBuf>,
    pub algorithms: Vec<Algorithm>,
    pub refresh: Duration,
    pub store: Arc<FetchedKeys>,
}

struct Live {
    t: Target,
    client: reqwest::Client,
    due: Instant,
}

type Reply = std::sync::mpsc::Sender<Result<(), String>>;

/// Handle on the background refresh thread; dropping it stops the thread.
pub struct Fetcher {
    commands: mpsc::UnboundedSender<Reply>,
}

fn client_for(t: &Target) -> Result<reqwest::Client, TokenError> {
    let base = || {
        reqwest::Client::builder()
            .https_only(true)
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("shieldtap/", env!("CARGO_PKG_VERSION")))
    };
    let Some(path) = &t.ca_file else {
        return base().build().map_err(|e| TokenError::Jwks {
            family: t.family.to_string(),
            message: chain(&e),
        });
    };
    let pem = std::fs::read(path).map_err(|e| TokenError::Jwks {
        family: t.family.to_string(),
        message: format!("jwks_ca_file {}: {e}", path.display()),
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| TokenError::Jwks {
        family: t.family.to_string(),
        message: format!("jwks_ca_file {}: {}", path.display(), chain(&e)),
    })?;
    if certs.is_empty() {
        return Err(TokenError::Jwks {
            family: t.family.to_string(),
            message: format!("jwks_ca_file {}: no PEM certificate", path.display()),
        });
    }
    base().tls_certs_merge(certs.clone()).build().or_else(|merge_err| {
        // Where the platform verifier cannot load system roots, trust the given CA alone.
        tracing::warn!(family = %t.family, error = %chain(&merge_err), "jwks: system roots unavailable, using jwks_ca_file only");
        base().tls_certs_only(certs).build().map_err(|e| TokenError::Jwks { family: t.family.to_string(), message: chain(&e) })
    })
}

/// An error with its sources, so "error sending request" says why.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

async fn fetch(live: &Live) -> Result<(KeySet, [u8; 32]), String> {
    let mut resp = live
        .client
        .get(&live.t.url)
        .send()
        .await
        .map_err(|e| chain(&e))?;
    if !resp.status().is_success() {
        return Err(format!("HTTP status {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| chain(&e))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("body larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let set = KeySet::from_jwks(&body, &live.t.algorithms)?;
    if set.is_empty() {
        return Err(format!("no usable key ({} skipped)", set.skipped));
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
    let mut d = [0u8; 32];
    d.copy_from_slice(digest.as_ref());
    Ok((set, d))
}

async fn refresh(live: &mut Live, counters: &JwksCounters) -> Result<(), String> {
    let result = fetch(live).await;
    match result {
        Ok((set, digest)) => {
            tracing::debug!(family = %live.t.family, keys = set.len(), skipped = set.skipped, "jwks: fetched");
            live.t.store.install(set, digest);
            counters.refresh_ok.fetch_add(1, Ordering::Relaxed);
            live.due = Instant::now() + live.t.refresh;
            Ok(())
        }
        Err(message) => {
            tracing::warn!(family = %live.t.family, url = %live.t.url, error = %message, "jwks: fetch failed, keeping the last good keys");
            counters.refresh_failed.fetch_add(1, Ordering::Relaxed);
            live.due = Instant::now() + live.t.refresh.min(RETRY_AFTER_FAILURE);
            Err(format!("{}: {message}", live.t.family))
        }
    }
}

impl Fetcher {
    /// Starts the refresh thread and performs the first fetch of every target, waiting at
    /// most `initial_wait` for it (a failed first fetch leaves the family without keys, so
    /// its tokens are `unknown-key` until a fetch succeeds).
    pub fn start(
        targets: Vec<Target>,
        counters: Arc<JwksCounters>,
        initial_wait: Duration,
    ) -> Result<Fetcher, TokenError> {
        let mut lives = Vec::with_capacity(targets.len());
        for t in targets {
            let client = client_for(&t)?;
            // The first fetch is the explicit one below; the timer takes over after it.
            let due = Instant::now() + t.refresh;
            lives.push(Live { t, client, due });
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TokenError::Jwks {
                family: String::new(),
                message: format!("runtime: {e}"),
            })?;
        std::thread::Builder::new()
            .name("shieldtap-jwks".into())
            .spawn(move || {
                runtime.block_on(async move {
                    loop {
                        let next = lives.iter().map(|l| l.due).min().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                        tokio::select! {
                            cmd = rx.recv() => {
                                let Some(reply) = cmd else { return };
                                let mut errors = Vec::new();
                                for live in lives.iter_mut() {
                                    if let Err(e) = refresh(live, &counters).await {
                                        errors.push(e);
                                    }
                                }
                                let _ = reply.send(if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) });
                            }
                            _ = tokio::time::sleep_until(next) => {
                                let now = Instant::now();
                                for live in lives.iter_mut().filter(|l| l.due <= now) {
                                    let _ = refresh(live, &counters).await;
                                }
                            }
                        }
                    }
                })
            })
            .map_err(|e| TokenError::Jwks { family: String::new(), message: format!("thread: {e}") })?;
        let fetcher = Fetcher { commands: tx };
        if let Err(e) = fetcher.refresh_now(initial_wait) {
            tracing::warn!(error = %e, "jwks: first fetch failed; tokens of these families are unknown-key until a fetch succeeds");
        }
        Ok(fetcher)
    }

    /// Fetches every JWKS now and waits for the outcome (at most `wait`).
    pub fn refresh_now(&self, wait: Duration) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.commands
            .send(tx)
            .map_err(|_| "jwks refresh thread has stopped".to_owned())?;
        rx.recv_timeout(wait)
            .map_err(|_| format!("jwks refresh did not finish within {wait:?}"))?
    }
}
