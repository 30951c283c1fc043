//! The enforcement endpoint over real HTTP on loopback: the request shapes nginx
//! `auth_request`, Envoy `ext_authz` and Traefik `ForwardAuth` send (recorded from the real
//! gateways: nginx 1.22.1 from Debian, Envoy 1.40.0 and Traefik 3.7.15 from their PyPI
//! wheels, see README "Gateways"), hostile input, the bouncer and admin APIs, a separate
//! check process following a daemon, and the decisions a real mobile-network capture makes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use shieldtap::config::Config;
use shieldtap::enforce::check::{CheckInput, Checker};
use shieldtap::enforce::server::EnforceServer;
use shieldtap::enforce::{Scope, Store, unix_now};
use shieldtap::token::Verifier;

/// The samples' test Approov secret ("shieldtap-sample-account-secret-0123456789").
const SECRET_B64: &str = "c2hpZWxkdGFwLXNhbXBsZS1hY2NvdW50LXNlY3JldC0wMTIzNDU2Nzg5";
const BOUNCER_KEY: &str = "bouncer-key-0123456789";
const ADMIN_KEY: &str = "admin-key-0123456789ab";

fn config(enforce: &str) -> Config {
    let text = format!(
        r#"
[[attestation]]
name = "approov"
header = "Approov-Token"
algorithms = ["HS256"]
secret_base64 = "{SECRET_B64}"
binding_headers = ["Authorization"]
missing_binding = "accept"

[enforce]
listen = "127.0.0.1:0"
default_policy = "require-attestation"
{enforce}

[[enforce.route]]
name = "first-start"
routes = ["/api/v1/login"]
policy = "monitor"

[[enforce.bouncer]]
name = "fw"
api_key = "{BOUNCER_KEY}"
"#
    );
    Config::parse(&text, "test.toml").expect("test config")
}

struct Endpoint {
    server: EnforceServer,
    checker: Arc<Checker>,
    store: Arc<Store>,
    verifier: Arc<Verifier>,
}

fn start(enforce: &str) -> Endpoint {
    let cfg = config(enforce);
    let e = cfg.enforce.clone().expect("[enforce]");
    // The token cache gets 1 MiB, as a 256 MiB budget's share would be a few.
    let verifier =
        Arc::new(Verifier::with_cache_bytes(cfg.token.clone(), 1 << 20).expect("verifier"));
    let store = Arc::new(Store::open(e.max_decisions, e.state_file.clone(), unix_now()).unwrap());
    let v = verifier.clone();
    let checker = Arc::new(Checker::new(
        Arc::new(e),
        store.clone(),
        Arc::new(move || v.clone()),
    ));
    let server = EnforceServer::start(checker.clone(), None).expect("endpoint starts");
    Endpoint {
        server,
        checker,
        store,
        verifier,
    }
}

/// A genuine app's Approov token for `did`, bound to `authorization`.
fn token(did: &str, authorization: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let pay = b64.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        authorization.as_bytes(),
    ));
    let claims = serde_json::json!({"exp": unix_now() + 300, "did": did, "pay": pay});
    let key = jsonwebtoken::EncodingKey::from_secret(&b64.decode(SECRET_B64).unwrap()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .unwrap()
}

struct Answer {
    status: u16,
    head: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Sends a raw request (its head as recorded, `Connection: close` added) and reads the
/// answer.
fn send(addr: SocketAddr, raw_head: &str) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = raw_head.trim_end().replace('\n', "\r\n");
    write!(s, "{head}\r\nConnection: close\r\n\r\n").expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Answer { status, head: text }
}

