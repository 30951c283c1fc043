//! A check endpoint in its own process (`shieldtap enforce`) follows a daemon's decisions:
//! it pulls the daemon's bouncer stream for every scope (startup first, then changes) and
//! mirrors them into its own store. While the daemon is unreachable the local decisions
//! keep applying until they expire; the next successful pull after a failure starts over
//! (`startup=true`), so nothing added or lifted meanwhile is missed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Deserialize;

use super::config::FollowConfig;
use super::decisions::{Ban, Scope, Store, canonical};
use super::stats::EnforceStats;
use super::unix_now;

#[derive(Deserialize)]
struct Remote {
    scope: String,
    value: String,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    scenario: Option<String>,
    #[serde(default)]
    duration: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    new: Option<Vec<Remote>>,
    deleted: Option<Vec<Remote>>,
}

/// Seconds of a Go duration (`3h59m58s`, `1m0.5s`, `-4s`); `None` when unreadable.
pub fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let v: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += v * mult;
        rest = &rest[u..];
    }
    let secs = total as i64;
    Some(if neg { -secs } else { secs })
}

fn until_of(r: &Remote, now: u64) -> Option<u64> {
    let d = r.duration.as_deref().and_then(parse_go_duration)?;
    Some((now as i64 + d).max(0) as u64)
}

/// Pulls until `stop` turns true.
pub async fn run(
    cfg: FollowConfig,
    store: Arc<Store>,
    stats: Arc<EnforceStats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "follow: no HTTP client");
            return;
        }
    };
    let mut startup = true;
    let mut tick = tokio::time::interval(cfg.interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let url = format!(
            "{}/v1/decisions/stream?startup={startup}&scopes=ip,range,device,token,user",
            cfg.url
        );
        let got = async {
            let r = client
                .get(&url)
                .header("X-Api-Key", &cfg.key)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("status {}", r.status()));
            }
            let body = r.bytes().await.map_err(|e| e.to_string())?;
            serde_json::from_slice::<Delta>(&body).map_err(|e| e.to_string())
        }
        .await;
        match got {
            Ok(delta) => {
                apply(&store, delta, startup);
                startup = false;
            }
            Err(e) => {
                if !startup {
                    tracing::warn!(error = %e, url = %cfg.url, "follow: pull failed; local decisions keep applying");
                }
                stats.follow_failures.fetch_add(1, Ordering::Relaxed);
                startup = true;
            }
        }
    }
}

fn apply(store: &Store, delta: Delta, startup: bool) {
    let now = unix_now();
    if startup {
        // The remote's state replaces what was followed before (decisions made here by
        // hand stay).
        for d in store.list() {
            if d.origin != "manual" {
                let _ = store.delete(d.id);
            }
        }
    }
    for r in delta.deleted.unwrap_or_default() {
        if let Some(scope) = Scope::from_name(&r.scope)
            && let Ok(v) = canonical(scope, &r.value)
            && let Ok(d) = store.delete_value(scope, &v)
            && d.origin == "manual"
        {
            // Not ours to lift: put it back.
            let _ = store.add(Ban {
                scope: d.scope,
                value: d.value.clone(),
                origin: &d.origin,
                scenario: &d.scenario,
                reason: &d.reason,
                now: d.created,
                until: d.until,
            });
        }
    }
    for r in delta.new.unwrap_or_default() {
        let (Some(scope), Some(until)) = (Scope::from_name(&r.scope), until_of(&r, now)) else {
            continue;
        };
        let Ok(value) = canonical(scope, &r.value) else {
            continue;
        };
        let origin = match r.origin.as_deref() {
            Some("manual") | None => "followed".to_string(),
            Some(o) => format!("followed:{o}"),
        };
        store.add(Ban {
            scope,
            value,
            origin: &origin,
            scenario: r.scenario.as_deref().unwrap_or("followed"),
            reason: "followed from the daemon",
            now,
            until,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_are_read() {
        assert_eq!(parse_go_duration("3h59m58s"), Some(14_398));
        assert_eq!(parse_go_duration("1m0.5s"), Some(60));
        assert_eq!(parse_go_duration("-4s"), Some(-4));
        assert_eq!(parse_go_duration("250ms"), Some(0));
        assert_eq!(parse_go_duration("3 days"), None);
    }
}
