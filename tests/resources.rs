//! What a replay reports it cost (`resources` in the summary, the `cpu` line on stderr)
//! against what the kernel says the process cost: `wait4`'s user and system time and peak
//! RSS, read by a Python wrapper around the binary (an account independent of the
//! process's own). Replays `samples/mobile-network` (a recording of real clients and
//! servers) with two workers. Needs `python3`; skipped with a note without it unless CI is
//! set.

use std::path::Path;
use std::process::Command;

/// Runs `argv` as a child and prints `user_secs system_secs maxrss_kib` from `wait4` on
/// the last line of stdout; the child's stderr passes through.
const WAIT4: &str = "import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:])
_, status, ru = os.wait4(p.pid, 0)
print(ru.ru_utime, ru.ru_stime, ru.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
";

fn python() -> Option<&'static str> {
    let ok = Command::new("python3")
        .arg("-c")
        .arg("import os; os.wait4")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some("python3")
}

#[test]
fn replay_reports_the_cpu_time_and_peak_rss_the_kernel_counts() {
    let Some(py) = python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 is needed under CI"
        );
        eprintln!("skipped: no python3 with os.wait4");
        return;
    };
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/mobile-network");
    let dir = tempfile::tempdir().expect("temp dir");
    let summary_path = dir.path().join("summary.json");
    let out = Command::new(py)
        .arg("-c")
        .arg(WAIT4)
        .arg(env!("CARGO_BIN_EXE_shieldtap"))
        .arg("replay")
        .arg(sample.join("capture.pcap"))
        .arg("--config")
        .arg(sample.join("shieldtap.toml"))
        .args(["--workers", "2", "--no-progress", "--metrics-listen", "off"])
        .arg("--alerts-out")
        .arg(dir.path().join("alerts.jsonl"))
        .arg("--summary-json")
        .arg(&summary_path)
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "replay failed: {stderr}");
    let kernel: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("wait4's line")
        .split_whitespace()
        .map(|v| v.parse().expect("a number"))
        .collect();
    let [user, system, maxrss_kib] = kernel[..] else {
        panic!("wait4 printed {kernel:?}");
    };
    let kernel_cpu = user + system;

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary_path).expect("summary written"))
            .expect("summary is JSON");
    let r = &summary["resources"];
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or_else(|| panic!("a number: {v}"));
    let cpu = num(&r["cpu_secs"]);
    eprintln!("summary: {cpu} s CPU; kernel (wait4): {kernel_cpu} s, peak {maxrss_kib} KiB");
    // Read by the process as it wrote its summary: the kernel's total at exit is that plus
    // the teardown after it (writers flushed, tables dropped: 3 to 4 ms here, of about
    // 0.09 s), never less.
    assert!(
        cpu <= kernel_cpu + 1e-6,
        "summary {cpu} s against the kernel's {kernel_cpu} s"
    );
    assert!(
        kernel_cpu - cpu <= 0.025 + 0.05 * kernel_cpu,
        "summary {cpu} s against the kernel's {kernel_cpu} s"
    );
    assert!(
        (num(&r["user_secs"]) + num(&r["system_secs"]) - cpu).abs() < 1e-6,
        "user and system make the total: {r}"
    );
    // Peak RSS: the same high-water mark, read a little before exit.
    let peak = num(&r["peak_rss_bytes"]);
    let kernel_peak = maxrss_kib * 1024.0;
    assert!(
        peak <= kernel_peak && peak >= 0.9 * kernel_peak,
        "summary peak {peak} B against the kernel's {kernel_peak} B"
    );

    // Every pipeline thread ran and is counted under its role; the roles add up to the
    // total (`other` is what the named roles leave).
    let by = r["cpu_secs_by_thread"].as_object().expect("cpu by thread");
    for role in ["capture", "workers", "detect"] {
        assert!(num(&by[role]) > 0.0, "{role} took no time: {r}");
    }
    let parts: f64 = by.values().map(num).sum();
    assert!(
        (parts - cpu).abs() < 0.02,
        "parts {parts} against {cpu}: {r}"
    );

    let transactions = num(&summary["http"]["transactions"]);
    assert_eq!(transactions, 2801.0, "the sample's transactions");
    let per_cpu = num(&r["transactions_per_cpu_sec"]);
    assert!(
        (per_cpu - transactions / cpu).abs() < 1.0,
        "{per_cpu} transactions per CPU second from {transactions} in {cpu} s"
    );

    // The human summary says the same.
    let line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("cpu "))
        .unwrap_or_else(|| panic!("no cpu line in:\n{stderr}"));
    assert!(
        line.contains(&format!("{per_cpu:.0} transactions per CPU second"))
            && line.contains(&format!("peak RSS {} MiB", peak as u64 >> 20))
            && line.contains(&format!("cpu {cpu:.2} s")),
        "{line} against {r}"
    );
}