/// The three gateways' requests for `GET <uri>` from 203.0.113.7, as recorded (headers in
/// wire order), with the app's headers substituted.
fn gateway_requests(uri: &str, app_headers: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let app: String = app_headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\n"))
        .collect();
    let app_lower: String = app_headers
        .iter()
        .map(|(n, v)| format!("{}: {v}\n", n.to_ascii_lowercase()))
        .collect();
    vec![
        (
            "nginx",
            format!(
                "GET /v1/check/nginx HTTP/1.1\nX-Original-URI: {uri}\nX-Original-Method: GET\nX-Real-IP: 203.0.113.7\nX-Forwarded-For: 203.0.113.7\nHost: shieldtap_check\nUser-Agent: curl/7.88.1\nAccept: */*\n{app}"
            ),
        ),
        (
            "envoy",
            format!(
                "GET /v1/check/envoy{uri} HTTP/1.1\nhost: 203.0.113.7:10000\ncontent-length: 0\nx-request-id: 49b32220-a8f3-44a5-8792-85489aee6ff9\n{app_lower}x-forwarded-for: 203.0.113.7\nuser-agent: curl/7.88.1\nx-envoy-internal: true\nx-envoy-expected-rq-timeout-ms: 250\n"
            ),
        ),
        (
            "traefik",
            format!(
                "GET /v1/check/traefik HTTP/1.1\nHost: 127.0.0.1:9478\nUser-Agent: curl/7.88.1\nAccept: */*\n{app}X-Forwarded-For: 203.0.113.7\nX-Forwarded-Host: 203.0.113.7:8082\nX-Forwarded-Method: GET\nX-Forwarded-Port: 8082\nX-Forwarded-Proto: http\nX-Forwarded-Uri: {uri}\nAccept-Encoding: gzip\n"
            ),
        ),
    ]
}

#[test]
fn nginx_envoy_and_traefik_requests_are_judged_alike() {
    let ep = start("");
    let addr = ep.server.addr;
    let auth = "Bearer abc";
    let good = token("device-1", auth);
    let genuine = [("Authorization", auth), ("Approov-Token", good.as_str())];
    for (gw, req) in gateway_requests("/api/v1/users/42?x=1", &genuine) {
        let a = send(addr, &req);
        assert_eq!(a.status, 200, "{gw}: {}", a.head);
        assert_eq!(
            a.header("x-shieldtap-verdict").as_deref(),
            Some("valid"),
            "{gw}"
        );
        assert_eq!(
            a.header("x-shieldtap-device").as_deref(),
            Some("device-1"),
            "{gw}"
        );
        assert_eq!(
            a.header("x-shieldtap-policy").as_deref(),
            Some("default"),
            "{gw}"
        );
        assert!(!a.head.contains(&good), "{gw}: the token is never echoed");
    }
    // A script without a token: refused on the API, let through (and counted) on login.
    let script = [("Authorization", auth)];
    for (gw, req) in gateway_requests("/api/v1/users/42?x=1", &script) {
        let a = send(addr, &req);
        assert_eq!(a.status, 401, "{gw}");
        assert_eq!(a.header("x-shieldtap-verdict").as_deref(), Some("missing"));
    }
    for (gw, req) in gateway_requests("/api/v1/login", &script) {
        let a = send(addr, &req);
        assert_eq!(a.status, 200, "{gw}");
        assert_eq!(
            a.header("x-shieldtap-result").as_deref(),
            Some("would-deny")
        );
        assert_eq!(
            a.header("x-shieldtap-policy").as_deref(),
            Some("first-start")
        );
    }
    // A token bound to another Authorization value (a lifted token).
    let lifted = [
        ("Authorization", "Bearer other"),
        ("Approov-Token", good.as_str()),
    ];
    for (gw, req) in gateway_requests("/api/v1/users/42", &lifted) {
        let a = send(addr, &req);
        assert_eq!(a.status, 401, "{gw}");
        assert_eq!(
            a.header("x-shieldtap-verdict").as_deref(),
            Some("binding-mismatch")
        );
    }
    // The client address each gateway names is the one a decision bans: 403, even for a
    // genuine token, on every gateway.
    let now = unix_now();
    let d = shieldtap::enforce::decisions::Ban {
        scope: Scope::Ip,
        value: "203.0.113.7".into(),
        origin: "manual",
        scenario: "manual",
        reason: "test",
        now,
        until: now + 60,
    };
    let id = ep.store.add(d).unwrap().id;
    for (gw, req) in gateway_requests("/api/v1/users/42", &genuine) {
        let a = send(addr, &req);
        assert_eq!(a.status, 403, "{gw}");
        assert_eq!(a.header("x-shieldtap-decision"), Some(id.to_string()));
        assert_eq!(
            a.header("x-shieldtap-decision-scope").as_deref(),
            Some("ip")
        );
    }
    let checks: u64 = ep.checker.stats.checks().iter().map(|c| c.2).sum();
    assert_eq!(checks, 15);
}

