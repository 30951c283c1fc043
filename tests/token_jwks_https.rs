//! A JWKS served over real HTTPS (rustls server, test CA made with rcgen) is fetched, used,
//! refreshed on its interval after a key rotation, and outlives the server going away.
//! Tokens and key sets come from the PyJWT fixtures (`tests/fixtures/tokens/rotation*.json`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod common;
use common::test_pki;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use shieldtap::token::{RawAttestation, TokenConfig, Verdict, Verifier};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokens");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture present")
}

/// A one-file HTTPS server: answers every request with the current body.
struct JwksServer {
    port: u16,
    body: Arc<Mutex<Vec<u8>>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl JwksServer {
    fn start(
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
        body: Vec<u8>,
    ) -> JwksServer {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server cert");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("addr").port();
        let body = Arc::new(Mutex::new(body));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, r, s) = (Arc::clone(&body), Arc::clone(&requests), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break; // the listener drops here: later connections are refused
                }
                let Ok(tcp) = conn else { continue };
                let _ = serve(tcp, &config, &b, &r);
            }
        });
        JwksServer {
            port,
            body,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/.well-known/jwks.json", self.port)
    }

    fn set_body(&self, body: Vec<u8>) {
        *self.body.lock().expect("body lock") = body;
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread");
        }
    }
}

fn serve(
    tcp: TcpStream,
    config: &Arc<rustls::ServerConfig>,
    body: &Mutex<Vec<u8>>,
    requests: &AtomicUsize,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let conn = rustls::ServerConnection::new(Arc::clone(config)).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf)?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let body = body.lock().expect("body lock").clone();
    write!(
        tls,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    tls.write_all(&body)?;
    tls.flush()?;
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(())
}

fn verifier(url: String, ca_file: Option<std::path::PathBuf>, refresh_secs: u64) -> Verifier {
    let raw = RawAttestation {
        name: Some("keyset".into()),
        algorithms: Some(vec!["ES256".into()]),
        jwks_url: Some(url),
        jwks_ca_file: ca_file,
        jwks_refresh_secs: Some(refresh_secs),
        ..Default::default()
    };
    Verifier::new(TokenConfig::from_raw(&[raw], None).expect("config")).expect("verifier")
}

struct Rotation {
    now: f64,
    token_a: String,
    token_b: String,
}

fn rotation() -> Rotation {
    let v: serde_json::Value =
        serde_json::from_slice(&fixture("rotation.json")).expect("rotation.json");
    Rotation {
        now: v["now"].as_f64().expect("now"),
        token_a: v["token_a"].as_str().expect("token_a").to_owned(),
        token_b: v["token_b"].as_str().expect("token_b").to_owned(),
    }
}

fn judge(v: &Verifier, token: &str, now: f64) -> Verdict {
    v.attest(
        &shieldtap::http::Headers::from_iter([("Approov-Token", token.as_bytes())]),
        "/",
        now,
    )
    .verdict
}

#[test]
fn jwks_over_https_is_fetched_refreshed_and_kept() {
    let started = Instant::now();
    let (ca_pem, cert, key) = test_pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_pem).expect("write ca");
    let mut server = JwksServer::start(cert, key, fixture("rotation_a.json"));
    let rot = rotation();

    // Fetched at startup and used.
    let v = verifier(server.url(), Some(ca_path), 1);
    assert_eq!(judge(&v, &rot.token_a, rot.now), Verdict::Valid);
    let a = v.attest(
        &shieldtap::http::Headers::from_iter([("Approov-Token", rot.token_a.as_bytes())]),
        "/",
        rot.now,
    );
    assert_eq!(a.device.as_deref(), Some("rot-device-a"));
    assert_eq!(judge(&v, &rot.token_b, rot.now), Verdict::UnknownKey);
    assert!(v.stats().jwks_refresh_ok >= 1);

    // The server rotates its keys; the interval refresh picks them up and the cached
    // verdicts judged with the old set are judged again.
    server.set_body(fixture("rotation_b.json"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while judge(&v, &rot.token_b, rot.now) != Verdict::Valid {
        assert!(
            Instant::now() < deadline,
            "rotation not picked up: {:?}",
            v.stats()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(judge(&v, &rot.token_a, rot.now), Verdict::UnknownKey);

    // The server goes away: fetches fail, the last good keys stay.
    let served = server.requests.load(Ordering::SeqCst);
    assert!(served >= 2, "{served} requests");
    server.shutdown();
    let failed_before = v.stats().jwks_refresh_failed;
    assert!(v.refresh_jwks_now().is_err());
    assert!(v.stats().jwks_refresh_failed > failed_before);
    assert_eq!(judge(&v, &rot.token_b, rot.now), Verdict::Valid);
    assert_eq!(judge(&v, &rot.token_a, rot.now), Verdict::UnknownKey);
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn jwks_server_outside_the_trusted_roots_is_refused() {
    let (_ca_pem, cert, key) = test_pki();
    let mut server = JwksServer::start(cert, key, fixture("rotation_a.json"));
    let rot = rotation();
    // Without the test CA the certificate cannot be verified: no keys, every token unknown.
    let v = verifier(server.url(), None, 3600);
    assert_eq!(judge(&v, &rot.token_a, rot.now), Verdict::UnknownKey);
    assert!(v.stats().jwks_refresh_failed >= 1);
    assert_eq!(v.stats().jwks_refresh_ok, 0);
    server.shutdown();
}
