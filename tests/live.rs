//! `shieldtap run` on the loopback interface: real requests from this test to a real
//! Python http.server, captured live, then SIGTERM: the process drains, writes every
//! transaction and the summary with the kernel's counters, and exits 0. Needs CAP_NET_RAW
//! (root in CI); skipped with a note elsewhere unless CI is set.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn can_capture() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_for(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "server on {port} never came up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn live_capture_on_loopback_then_sigterm() {
    if !can_capture() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run as root for live capture"
        );
        eprintln!("note: not root, live capture test skipped");
        return;
    }
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--protocol",
            "HTTP/1.1",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 http.server");
    wait_for(port);
    std::fs::write(dir.path().join("hello.json"), b"{\"hello\":\"world\"}").expect("write file");
    let tx = dir.path().join("tx.jsonl");
    let summary = dir.path().join("summary.json");
    let mut st = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .args([
            "run",
            "--interface",
            "lo",
            "--bpf",
            &format!("tcp port {port}"),
            "--workers",
            "2",
        ])
        .arg("--transactions-out")
        .arg(&tx)
        .arg("--summary-json")
        .arg(&summary)
        .stderr(Stdio::piped())
        .spawn()
        .expect("shieldtap run");
    std::thread::sleep(Duration::from_millis(1500));
    // Three requests on one keep-alive connection, by curl.
    let base = format!("http://127.0.0.1:{port}");
    let curl = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "--max-time",
            "10",
        ])
        .args([
            format!("{base}/hello.json"),
            format!("{base}/missing"),
            format!("{base}/hello.json"),
        ])
        .status()
        .expect("curl");
    assert!(curl.success());
    std::thread::sleep(Duration::from_millis(500));
    let pid = st.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = st.try_wait().expect("wait") {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "shieldtap did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = server.kill();
    let _ = server.wait();
    let mut err = String::new();
    if let Some(mut e) = st.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "{err}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&tx)
        .expect("transactions")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let mut seen: Vec<(String, i64)> = lines
        .iter()
        .map(|t| {
            (
                t["path"].as_str().unwrap_or("").to_string(),
                t["status"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("/hello.json".to_string(), 200),
            ("/hello.json".to_string(), 200),
            ("/missing".to_string(), 404)
        ]
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary")).expect("json");
    assert!(s["capture"]["kernel_received"].as_u64().unwrap_or(0) > 0);
    assert_eq!(s["capture"]["kernel_dropped"], 0);
}