#[test]
fn hostile_input_gets_a_precise_answer_and_the_endpoint_stays_up() {
    let ep = start("header_read_timeout_secs = 0.5\nmax_connections = 4");
    let addr = ep.server.addr;
    // A head past 64 KiB: refused (431), not buffered without bound.
    let huge = "a".repeat(100 * 1024);
    let a = send(
        addr,
        &format!(
            "GET /v1/check HTTP/1.1\nHost: x\nX-Original-URI: /api/x\nApproov-Token: {huge}\n"
        ),
    );
    assert_eq!(a.status, 431, "{}", &a.head[..a.head.len().min(200)]);
    // No original URI: judged under the default policy, and counted.
    let a = send(addr, "GET /v1/check HTTP/1.1\nHost: x\n");
    assert_eq!(a.status, 401);
    assert_eq!(
        ep.checker
            .stats
            .no_uri
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Garbage in the token header: a verdict, never a crash.
    for (garbage, verdict) in [
        ("not-a-jwt", "malformed"),
        ("a.b.c", "malformed"),
        ("eyJhbGciOiJub25lIn0.eyJleHAiOjF9.", "alg-not-allowed"),
        ("NO_NETWORK", "status-value"),
    ] {
        let a = send(
            addr,
            &format!(
                "GET /v1/check HTTP/1.1\nHost: x\nX-Original-URI: /api/x\nApproov-Token: {garbage}\n"
            ),
        );
        assert_eq!(a.status, 401, "{garbage}");
        assert_eq!(
            a.header("x-shieldtap-verdict").as_deref(),
            Some(verdict),
            "{garbage}"
        );
    }
    let forged = format!("{}x", token("device-1", "Bearer abc"));
    let a = send(
        addr,
        &format!(
            "GET /v1/check HTTP/1.1\nHost: x\nX-Original-URI: /api/x\nAuthorization: Bearer abc\nApproov-Token: {forged}\n"
        ),
    );
    assert_eq!(
        a.header("x-shieldtap-verdict").as_deref(),
        Some("bad-signature")
    );
    // A client that never finishes its head is cut at the header timeout...
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /v1/check HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 256];
    let _ = slow.read(&mut buf);
    assert!(t.elapsed() < Duration::from_secs(3), "slow head cut");
    // ...and past max_connections a connection is closed at once.
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = TcpStream::connect(addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _ = extra.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let n = extra.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "refused connection is closed unanswered");
    assert!(
        ep.checker
            .stats
            .connections_refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(send(addr, "GET /health HTTP/1.1\nHost: x\n").status, 200);
}

#[test]
fn a_flood_of_random_tokens_keeps_the_genuine_verdict_cached_and_memory_bounded() {
    let ep = start("");
    let auth = "Bearer abc";
    let good = token("device-1", auth);
    let check = |tok: &str| {
        let hs: shieldtap::http::Headers = [("Authorization", auth), ("Approov-Token", tok)]
            .into_iter()
            .collect();
        let input = CheckInput {
            method: "GET",
            uri: Some("/api/v1/me"),
            host: None,
            peer: "192.0.2.1".parse().unwrap(),
            headers: &hs,
        };
        ep.checker.check(&input, unix_now() as f64)
    };
    for _ in 0..20 {
        assert_eq!(check(&good).status, 200);
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    for i in 0..30_000u32 {
        // Well-formed HS256 tokens with random signatures: each one is verified (a miss).
        let t = format!(
            "eyJhbGciOiJIUzI1NiJ9.{}.{}",
            b64.encode(format!(
                "{{\"exp\":{},\"did\":\"bot-{i}\"}}",
                unix_now() + 300
            )),
            b64.encode(i.to_le_bytes().repeat(8))
        );
        assert_eq!(check(&t).status, 401);
    }
    let before = ep.verifier.stats();
    assert_eq!(check(&good).status, 200, "the genuine token is still valid");
    let after = ep.verifier.stats();
    assert_eq!(after.cache_hits, before.cache_hits + 1, "and still cached");
    assert!(
        after.cache_bytes <= after.cache_limit_bytes,
        "{} > {}",
        after.cache_bytes,
        after.cache_limit_bytes
    );
    let verdicts: std::collections::BTreeMap<_, _> =
        ep.checker.stats.verdicts().into_iter().collect();
    assert_eq!(verdicts["valid"], 21);
    assert_eq!(verdicts["bad-signature"], 30_000);
}

fn http(method: &str, url: &str, key: Option<&str>, body: Option<&str>) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let mut r = c.request(method.parse().unwrap(), url);
        if let Some(k) = key {
            r = r.header("X-Api-Key", k);
        }
        if let Some(b) = body {
            r = r
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = r.send().await.expect("request");
        let s = resp.status().as_u16();
        (s, resp.text().await.unwrap_or_default())
    })
}

