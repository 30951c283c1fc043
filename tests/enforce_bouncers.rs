//! Real CrowdSec bouncers from Debian against shieldtap's bouncer API (issue 18).
//!
//! `shieldtap enforce` serves the decisions stream; decisions are made by hand with
//! `shieldtap decisions add|delete`; the bouncers are the packaged binaries, unchanged:
//!
//! - `crowdsec-custom-bouncer` (0.0.15 on Debian 12) in the foreground, polling every
//!   second, with a script that records its argv: it must be told `add` for the address
//!   and the range (never the device decision: bouncers ask no `scopes`, which means
//!   `ip,range`), `del` when a decision is deleted by hand and when one expires.
//! - `crowdsec-firewall-bouncer` (0.0.25) in nftables mode inside a network namespace this
//!   test creates: the banned address lands in `ip crowdsec crowdsec-blacklists`, TCP from
//!   it to a listener in that namespace is dropped while another client still connects, and
//!   the element goes when the decision is deleted. The same bouncer with a wrong API key
//!   is refused with 403 (it gives up and exits, as against a real LAPI) and
//!   `shieldtap_bouncer_unauthorized_total` counts the refusals.
//!
//! Not asserted: ranges on the firewall bouncer. Its 0.0.25 nftables set has no
//! `flags interval`, so a `Range` decision `198.51.100.0/24` is stored as the single
//! address 198.51.100.0 (only that address is dropped); the custom bouncer receives ranges
//! unchanged.
//!
//! Needs the Debian packages `crowdsec-custom-bouncer`, `crowdsec-firewall-bouncer`,
//! `nftables` and `curl` (install with `--no-install-recommends`, else apt pulls the real
//! `crowdsec`); the firewall test needs root. Skipped with a note when they are missing,
//! unless CI is set.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BOUNCER_KEY: &str = "bouncer-key-0123456789abcdef";
const ADMIN_KEY: &str = "admin-key-0123456789abcdef";

fn shieldtap() -> &'static str {
    env!("CARGO_BIN_EXE_shieldtap")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True (skip) when a requirement is missing outside CI; in CI a missing one fails.
fn skip(what: &str, root: bool, tools: &[&str]) -> bool {
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| !have(t))
        .map(|t| t.to_string())
        .collect();
    if root && !is_root() {
        missing.push("root".into());
    }
    if missing.is_empty() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide {} for {what}",
        missing.join(", ")
    );
    eprintln!("note: {} missing, {what} skipped", missing.join(", "));
    true
}

