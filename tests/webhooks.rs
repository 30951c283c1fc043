//! Webhooks against real receivers: an HTTPS receiver (rustls server, test CA from rcgen)
//! that checks every signature, down for a whole first run and flaky in the second, so
//! alerts are spooled, resent after a restart and retried; and a real Alertmanager (Debian's
//! `prometheus-alertmanager`) that must list the alerts it was sent.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod common;
use common::test_pki;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SECRET: &str = "webhook-test-secret-0123456789abcdef";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// What the receiver got: alert records by id, and any request it could not verify.
#[derive(Default)]
struct Received {
    alerts: Vec<Value>,
    bad: Vec<String>,
    requests: usize,
}

/// An HTTPS webhook receiver that verifies `X-Shieldtap-Signature` and answers 503 to the
/// first `fail_first` requests.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn hmac_hex(secret: &[u8], msg: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    aws_lc_rs::hmac::sign(&key, msg)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Receiver {
    fn start(
        port: u16,
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
        fail_first: usize,
    ) -> Receiver {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server cert");
        let config = Arc::new(config);
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
        let got = Arc::new(Mutex::new(Received::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(fail_first));
        let (g, s) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = conn else { continue };
                let _ = serve(tcp, &config, &g, &failures);
            }
        });
        Receiver {
            port,
            got,
            stop,
            thread: Some(thread),
        }
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(
    tcp: TcpStream,
    config: &Arc<rustls::ServerConfig>,
    got: &Mutex<Received>,
    failures: &AtomicUsize,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let conn = rustls::ServerConnection::new(config.clone()).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    loop {
        // One request per loop: head, then Content-Length bytes of body.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tls.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let header = |name: &str| -> Option<String> {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = tls.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = &buf[head_end..head_end + len];
        let fail = failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
            .is_ok();
        if fail {
            tls.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")?;
            tls.flush()?;
            continue;
        }
        {
            let mut g = got.lock().expect("lock");
            g.requests += 1;
            let ts = header("x-shieldtap-timestamp").unwrap_or_default();
            let want = format!(
                "sha256={}",
                hmac_hex(
                    SECRET.as_bytes(),
                    format!("{ts}.")
                        .as_bytes()
                        .iter()
                        .chain(body)
                        .copied()
                        .collect::<Vec<u8>>()
                        .as_slice()
                )
            );
            let sig = header("x-shieldtap-signature").unwrap_or_default();
            let fresh = ts
                .parse::<u64>()
                .ok()
                .and_then(|t| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .ok()?
                        .as_secs();
                    Some(now.abs_diff(t) < 300)
                })
                .unwrap_or(false);
            if sig != want || !fresh || header("idempotency-key").is_none() {
                g.bad.push(format!("signature {sig} timestamp {ts}"));
            } else {
                match serde_json::from_slice::<Value>(body) {
                    Ok(Value::Array(v)) => g.alerts.extend(v),
                    _ => g.bad.push("body is not a JSON array".into()),
                }
            }
        }
        tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
        tls.flush()?;
    }
}

fn shieldtap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .args(args)
        .current_dir(ROOT)
        .env("SHIELDTAP_TEST_WEBHOOK_SECRET", SECRET)
        .output()
        .expect("runs")
}

fn golden(sample: &str) -> Vec<Value> {
    std::fs::read_to_string(Path::new(ROOT).join(format!("samples/{sample}/alerts.jsonl")))
        .expect("alerts.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

fn replay(sample: &str, config: &Path, summary: &Path) -> Value {
    let capture = format!("samples/{sample}/capture.pcap");
    let o = shieldtap(&[
        "replay",
        &capture,
        "--config",
        config.to_str().expect("utf-8"),
        "--alerts-out",
        "/dev/null",
        "--summary-json",
        summary.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&std::fs::read_to_string(summary).expect("summary")).expect("json")
}

/// The sample's token secrets plus a webhook.
fn config_with(sample: &str, dir: &Path, webhook: &str) -> std::path::PathBuf {
    let base =
        std::fs::read_to_string(Path::new(ROOT).join(format!("samples/{sample}/shieldtap.toml")))
            .expect("sample config");
    let path = dir.join(format!("{sample}.toml"));
    std::fs::write(&path, format!("{base}\n{webhook}")).expect("write config");
    path
}

#[test]
fn https_receiver_gets_every_alert_signed_across_an_outage_and_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca_pem, cert, key) = test_pki();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).expect("ca");
    let port = free_port();
    let webhook = format!(
        "[[webhook]]\nname = \"soc\"\nurl = \"https://127.0.0.1:{port}/hook\"\nformat = \"json\"\nsecret_env = \"SHIELDTAP_TEST_WEBHOOK_SECRET\"\nca_file = \"{}\"\nspool_dir = \"{}\"\ndrain_secs = 3\nbatch_max = 5\n",
        ca.display(),
        dir.path().join("spool").display()
    );
    let summary = dir.path().join("summary.json");

    // Run 1: the receiver is down for the whole run; every alert stays spooled.
    let cfg = config_with("token-abuse", dir.path(), &webhook);
    let s = replay("token-abuse", &cfg, &summary);
    let w = &s["webhooks"][0];
    assert_eq!(w["receiver"], "soc");
    let first_run = golden("token-abuse").len();
    assert_eq!(w["queued"], first_run, "{s}");
    assert_eq!(w["delivered"], 0);
    assert_eq!(w["spool_depth"], first_run);
    assert!(w["retried"].as_u64() >= Some(1));

    // Run 2 (a restart): the receiver is up but fails its first three requests; the spooled
    // alerts of run 1 and the new ones of this run all arrive, signed.
    let mut receiver = Receiver::start(port, cert, key, 3);
    let cfg = config_with("bots-and-stuffing", dir.path(), &webhook);
    let s = replay("bots-and-stuffing", &cfg, &summary);
    let w = &s["webhooks"][0];
    assert_eq!(w["spool_depth"], 0, "{s}");
    assert_eq!(w["failed"], 0);
    assert!(w["retried"].as_u64() >= Some(3));
    receiver.shutdown();
    let got = receiver.got.lock().expect("lock");
    assert!(got.bad.is_empty(), "unverifiable requests: {:?}", got.bad);
    let mut want: Vec<Value> = golden("token-abuse");
    want.extend(golden("bots-and-stuffing"));
    let strip = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().map(|o| o.remove("id"));
        v.to_string()
    };
    let got_set: BTreeSet<String> = got.alerts.iter().map(strip).collect();
    let want_set: BTreeSet<String> = want.iter().map(strip).collect();
    assert_eq!(got.alerts.len(), want.len(), "each alert exactly once");
    assert_eq!(got_set, want_set);
    let ids: BTreeSet<&str> = got.alerts.iter().filter_map(|a| a["id"].as_str()).collect();
    assert_eq!(ids.len(), want.len(), "ids are unique per alert");
    // Batches of at most 5 alerts.
    assert!(got.requests >= want.len().div_ceil(5));
}