#[test]
fn bouncer_and_admin_apis_need_their_keys_and_decisions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("decisions.json");
    let extra = format!(
        "admin_key = \"{ADMIN_KEY}\"\nstate_file = \"{}\"\nallow_networks = [\"10.0.0.0/8\"]",
        state.display()
    );
    let ep = start(&extra);
    let base = format!("http://{}", ep.server.addr);
    let add = |body: &str, key| {
        http(
            "POST",
            &format!("{base}/v1/admin/decisions"),
            key,
            Some(body),
        )
    };
    let ban = r#"{"scope":"ip","value":"198.51.100.9","duration_secs":3600,"reason":"test"}"#;
    assert_eq!(add(ban, None).0, 403, "no admin key");
    assert_eq!(add(ban, Some("wrong-key-0123456789")).0, 403);
    let (s, body) = add(ban, Some(ADMIN_KEY));
    assert_eq!(s, 201, "{body}");
    let (s, body) = add(
        r#"{"scope":"ip","value":"10.1.2.3","duration_secs":60}"#,
        Some(ADMIN_KEY),
    );
    assert_eq!(s, 409, "allow-listed: {body}");
    assert_eq!(
        add(
            r#"{"scope":"ip","value":"nope","duration_secs":60}"#,
            Some(ADMIN_KEY)
        )
        .0,
        400
    );
    let (s, body) = add(
        r#"{"scope":"device","value":"dev-7","duration_secs":3600}"#,
        Some(ADMIN_KEY),
    );
    assert_eq!(s, 201, "{body}");
    // The bouncer: a bad key is refused and counted; the stream holds address decisions only
    // (bouncers ask no scopes), device decisions on request.
    let stream = format!("{base}/v1/decisions/stream?startup=true");
    assert_eq!(http("GET", &stream, Some("bad"), None).0, 403);
    assert_eq!(
        ep.checker
            .stats
            .bouncer_unauthorized
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let (s, body) = http("GET", &stream, Some(BOUNCER_KEY), None);
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let new = v["new"].as_array().expect("new decisions");
    assert_eq!(new.len(), 1, "{body}");
    assert_eq!(new[0]["scope"], "Ip");
    assert_eq!(new[0]["value"], "198.51.100.9");
    assert_eq!(new[0]["type"], "ban");
    let dur = new[0]["duration"].as_str().unwrap();
    assert!(dur.starts_with("59m") || dur.starts_with("1h0m"), "{dur}");
    let (_, body) = http(
        "GET",
        &format!("{base}/v1/decisions?ip=198.51.100.9"),
        Some(BOUNCER_KEY),
        None,
    );
    assert!(body.contains("198.51.100.9"));
    let (_, body) = http(
        "GET",
        &format!("{base}/v1/decisions?ip=198.51.100.10"),
        Some(BOUNCER_KEY),
        None,
    );
    assert_eq!(body, "null");
    // A restart keeps them.
    let Endpoint { server, .. } = ep;
    server.stop();
    let again = start(&extra);
    assert_eq!(again.store.len(), 2);
    assert!(
        again
            .store
            .find(None, Some("dev-7"), None, None, unix_now())
            .is_some()
    );
}