fn run(args: &[&str]) -> Output {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(
        o.status.success(),
        "{} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `args`, inside `netns` when given.
fn cmd(netns: Option<&str>, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = match netns {
        Some(n) => ["ip", "netns", "exec", n].map(String::from).to_vec(),
        None => Vec::new(),
    };
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

fn run_in(netns: Option<&str>, args: &[&str]) -> String {
    let v = cmd(netns, args);
    let v: Vec<&str> = v.iter().map(String::as_str).collect();
    String::from_utf8_lossy(&run(&v).stdout).into_owned()
}

/// A child killed on drop.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `args` (inside `netns`), stdout and stderr to `log`.
fn spawn(name: &'static str, netns: Option<&str>, args: &[&str], log: &Path) -> Proc {
    let v = cmd(netns, args);
    let out = std::fs::File::create(log).expect("log file");
    let child = Command::new(&v[0])
        .args(&v[1..])
        .current_dir(ROOT)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    Proc { child, name }
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// `curl` (inside `netns`): (status, body).
fn curl(netns: Option<&str>, url: &str, headers: &[&str]) -> (u16, String) {
    let mut args = vec!["curl", "-sS", "-m", "5", "-o", "-", "-w", "\n%{http_code}"];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(url);
    let out = run_in(netns, &args);
    let (body, code) = out.rsplit_once('\n').expect("curl status line");
    (code.trim().parse().expect("status"), body.to_string())
}

fn metric(netns: Option<&str>, base: &str, name: &str) -> u64 {
    let (status, text) = curl(netns, &format!("{base}/metrics"), &[]);
    assert_eq!(status, 200, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// `shieldtap decisions ARGS --url BASE` (inside `netns`), the admin key in the
/// environment when given.
fn decisions(netns: Option<&str>, base: &str, admin_key: Option<&str>, args: &[&str]) -> String {
    let mut v = cmd(netns, &[shieldtap(), "decisions"]);
    v.extend(args.iter().map(|s| s.to_string()));
    v.extend(["--url".to_string(), base.to_string()]);
    let mut c = Command::new(&v[0]);
    c.args(&v[1..]);
    if let Some(k) = admin_key {
        c.env("SHIELDTAP_TEST_ADMIN_KEY", k)
            .args(["--api-key-env", "SHIELDTAP_TEST_ADMIN_KEY"]);
    }
    let o = c.output().expect("shieldtap decisions");
    assert!(
        o.status.success(),
        "shieldtap decisions {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `shieldtap enforce` with the bouncer key (and the admin key when given), answering /health.
fn start_enforce(dir: &Path, netns: Option<&str>, listen: &str, admin_key: Option<&str>) -> Proc {
    let mut toml = format!(
        "[enforce]\nlisten = \"{listen}\"\n\n[[enforce.bouncer]]\nname = \"debian\"\napi_key = \"{BOUNCER_KEY}\"\n"
    );
    if let Some(k) = admin_key {
        toml = toml.replace(
            "[[enforce.bouncer]]",
            &format!("admin_key = \"{k}\"\n\n[[enforce.bouncer]]"),
        );
    }
    let cfg = dir.join("enforce.toml");
    std::fs::write(&cfg, toml).expect("config");
    let p = spawn(
        "shieldtap enforce",
        netns,
        &[shieldtap(), "enforce", "--config", cfg.to_str().unwrap()],
        &dir.join("enforce.log"),
    );
    let base = format!("http://{listen}");
    let probe = cmd(
        netns,
        &["curl", "-sf", "-m", "1", &format!("{base}/health")],
    );
    wait_until("shieldtap enforce /health", Duration::from_secs(10), || {
        Command::new(&probe[0])
            .args(&probe[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The calls the custom bouncer made to the script: argv, one call a line, tab-separated.
fn calls(log: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('\t').map(String::from).collect())
        .collect()
}

fn find<'a>(calls: &'a [Vec<String>], action: &str, value: &str) -> Option<&'a Vec<String>> {
    calls
        .iter()
        .find(|c| c.first().is_some_and(|a| a == action) && c.get(1).is_some_and(|v| v == value))
}

#[test]
fn custom_bouncer_runs_the_script_for_address_decisions() {
    if skip(
        "the custom bouncer test",
        false,
        &["crowdsec-custom-bouncer", "curl"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let _enforce = start_enforce(d, None, &listen, Some(ADMIN_KEY));

    // Before the bouncer starts: an address, a range and a device (which it must never
    // see). The first poll (`startup=true`) carries them.
    let admin = Some(ADMIN_KEY);
    decisions(
        None,
        &base,
        admin,
        &[
            "add",
            "--scope",
            "ip",
            "--value",
            "192.0.2.10",
            "--duration",
            "1h",
        ],
    );
    decisions(
        None,
        &base,
        admin,
        &[
            "add",
            "--scope",
            "range",
            "--value",
            "198.51.100.0/24",
            "--duration",
            "2h",
        ],
    );
    decisions(
        None,
        &base,
        admin,
        &[
            "add",
            "--scope",
            "device",
            "--value",
            "device-7f3a",
            "--duration",
            "1h",
        ],
    );
    // The admin API needs its key: without it, refused.
    let (status, _) = curl(None, &format!("{base}/v1/admin/decisions"), &[]);
    assert_eq!(status, 403, "admin API without its key");

    let log = d.join("calls.log");
    let script = d.join("record.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# what crowdsec-custom-bouncer passes, one call a line\nIFS=\"$(printf '\\t')\"\nprintf '%s\\n' \"$*\" >> '{}'\n",
            log.display()
        ),
    )
    .expect("script");
    run(&["chmod", "+x", script.to_str().unwrap()]);
    let conf = d.join("custom-bouncer.yaml");
    std::fs::write(
        &conf,
        format!(
            "bin_path: {}\nfeed_via_stdin: false\ntotal_retries: 0\nscenarios_containing: []\n\
             scenarios_not_containing: []\norigins: []\npiddir: {}/\nupdate_frequency: 1s\n\
             cache_retention_duration: 10s\ndaemonize: false\nlog_mode: stdout\nlog_level: info\n\
             api_url: {base}/\napi_key: {BOUNCER_KEY}\nprometheus:\n  enabled: false\n",
            script.display(),
            d.display()
        ),
    )
    .expect("bouncer config");
    let bouncer_log = d.join("custom-bouncer.log");
    let _bouncer = spawn(
        "crowdsec-custom-bouncer",
        None,
        &["crowdsec-custom-bouncer", "-c", conf.to_str().unwrap()],
        &bouncer_log,
    );
    let limit = Duration::from_secs(8);
    let context = || {
        format!(
            "script calls {:?}\nbouncer log:\n{}",
            calls(&log),
            std::fs::read_to_string(&bouncer_log).unwrap_or_default()
        )
    };
    wait_until("add for the address and the range", limit, || {
        let c = calls(&log);
        find(&c, "add", "192.0.2.10").is_some() && find(&c, "add", "198.51.100.0/24").is_some()
    });
    let c = calls(&log);
    for (value, secs, scope) in [
        ("192.0.2.10", 3600, "Ip"),
        ("198.51.100.0/24", 7200, "Range"),
    ] {
        let call = find(&c, "add", value).unwrap();
        // add <value> <seconds left> <scenario> <decision as JSON>
        assert_eq!(call.len(), 5, "argv of {value}: {call:?}");
        let left: i64 = call[2].parse().expect("seconds");
        assert!((secs - 30..=secs).contains(&left), "{value}: {left} s left");
        assert_eq!(call[3], "manual", "scenario of {value}");
        let json: serde_json::Value = serde_json::from_str(&call[4]).expect("decision JSON");
        assert_eq!(json["scope"], scope, "{value}");
        assert_eq!(json["type"], "ban", "{value}");
        assert_eq!(json["origin"], "manual", "{value}");
    }

    // Once it runs: a decision deleted by hand, and one that expires, both become `del`.
    decisions(
        None,
        &base,
        admin,
        &[
            "add",
            "--scope",
            "ip",
            "--value",
            "192.0.2.77",
            "--duration",
            "3s",
        ],
    );
    wait_until("add for the short decision", limit, || {
        find(&calls(&log), "add", "192.0.2.77").is_some()
    });
    let out = decisions(
        None,
        &base,
        admin,
        &["delete", "--scope", "ip", "--value", "192.0.2.10"],
    );
    assert!(out.contains("192.0.2.10"), "delete answered {out}");
    let took = wait_until("del for the deleted address", limit, || {
        find(&calls(&log), "del", "192.0.2.10").is_some()
    });
    eprintln!("del of a deleted decision reached the script after {took:?}");
    let took = wait_until("del for the expired address", limit, || {
        find(&calls(&log), "del", "192.0.2.77").is_some()
    });
    eprintln!("del of an expired decision reached the script {took:?} after the delete");

    let c = calls(&log);
    assert!(
        c.iter().flatten().all(|a| !a.contains("device-7f3a")),
        "the device decision reached a bouncer: {}",
        context()
    );
    assert!(
        find(&c, "del", "198.51.100.0/24").is_none(),
        "the range was never deleted: {}",
        context()
    );
    // One add per decision: the stream sends each once (then only changes).
    assert_eq!(
        c.iter().filter(|c| c[0] == "add").count(),
        3,
        "{}",
        context()
    );
    // The device decision is still there, for the check endpoint.
    let list = decisions(None, &base, admin, &["list"]);
    assert!(list.contains("device-7f3a"), "decisions list: {list}");
    assert!(
        !list.contains("192.0.2.77"),
        "expired decision still listed: {list}"
    );
    assert!(metric(None, &base, "shieldtap_bouncer_pulls_total") >= 3);
}

/// Client and server namespaces joined by a veth pair; removed on drop.
struct Lab {
    client: String,
    server: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

const SERVER_IP: &str = "10.79.0.2";
const BANNED_IP: &str = "10.79.0.66";
const OTHER_IP: &str = "10.79.0.1";

fn lab() -> Lab {
    let id = std::process::id() % 100_000;
    let lab = Lab {
        client: format!("stbc{id}"),
        server: format!("stbs{id}"),
    };
    for n in [&lab.client, &lab.server] {
        let _ = Command::new("ip")
            .args(["netns", "del", n])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", n]);
        run_in(Some(n), &["ip", "link", "set", "lo", "up"]);
    }
    let (vc, vs) = (format!("bc{id}"), format!("bs{id}"));
    run(&[
        "ip",
        "link",
        "add",
        &vc,
        "netns",
        &lab.client,
        "type",
        "veth",
        "peer",
        "name",
        &vs,
        "netns",
        &lab.server,
    ]);
    for ip in [OTHER_IP, BANNED_IP] {
        run_in(
            Some(&lab.client),
            &["ip", "addr", "add", &format!("{ip}/24"), "dev", &vc],
        );
    }
    run_in(
        Some(&lab.server),
        &["ip", "addr", "add", &format!("{SERVER_IP}/24"), "dev", &vs],
    );
    run_in(Some(&lab.client), &["ip", "link", "set", &vc, "up"]);
    run_in(Some(&lab.server), &["ip", "link", "set", &vs, "up"]);
    lab
}

/// A TCP connection from `source` in the client namespace to the listener in the server one.
fn connects(lab: &Lab, source: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &lab.client, "python3", "-c"])
        .arg(format!(
            "import socket; socket.create_connection(('{SERVER_IP}', 8080), 1, ('{source}', 0)).close()"
        ))
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn blacklist(lab: &Lab) -> String {
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.server,
            "nft",
            "list",
            "set",
            "ip",
            "crowdsec",
            "crowdsec-blacklists",
        ])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn firewall_config(dir: &Path, name: &str, key: &str) -> PathBuf {
    let conf = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &conf,
        format!(
            "mode: nftables\npid_dir: {}/\nupdate_frequency: 1s\ndaemonize: false\nlog_mode: stdout\n\
             log_level: info\napi_url: http://127.0.0.1:9478/\napi_key: {key}\n\
             insecure_skip_verify: false\ndisable_ipv6: false\ndeny_action: DROP\ndeny_log: false\n\
             supported_decisions_types:\n  - ban\nblacklists_ipv4: crowdsec-blacklists\n\
             blacklists_ipv6: crowdsec6-blacklists\nnftables:\n  ipv4:\n    enabled: true\n\
             \x20   set-only: false\n    table: crowdsec\n    chain: crowdsec-chain\n  ipv6:\n\
             \x20   enabled: true\n    set-only: false\n    table: crowdsec6\n    chain: crowdsec6-chain\n\
             prometheus:\n  enabled: false\n  listen_addr: 127.0.0.1\n  listen_port: 60601\n",
            dir.display()
        ),
    )
    .expect("bouncer config");
    conf
}

#[test]
fn firewall_bouncer_drops_banned_addresses_in_a_netns() {
    if skip(
        "the firewall bouncer test",
        true,
        &["crowdsec-firewall-bouncer", "nft", "curl", "python3"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let lab = lab();
    let srv = Some(lab.server.as_str());
    let base = "http://127.0.0.1:9478";
    // No admin key: loopback clients (in the namespace) may use the admin API.
    let _enforce = start_enforce(d, srv, "127.0.0.1:9478", None);
    let _listener = spawn(
        "listener",
        srv,
        &[
            "python3",
            "-c",
            &format!(
                "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.bind(('{SERVER_IP}', 8080))\ns.listen(64)\nwhile True:\n    s.accept()[0].close()\n"
            ),
        ],
        &d.join("listener.log"),
    );
    wait_until("listener", Duration::from_secs(5), || {
        connects(&lab, OTHER_IP)
    });
    assert!(connects(&lab, BANNED_IP), "before any ban");

    // A wrong key: 403 with a JSON message, counted; the real bouncer gives up at once.
    let unauthorized = |n| metric(srv, base, "shieldtap_bouncer_unauthorized_total") == n;
    assert!(unauthorized(0));
    let (status, body) = curl(
        srv,
        &format!("{base}/v1/decisions/stream?startup=true"),
        &["X-Api-Key: not-the-bouncer-key-0000"],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"message\""), "{body}");
    let (status, _) = curl(srv, &format!("{base}/v1/decisions"), &[]);
    assert_eq!(status, 403, "no key");
    assert!(unauthorized(2));
    let wrong = firewall_config(d, "wrong-key", "not-the-bouncer-key-0000");
    let mut bad = spawn(
        "crowdsec-firewall-bouncer (wrong key)",
        srv,
        &["crowdsec-firewall-bouncer", "-c", wrong.to_str().unwrap()],
        &d.join("wrong-key.log"),
    );
    wait_until(
        "the bouncer with a wrong key exits",
        Duration::from_secs(10),
        || bad.child.try_wait().expect("wait").is_some(),
    );
    let bad_log = std::fs::read_to_string(d.join("wrong-key.log")).unwrap_or_default();
    assert!(
        bad_log.contains("access forbidden"),
        "{}: {bad_log}",
        bad.name
    );
    assert!(unauthorized(3), "the bouncer's refused poll is counted");
    assert!(
        blacklist(&lab).is_empty(),
        "a refused bouncer leaves no set"
    );

    // The right key: an empty first poll, then the ban arrives with the next poll.
    let conf = firewall_config(d, "firewall", BOUNCER_KEY);
    let fw_log = d.join("firewall.log");
    let _fw = spawn(
        "crowdsec-firewall-bouncer",
        srv,
        &["crowdsec-firewall-bouncer", "-c", conf.to_str().unwrap()],
        &fw_log,
    );
    let context = || std::fs::read_to_string(&fw_log).unwrap_or_default();
    wait_until("the bouncer's nft set", Duration::from_secs(10), || {
        blacklist(&lab).contains("crowdsec-blacklists")
    });
    decisions(
        srv,
        base,
        None,
        &[
            "add",
            "--scope",
            "device",
            "--value",
            "device-7f3a",
            "--duration",
            "1h",
        ],
    );
    decisions(
        srv,
        base,
        None,
        &[
            "add",
            "--scope",
            "ip",
            "--value",
            BANNED_IP,
            "--duration",
            "1h",
        ],
    );
    let took = wait_until(
        "the banned address in the nft set",
        Duration::from_secs(8),
        || blacklist(&lab).contains(BANNED_IP),
    );
    eprintln!("ban in nftables {took:?} after `decisions add`");
    let set = blacklist(&lab);
    // The element's timeout is the decision's duration.
    assert!(
        set.contains("timeout 1h") || set.contains("timeout 59m"),
        "{set}"
    );
    assert!(
        !connects(&lab, BANNED_IP),
        "banned source still connects\n{}",
        context()
    );
    assert!(connects(&lab, OTHER_IP), "another source is dropped too");
    let rules = run_in(
        srv,
        &["nft", "list", "chain", "ip", "crowdsec", "crowdsec-chain"],
    );
    assert!(
        rules.contains("@crowdsec-blacklists") && !rules.contains("packets 0 "),
        "the drop rule counted nothing: {rules}"
    );

    decisions(
        srv,
        base,
        None,
        &["delete", "--scope", "ip", "--value", BANNED_IP],
    );
    let took = wait_until(
        "the address out of the nft set",
        Duration::from_secs(8),
        || !blacklist(&lab).contains(BANNED_IP),
    );
    eprintln!("unban in nftables {took:?} after `decisions delete`");
    assert!(connects(&lab, BANNED_IP), "still dropped after the delete");
    let list = decisions(srv, base, None, &["list"]);
    assert!(
        list.contains("device-7f3a") && !list.contains(BANNED_IP),
        "{list}"
    );
    assert!(unauthorized(3), "the right key is never refused");
}