#[test]
fn min_severity_and_rule_routing_filter_what_is_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca_pem, cert, key) = test_pki();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).expect("ca");
    let port = free_port();
    let mut receiver = Receiver::start(port, cert, key, 0);
    let webhook = format!(
        "[[webhook]]\nurl = \"https://127.0.0.1:{port}/hook\"\nsecret = \"{SECRET}\"\nca_file = \"{}\"\nspool_dir = \"{}\"\nmin_severity = \"high\"\nrules = [\"stuffing.*\", \"bot.*\"]\n",
        ca.display(),
        dir.path().join("spool").display()
    );
    let cfg = config_with("bots-and-stuffing", dir.path(), &webhook);
    let summary = dir.path().join("summary.json");
    replay("bots-and-stuffing", &cfg, &summary);
    receiver.shutdown();
    let got = receiver.got.lock().expect("lock");
    assert!(got.bad.is_empty(), "{:?}", got.bad);
    let want: Vec<&Value> = golden("bots-and-stuffing")
        .iter()
        .filter(|a| a["severity"] == "high")
        .filter(|a| {
            let r = a["rule"].as_str().unwrap_or_default();
            r.starts_with("stuffing.") || r.starts_with("bot.")
        })
        .cloned()
        .collect::<Vec<_>>()
        .leak()
        .iter()
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got.alerts.len(), want.len());
    assert!(got.alerts.iter().all(|a| a["severity"] == "high"));
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    // Go answers an HTTP/1.0 request with HTTP/1.0.
    (head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")).then(|| body.to_string())
}

#[test]
fn alertmanager_receives_and_lists_the_alerts() {
    let Ok(bin) = which("prometheus-alertmanager") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs prometheus-alertmanager"
        );
        eprintln!("note: prometheus-alertmanager not installed; test skipped");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let am_cfg = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_cfg,
        "route:\n  receiver: blackhole\n  group_by: ['alertname']\nreceivers:\n  - name: blackhole\n",
    )
    .expect("am config");
    let port = free_port();
    let am = Command::new(bin)
        .arg(format!("--config.file={}", am_cfg.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("am").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("alertmanager starts");
    let _am = Killed(am);
    let start = Instant::now();
    while http_get(port, "/-/ready").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "alertmanager not ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let webhook = format!(
        "[[webhook]]\nname = \"am\"\nurl = \"http://127.0.0.1:{port}/api/v2/alerts\"\nformat = \"alertmanager\"\nspool_dir = \"{}\"\n",
        dir.path().join("spool").display()
    );
    let cfg = config_with("bots-and-stuffing", dir.path(), &webhook);
    let summary = dir.path().join("summary.json");
    let s = replay("bots-and-stuffing", &cfg, &summary);
    assert_eq!(
        s["webhooks"][0]["delivered"],
        golden("bots-and-stuffing").len(),
        "{s}"
    );
    let listed: Value =
        serde_json::from_str(&http_get(port, "/api/v2/alerts").expect("list alerts"))
            .expect("json");
    let labels = |a: &Value| {
        (
            a["labels"]["alertname"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            a["labels"]["actor_ip"].as_str().unwrap_or("-").to_string(),
            a["labels"]["actor_device"]
                .as_str()
                .unwrap_or("-")
                .to_string(),
        )
    };
    let got: BTreeSet<(String, String, String)> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(labels)
        .collect();
    // Alertmanager merges alerts with equal labels (an alert and its follow-up).
    let want: BTreeSet<(String, String, String)> = golden("bots-and-stuffing")
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap_or_default().to_string(),
                a["actor"]["ip"].as_str().unwrap_or("-").to_string(),
                a["actor"]["device"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    assert!(
        want.is_subset(&got),
        "missing in Alertmanager: {:?}",
        want.difference(&got).collect::<Vec<_>>()
    );
    for a in listed.as_array().expect("array") {
        assert_eq!(a["labels"]["source"], "shieldtap");
        assert!(
            a["annotations"]["summary"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );
        assert_eq!(a["status"]["state"], "active");
    }
}

fn which(bin: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(bin))
                .find(|f| f.is_file())
        })
        .ok_or(())
}