#[test]
fn a_separate_check_endpoint_follows_the_daemons_decisions() {
    let daemon = start("");
    let follower = start(&format!(
        "follow = \"http://{}\"\nfollow_key = \"{BOUNCER_KEY}\"\nfollow_interval_secs = 0.2",
        daemon.server.addr
    ));
    let now = unix_now();
    let ban = |scope, value: &str| shieldtap::enforce::decisions::Ban {
        scope,
        value: value.into(),
        origin: "shieldtap",
        scenario: "scraping.sequential-walk",
        reason: "test",
        now,
        until: now + 600,
    };
    daemon.store.add(ban(Scope::Device, "dev-9")).unwrap();
    let t = Instant::now();
    let seen = |f: &Endpoint| {
        f.store
            .find(None, Some("dev-9"), None, None, unix_now())
            .is_some()
    };
    while !seen(&follower) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "follower never got the decision"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("decision followed in {:?}", t.elapsed());
    let id = daemon
        .store
        .find(None, Some("dev-9"), None, None, unix_now())
        .unwrap()
        .id;
    daemon.store.delete(id).unwrap();
    let t = Instant::now();
    while seen(&follower) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "follower never lifted the decision"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The mobile-network sample (real clients: carrier NAT, roaming, background sync, a
/// token copier, a stuffer, a scraper, a BOLA prober, a device farm) replayed with the
/// built-in rules' bans: decisions fall on attackers only, never on a genuine actor's
/// address, device or user, and never on a shared carrier-NAT address.
#[test]
fn mobile_network_decisions_fall_on_attackers_never_on_genuine_phones_or_nat() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/mobile-network");
    let cfg = Config::load(&dir.join("shieldtap.toml")).unwrap();
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("truth.json")).unwrap()).unwrap();
    let store = Arc::new(Store::new(1000, None));
    let decider = Arc::new(shieldtap::enforce::Decider::new(
        Arc::new(shieldtap::enforce::EnforceConfig::default()),
        store.clone(),
    ));
    let outputs = shieldtap::runtime::Outputs {
        decisions: Some(shieldtap::runtime::DecisionSink { decider, log: None }),
        ..Default::default()
    };
    shieldtap::runtime::replay(
        &cfg,
        shieldtap::rules::builtin().unwrap(),
        &[dir.join("capture.pcap")],
        2,
        outputs,
        &shieldtap::capture::Progress::default(),
    )
    .unwrap();
    // Decisions are judged at the end of the capture's packet time: look at all ever made.
    let made = store.list();
    assert!(!made.is_empty());
    let mut genuine = std::collections::BTreeSet::new();
    let mut attackers = std::collections::BTreeSet::new();
    for a in truth["actors"].as_array().unwrap() {
        let set = if a["role"] == "genuine" {
            &mut genuine
        } else {
            &mut attackers
        };
        for k in ["addresses", "devices", "users"] {
            for v in a[k].as_array().into_iter().flatten() {
                set.insert(v.as_str().unwrap().to_string());
            }
        }
    }
    let shared: Vec<String> = truth["shared_addresses"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for d in &made {
        assert!(!shared.contains(&d.value), "shared address banned: {d:?}");
        assert!(!genuine.contains(&d.value), "genuine actor banned: {d:?}");
        assert!(
            attackers.contains(&d.value) || d.scope == Scope::Token,
            "{d:?}"
        );
    }
    let banned: std::collections::BTreeSet<&str> = made.iter().map(|d| d.value.as_str()).collect();
    for must in ["127.88.0.10", "127.66.0.10"] {
        assert!(
            banned.contains(must),
            "{must} (scraper, token copier) not banned: {banned:?}"
        );
    }
}
