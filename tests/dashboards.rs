//! The Grafana dashboards in `dashboards/` against a real Prometheus: `replay --hold-metrics`
//! of the bots-and-stuffing sample serves `/metrics`, a throwaway Prometheus scrapes it every
//! second, and every panel query of every dashboard (Grafana's variables replaced by fixed
//! durations) must evaluate without error and return data. Every `shieldtap_*` name a query
//! uses must be one the binary exports, every exported name (`metrics::NAMES`) must be used
//! by some dashboard, and every dashboard must take its datasource from a `datasource`
//! variable. Needs `prometheus` on PATH; skipped with a note without it unless CI is set.
//!
//! An idle `run --interface lo` (a capture filter nothing matches, one webhook receiver) is
//! scraped once too: every family a dashboard queries must have samples from the first
//! scrape, so `rate()` and `absent()` work before any traffic. Needs root (live capture);
//! skipped with a note without it unless CI is set.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Upper bound of every wait in this test.
const WAIT: Duration = Duration::from_secs(30);

/// Samples Prometheus must hold before the queries run: `rate()` needs two in its window.
const MIN_SAMPLES: f64 = 3.0;

/// Grafana's variables as the test replaces them (longest name first, so `$__range_ms` is
/// not read as `$__range` followed by `_ms`).
const VARIABLES: &[(&str, &str)] = &[
    ("__rate_interval", "30s"),
    ("__interval_ms", "5000"),
    ("__interval", "5s"),
    ("__range_ms", "300000"),
    ("__range_s", "300"),
    ("__range", "5m"),
];

/// A child process that is always stopped: `signal` first (via `kill`), SIGKILL after 10 s.
struct Guard {
    name: &'static str,
    child: Child,
    signal: &'static str,
    log: PathBuf,
}

impl Guard {
    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{} exited early ({status}); its log:\n{}",
                self.name,
                tail(&self.log)
            )),
            _ => None,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args([self.signal, &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A raw HTTP/1.0 GET: (status, body).
fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .and_then(|()| s.set_write_timeout(Some(Duration::from_secs(10))))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {raw:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Evaluates `expr` now; `Ok` holds `data` of a successful answer.
fn query(port: u16, expr: &str) -> Result<Value, String> {
    let (code, body) = http_get(
        port,
        &format!("/api/v1/query?query={}", percent_encode(expr)),
    )?;
    let v: Value =
        serde_json::from_str(&body).map_err(|e| format!("HTTP {code}, not JSON ({e}): {body}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "HTTP {code}, status {}: {} {}",
            v["status"], v["errorType"], v["error"]
        ));
    }
    Ok(v["data"].clone())
}

/// The first sample value of an instant query, if any.
fn first_value(data: &Value) -> Option<f64> {
    data["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Whether a query's `data` holds anything to draw.
fn has_data(data: &Value) -> bool {
    match data["resultType"].as_str() {
        Some("vector") | Some("matrix") => data["result"].as_array().is_some_and(|r| !r.is_empty()),
        Some("scalar") | Some("string") => data["result"].as_array().is_some_and(|r| r.len() == 2),
        _ => false,
    }
}

fn substitute(expr: &str) -> String {
    let mut out = expr.to_string();
    for (name, value) in VARIABLES {
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("${name}"), value);
    }
    out
}

/// A `$` that still starts a variable reference after [`substitute`].
fn leftover_variable(expr: &str) -> Option<String> {
    let b = expr.as_bytes();
    (0..b.len()).find_map(|i| {
        let next = *b.get(i + 1)?;
        (b[i] == b'$' && (next == b'{' || next == b'_' || next.is_ascii_alphabetic()))
            .then(|| expr[i..].chars().take(24).collect())
    })
}

/// Every `shieldtap_*` metric name in a PromQL expression (outside quoted strings).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && c != '`' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if ident(c) {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word.starts_with("shieldtap_") {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The family a sample name belongs to (histogram series carry a suffix).
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// Families declared in the exposition text (`# TYPE` lines), and those with samples.
fn exposition(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut declared = BTreeSet::new();
    let mut sampled = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split_whitespace().next() {
                declared.insert(name.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            sampled.insert(family(&name).to_string());
        }
    }
    (declared, sampled)
}

/// One panel query.
struct Query {
    dashboard: String,
    panel: String,
    expr: String,
}

/// Walks panels (and rows' nested panels): queries, and problems with their datasources.
fn walk(file: &str, panels: &[Value], queries: &mut Vec<Query>, problems: &mut Vec<String>) {
    for p in panels {
        let title = p["title"].as_str().unwrap_or("(untitled)").to_string();
        if let Some(nested) = p["panels"].as_array() {
            walk(file, nested, queries, problems);
        }
        if p["type"] == "row" {
            continue;
        }
        let wanted = |ds: &Value| ds["type"] == "prometheus" && ds["uid"] == "${datasource}";
        if !wanted(&p["datasource"]) {
            problems.push(format!(
                "{file} / {title}: panel datasource is {}, not the `datasource` variable",
                p["datasource"]
            ));
        }
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if targets.is_empty() {
            problems.push(format!("{file} / {title}: no targets"));
        }
        for t in targets {
            if !t["datasource"].is_null() && !wanted(&t["datasource"]) {
                problems.push(format!(
                    "{file} / {title}: target datasource is {}",
                    t["datasource"]
                ));
            }
            match t["expr"].as_str() {
                Some(e) if !e.trim().is_empty() => queries.push(Query {
                    dashboard: file.to_string(),
                    panel: title.clone(),
                    expr: e.to_string(),
                }),
                _ => problems.push(format!("{file} / {title}: target without expr")),
            }
        }
    }
}

/// Every dashboard file: (file name, JSON model).
fn dashboards() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("reads dashboard");
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, v)
        })
        .collect()
}

fn start_shieldtap(dir: &Path, port: u16) -> Guard {
    let log = dir.join("shieldtap.log");
    let child = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "replay",
            "samples/bots-and-stuffing/capture.pcap",
            "--config",
            "samples/bots-and-stuffing/shieldtap.toml",
            "--alerts-out",
            "/dev/null",
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
            "--hold-metrics",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("starts shieldtap");
    Guard {
        name: "shieldtap",
        child,
        signal: "-INT",
        log,
    }
}

/// The exposition without the process's own CPU time and resident memory, which move with
/// every scrape while the pipeline's counters settle.
fn settled_part(body: &str) -> String {
    body.lines()
        .filter(|l| !l.starts_with("shieldtap_process_"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until the replay is over: `/metrics` answers with transactions counted, twice the
/// same (but for the process's own figures). Returns the exposition text.
fn wait_for_replay(st: &mut Guard, port: u16) -> String {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        if let Some(e) = st.exited() {
            panic!("{e}");
        }
        if let Ok((200, body)) = http_get(port, "/metrics") {
            let counted = body.lines().any(|l| {
                l.strip_prefix("shieldtap_http_transactions_total ")
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .is_some_and(|v| v > 0.0)
            });
            let settled = settled_part(&body);
            if counted && settled == last {
                return body;
            }
            last = settled;
        }
        assert!(
            start.elapsed() < WAIT,
            "shieldtap /metrics on {port} not settled after {WAIT:?}; its log:\n{}",
            tail(&st.log)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn start_prometheus(program: &Path, dir: &Path, target: u16, port: u16) -> Guard {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: shieldtap\n    static_configs:\n      \
             - targets: [\"127.0.0.1:{target}\"]\n"
        ),
    )
    .expect("writes prometheus.yml");
    let log = dir.join("prometheus.log");
    let child = Command::new(program)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("starts prometheus");
    Guard {
        name: "prometheus",
        child,
        signal: "-TERM",
        log,
    }
}

/// Waits for `/-/ready`, then for the target to be up with [`MIN_SAMPLES`] samples stored.
fn wait_for_samples(prom: &mut Guard, port: u16) {
    let start = Instant::now();
    let mut state = String::from("not ready");
    loop {
        if let Some(e) = prom.exited() {
            panic!("{e}");
        }
        if let Ok((200, _)) = http_get(port, "/-/ready") {
            let up = query(port, "up{job=\"shieldtap\"}");
            let n = query(port, "count_over_time(shieldtap_build_info[1m])");
            match (&up, &n) {
                (Ok(up), Ok(n)) => {
                    let up = first_value(up);
                    let n = first_value(n);
                    if up == Some(1.0) && n.is_some_and(|n| n >= MIN_SAMPLES) {
                        return;
                    }
                    state = format!("ready, up = {up:?}, samples = {n:?}");
                }
                _ => state = format!("ready, queries: {up:?} {n:?}"),
            }
        }
        assert!(
            start.elapsed() < WAIT,
            "prometheus on {port}: {state} after {WAIT:?}; its log:\n{}",
            tail(&prom.log)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let Some(prometheus) = on_path("prometheus") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have `prometheus` on PATH for the dashboards test"
        );
        eprintln!("note: `prometheus` not on PATH, dashboards test skipped");
        return;
    };
    let began = Instant::now();

    // The dashboards themselves: uid, title, datasource variable, panel datasources.
    let boards = dashboards();
    let mut problems = Vec::new();
    let mut queries = Vec::new();
    let mut uids = BTreeSet::new();
    for (file, d) in &boards {
        for key in ["uid", "title"] {
            if d[key].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{file}: no {key}"));
            }
        }
        if !uids.insert(d["uid"].to_string()) {
            problems.push(format!("{file}: uid {} used twice", d["uid"]));
        }
        if !d["schemaVersion"].is_u64() {
            problems.push(format!("{file}: no schemaVersion"));
        }
        let vars = d["templating"]["list"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if !vars.iter().any(|v| {
            v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"
        }) {
            problems.push(format!(
                "{file}: no `datasource` variable of type datasource, query prometheus"
            ));
        }
        let panels = d["panels"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let mut ids = BTreeSet::new();
        let mut stack: Vec<&Value> = panels.iter().collect();
        while let Some(p) = stack.pop() {
            if !ids.insert(p["id"].to_string()) {
                problems.push(format!("{file}: panel id {} used twice", p["id"]));
            }
            stack.extend(p["panels"].as_array().into_iter().flatten());
        }
        let before = queries.len();
        walk(file, panels, &mut queries, &mut problems);
        if queries.len() == before {
            problems.push(format!("{file}: no queries"));
        }
    }

    // shieldtap replaying the sample, held for scraping, and Prometheus scraping it.
    let dir = tempfile::tempdir().expect("temp dir");
    let st_port = free_port();
    let mut st = start_shieldtap(dir.path(), st_port);
    let metrics = wait_for_replay(&mut st, st_port);
    let prom_port = free_port();
    let mut prom = start_prometheus(&prometheus, dir.path(), st_port, prom_port);
    wait_for_samples(&mut prom, prom_port);
    let ready = began.elapsed();

    // Names: every one a query uses is exported; every exported one is used.
    let (declared, _sampled) = exposition(&metrics);
    let mut used = BTreeSet::new();
    for q in &queries {
        for name in metric_names(&q.expr) {
            if !declared.contains(family(&name)) {
                problems.push(format!(
                    "{} / {}: `{name}` is not in shieldtap's /metrics",
                    q.dashboard, q.panel
                ));
            }
            used.insert(family(&name).to_string());
        }
    }
    for name in shieldtap::telemetry::metrics::NAMES {
        let plain = format!("shieldtap_{name}");
        let counter = format!("{plain}_total");
        match [&plain, &counter]
            .into_iter()
            .find(|n| declared.contains(*n))
        {
            None => problems.push(format!("NAMES has `{name}` but /metrics has no {plain}")),
            Some(n) if !used.contains(n) => {
                problems.push(format!("`{n}` is exported but no dashboard shows it"))
            }
            Some(_) => {}
        }
    }

    // Every query, through Prometheus.
    let mut per_board: BTreeMap<&str, usize> = BTreeMap::new();
    for q in &queries {
        *per_board.entry(q.dashboard.as_str()).or_default() += 1;
        let expr = substitute(&q.expr);
        if let Some(v) = leftover_variable(&expr) {
            problems.push(format!(
                "{} / {}: unknown variable at `{v}` in {expr}",
                q.dashboard, q.panel
            ));
            continue;
        }
        match query(prom_port, &expr) {
            Err(e) => problems.push(format!("{} / {}: {expr}\n    {e}", q.dashboard, q.panel)),
            Ok(data) if has_data(&data) => {}
            Ok(data) => problems.push(format!(
                "{} / {}: {expr}\n    no data: {data}",
                q.dashboard, q.panel
            )),
        }
    }

    // The replay really went through Prometheus.
    let transactions = query(prom_port, "sum(shieldtap_http_transactions_total)")
        .ok()
        .as_ref()
        .and_then(first_value);
    if !transactions.is_some_and(|t| t > 0.0) {
        problems.push(format!(
            "Prometheus has no transactions from the replay: {transactions:?}"
        ));
    }

    let counts: Vec<String> = per_board.iter().map(|(f, n)| format!("{f} {n}")).collect();
    println!(
        "dashboards: {} queries checked ({}); Prometheus had data after {:.1} s, all done after {:.1} s",
        queries.len(),
        counts.join(", "),
        ready.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    drop(prom);
    drop(st);
    assert!(
        problems.is_empty(),
        "{} dashboard problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Every family the dashboards query.
fn dashboard_families() -> BTreeSet<String> {
    let mut queries = Vec::new();
    let mut problems = Vec::new();
    for (file, d) in dashboards() {
        let panels = d["panels"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        walk(&file, panels, &mut queries, &mut problems);
    }
    queries
        .iter()
        .flat_map(|q| metric_names(&q.expr))
        .map(|n| family(&n).to_string())
        .collect()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

#[test]
fn idle_run_exports_every_dashboard_family_from_the_first_scrape() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run as root for live capture"
        );
        eprintln!("note: not root, idle run metrics test skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("shieldtap.toml");
    std::fs::write(
        &config,
        format!(
            "[[webhook]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9/hook\"\nspool_dir = \"{}\"\ndrain_secs = 1\n",
            dir.path().join("spool").display()
        ),
    )
    .expect("writes config");
    // A port found free can be taken (by the other test's processes) before the run binds
    // it: a run that could not bind starts again on another, three times at most.
    let mut attempts = 0;
    let text = 'run: loop {
        attempts += 1;
        let port = free_port();
        let log = dir.path().join("shieldtap.log");
        let child = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
            .args([
                "run",
                "--interface",
                "lo",
                "--bpf",
                "udp port 9",
                "--config",
            ])
            .arg(&config)
            .args(["--alerts-out", "/dev/null", "--metrics-listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("starts shieldtap run");
        let mut st = Guard {
            name: "shieldtap run",
            child,
            signal: "-INT",
            log,
        };
        let start = Instant::now();
        loop {
            if let Some(e) = st.exited() {
                if attempts < 3 && e.contains("Address already in use") {
                    continue 'run;
                }
                panic!("{e}");
            }
            if let Ok((200, body)) = http_get(port, "/metrics") {
                break 'run body;
            }
            assert!(
                start.elapsed() < WAIT,
                "no /metrics on {port} after {WAIT:?}; its log:\n{}",
                tail(&st.log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (declared, sampled) = exposition(&text);
    let wanted = dashboard_families();
    assert!(wanted.len() >= 30, "{wanted:?}");
    let absent: Vec<&String> = wanted.iter().filter(|f| !sampled.contains(*f)).collect();
    println!(
        "idle run: {} of {} dashboard families have samples on the first scrape ({} declared)",
        wanted.len() - absent.len(),
        wanted.len(),
        declared.len()
    );
    assert!(
        absent.is_empty(),
        "absent on an idle run: {absent:?}\n{text}"
    );
    // From zero, with the stages' own label values.
    for line in [
        "shieldtap_decode_errors_total{layer=\"pppoe\"} 0",
        "shieldtap_http_anomalies_total{kind=\"gap\"} 0",
        "shieldtap_http_requests_total{method=\"GET\"} 0",
        "shieldtap_http_responses_total{status_class=\"5xx\"} 0",
        "shieldtap_webhook_deliveries_total{receiver=\"ops\",result=\"failed\"} 0",
        "shieldtap_webhook_spool_depth{receiver=\"ops\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
}

#[test]
fn helpers() {
    assert_eq!(
        percent_encode("a b{c=\"x\"}[5m]"),
        "a%20b%7Bc%3D%22x%22%7D%5B5m%5D"
    );
    assert_eq!(
        substitute("rate(x[$__rate_interval]) + increase(y[${__range}]) + z[$__range_ms]"),
        "rate(x[30s]) + increase(y[5m]) + z[300000]"
    );
    assert_eq!(
        leftover_variable("rate(x[$foo])").as_deref(),
        Some("$foo])")
    );
    assert_eq!(leftover_variable("x{a=~\"b$\"}"), None);
    assert_eq!(
        metric_names(
            "sum(rate(shieldtap_a_total{job=\"shieldtap_not\"}[1m])) / shieldtap_b_bucket"
        )
        .into_iter()
        .collect::<Vec<_>>(),
        ["shieldtap_a_total", "shieldtap_b_bucket"]
    );
    assert_eq!(
        family("shieldtap_processing_latency_seconds_bucket"),
        "shieldtap_processing_latency_seconds"
    );
    assert_eq!(
        settled_part(
            "shieldtap_process_cpu_seconds_total{thread=\"detect\"} 0.5\n\
             shieldtap_processing_latency_seconds_count 3\n\
             shieldtap_process_resident_memory_bytes 1000"
        ),
        "shieldtap_processing_latency_seconds_count 3"
    );
}
