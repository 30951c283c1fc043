//! `benches/realistic_run.py table`: comparing two builds pairs their runs by capture,
//! worker count and run number, and reports the median of the pairs' ratios.
//!
//! The inputs are result lines as `realistic_run.py run` writes them (hand-written here:
//! the arithmetic under test is the table's, and real replays take minutes), except for
//! one run of `benches/realistic.sh` itself on a small sample capture (side-by-side pairs).

use std::path::Path;
use std::process::Command;

fn record(build: &str, run: u32, cpu: f64, worker: f64, rss: f64, sha: &str) -> String {
    serde_json::json!({
        "label": "1x", "capture_dir": "/nonexistent", "workers": 1,
        "build": build, "run": run,
        "transactions": 400_000, "wall_secs": cpu / 1.7, "user_secs": cpu, "sys_secs": 0.0,
        "cpu_secs": cpu, "peak_rss_mib": rss,
        // The main thread carries the binary's (possibly renamed) file name.
        "threads": {"st-copy": 0.5, "shieldtap-detec": cpu - worker - 0.5, "shieldtap-worke": worker},
        "alerts": 4970, "alerts_sha256": sha,
        "approov_verdicts": {"valid": 10}, "user_verdicts": {"valid": 10},
    })
    .to_string()
}

/// [`record`] of a run counted under cachegrind: `counts` are its fields (instructions,
/// and with the cache simulator, misses).
fn counted(build: &str, run: u32, cpu: f64, counts: &[(&str, u64)]) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&record(build, run, cpu, 6.0, 900.0, "a")).expect("json");
    for &(k, n) in counts {
        v[k] = n.into();
    }
    v.to_string()
}

fn table(lines: &[String]) -> (i32, String) {
    let dir = tempfile_dir();
    let path = dir.join("results.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write results");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/realistic_run.py");
    let out = Command::new("python3")
        .arg(script)
        .arg("table")
        .arg(&path)
        .output()
        .expect("python3 runs (apt-get install -y python3)");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.code().is_some(),
        "table was killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The table's candidate/baseline line for 1x with one worker.
fn comparison(out: &str) -> &str {
    out.lines()
        .find(|l| l.starts_with("1x W1: candidate/baseline"))
        .unwrap_or_else(|| panic!("no comparison line in:\n{out}"))
}

/// The table's 1x row of `build`.
fn row(out: &str, build: &str) -> String {
    out.lines()
        .find(|l| l.starts_with("1x") && l.contains(build) && l.contains("400,000"))
        .unwrap_or_else(|| panic!("no {build} row in:\n{out}"))
        .to_string()
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "shieldtap-bench-tools-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn two_builds_are_compared_pair_by_pair() {
    // Pairs (baseline, candidate) CPU s: (10, 9), (12, 12), (10, 8): ratios 0.9, 1.0, 0.8.
    // Worker thread: (6, 5), (7, 7), (6, 4.8): 0.833, 1.0, 0.8.
    let lines = vec![
        record("baseline", 1, 10.0, 6.0, 140.0, "a"),
        record("candidate", 1, 9.0, 5.0, 140.0, "a"),
        record("candidate", 2, 12.0, 7.0, 147.0, "a"),
        record("baseline", 2, 12.0, 7.0, 140.0, "a"),
        record("baseline", 3, 10.0, 6.0, 140.0, "a"),
        record("candidate", 3, 8.0, 4.8, 140.0, "a"),
    ];
    let (code, out) = table(&lines);
    assert_eq!(code, 0, "{out}");
    let cmp = comparison(&out);
    assert!(
        cmp.contains("over 3 pair(s): CPU s 0.900 (pairs 0.800 to 1.000)"),
        "{cmp}"
    );
    assert!(cmp.contains("peak RSS 1.000"), "{cmp}");
    assert!(cmp.contains("worker 0.833"), "{cmp}");
    // Each build has its own row: the candidate's median CPU is 9 s, the baseline's 10.
    let row = |b: &str| row(&out, b);
    assert!(row("candidate").contains(" 9.00 "), "{}", row("candidate"));
    assert!(row("baseline").contains(" 10.00 "), "{}", row("baseline"));
    assert!(
        row("candidate").contains("main 0.5"),
        "{}",
        row("candidate")
    );
    assert!(out.contains("alerts over all runs, worker counts and builds: identical"));
}

/// Runs counted by cachegrind (`INSTRUCTIONS=1`): the table shows instructions per
/// transaction and the comparison their candidate/baseline ratio over the pairs, besides
/// the seconds.
#[test]
fn counted_instructions_are_shown_and_compared() {
    let counted = |build: &str, run: u32, cpu: f64, instructions: u64| {
        counted(build, run, cpu, &[("instructions", instructions)])
    };
    // Per transaction: baseline 25,000 M / 400,000 = 62,500; candidate 58,100 (23,240 M).
    // Pairs: 23,240 / 25,000 = 0.9296 and 23,000 / 25,000 = 0.92.
    let lines = vec![
        counted("baseline", 1, 300.0, 25_000_000_000),
        counted("candidate", 1, 310.0, 23_240_000_000),
        counted("baseline", 2, 300.0, 25_000_000_000),
        counted("candidate", 2, 290.0, 23_000_000_000),
    ];
    let (code, out) = table(&lines);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines().next().is_some_and(|h| h.contains("instr/tx")),
        "{out}"
    );
    let row = |b: &str| row(&out, b);
    assert!(row("baseline").contains(" 62,500 "), "{}", row("baseline"));
    // The candidate's median: (23,240 M + 23,000 M) / 2 / 400,000 = 57,800.
    assert!(
        row("candidate").contains(" 57,800 "),
        "{}",
        row("candidate")
    );
    let cmp = comparison(&out);
    assert!(
        cmp.contains("instructions 0.925 (pairs 0.920 to 0.930)"),
        "{cmp}"
    );
    assert!(cmp.contains("CPU s 1.000"), "{cmp}");
    // Runs not counted keep the plain table.
    let (_, plain) = table(&[record("", 1, 9.0, 6.0, 140.0, "a")]);
    assert!(!plain.contains("instr/tx"), "{plain}");
}

/// `run --cachegrind F` records the instructions of F's `summary:` line; a file without
/// one fails the run rather than record nothing.
#[test]
fn a_counted_run_records_the_instructions_of_its_cachegrind_file() {
    let dir = tempfile_dir().join("counted");
    std::fs::create_dir_all(&dir).expect("dir");
    let summary = dir.join("summary.json");
    std::fs::write(
        &summary,
        r#"{"http": {"transactions": 10}, "alerts_written": 0}"#,
    )
    .expect("summary");
    let alerts = dir.join("alerts.jsonl");
    std::fs::write(&alerts, "").expect("alerts");
    let run = |cg: &str| {
        let file = dir.join("out.cg");
        std::fs::write(&file, cg).expect("cachegrind file");
        let results = dir.join("results.jsonl");
        let _ = std::fs::remove_file(&results);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/realistic_run.py");
        let ok = Command::new("python3")
            .arg(script)
            .args([
                "run",
                "--label",
                "1x",
                "--capture-dir",
                "/nonexistent",
                "--workers",
                "1",
            ])
            .arg("--cachegrind")
            .arg(&file)
            .arg("--summary")
            .arg(&summary)
            .arg("--alerts")
            .arg(&alerts)
            .arg("--out")
            .arg(&results)
            .args(["--", "true"])
            .output()
            .expect("python3 runs")
            .status
            .success();
        let rec = std::fs::read_to_string(&results)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t.trim()).ok());
        (ok, rec)
    };
    let (ok, rec) = run("desc: --cache-sim=no\nevents: Ir\nfl=x\n1 5\nsummary: 23244272209\n");
    assert!(ok);
    let rec = rec.expect("a result line");
    assert_eq!(rec["instructions"], 23_244_272_209u64);
    assert_eq!(rec["transactions"], 10);
    let (ok, rec) = run("events: Ir\n");
    assert!(!ok && rec.is_none(), "{rec:?}");
    // With the cache simulator (INSTRUCTIONS=cache): the misses by name, reads and
    // writes summed (a real file's events and summary, from this host's L1d and L2).
    let (ok, rec) = run("desc: D1 cache: 49152 B, 64 B, 12-way associative\n\
         events: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw \n\
         fl=x\n1 5 0 0 0 0 0 0 0 0\n\
         summary: 23277345439 207810016 5206676 5858737923 145159112 71414022 3501469241 39027121 23986160\n");
    assert!(ok);
    let rec = rec.expect("a result line");
    assert_eq!(rec["instructions"], 23_277_345_439u64);
    assert_eq!(rec["d1_misses"], 145_159_112u64 + 39_027_121);
    assert_eq!(rec["ll_misses"], 71_414_022u64 + 23_986_160);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs counted with the cache simulator: the table adds L1d and last-level misses per
/// transaction, and the comparison their ratios over the pairs.
#[test]
fn simulated_misses_are_shown_and_compared() {
    let instructions = ("instructions", 23_000_000_000);
    let simulated = |build: &str, run: u32, d1: u64, ll: u64| {
        counted(
            build,
            run,
            300.0,
            &[instructions, ("d1_misses", d1), ("ll_misses", ll)],
        )
    };
    // Per transaction (400,000): baseline LL 250.0, candidate 240.0 and 235.0 (median
    // 237.5); pairs 0.96 and 0.94.
    let lines = vec![
        simulated("baseline", 1, 184_000_000, 100_000_000),
        simulated("candidate", 1, 185_000_000, 96_000_000),
        simulated("baseline", 2, 184_000_000, 100_000_000),
        simulated("candidate", 2, 183_000_000, 94_000_000),
    ];
    let (code, out) = table(&lines);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .next()
            .is_some_and(|h| h.contains("D1 miss/tx") && h.contains("LL miss/tx")),
        "{out}"
    );
    assert!(
        row(&out, "baseline").contains(" 460.0      250.0 "),
        "{out}"
    );
    assert!(
        row(&out, "candidate").contains(" 460.0      237.5 "),
        "{out}"
    );
    let cmp = comparison(&out);
    assert!(
        cmp.contains("LL misses 0.950 (pairs 0.940 to 0.960)"),
        "{cmp}"
    );
    assert!(
        cmp.contains("D1 misses 1.000 (pairs 0.995 to 1.005)"),
        "{cmp}"
    );
    // Counted without the simulator: no miss columns.
    let (_, plain) = table(&[counted("", 1, 300.0, &[instructions])]);
    assert!(!plain.contains("LL miss/tx"), "{plain}");
}

#[test]
fn builds_that_alert_differently_fail_the_table() {
    let lines = vec![
        record("baseline", 1, 10.0, 6.0, 140.0, "a"),
        record("candidate", 1, 9.0, 5.0, 140.0, "b"),
    ];
    let (code, out) = table(&lines);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("DIFFERENT (2 distinct files)"), "{out}");
}

#[test]
fn one_build_keeps_the_plain_table() {
    let mut one: Vec<String> = (1..=2u32)
        .map(|i| record("", i, 9.0 + f64::from(i), 6.0, 140.0, "a"))
        .collect();
    // Records written before runs named their build have neither field.
    one.push(
        serde_json::from_str::<serde_json::Value>(&record("", 3, 11.0, 6.0, 141.0, "a"))
            .map(|mut v| {
                let o = v.as_object_mut().expect("object");
                o.remove("build");
                o.remove("run");
                v.to_string()
            })
            .expect("json"),
    );
    let (code, out) = table(&one);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("candidate/baseline"), "{out}");
    assert!(!out.contains(" build "), "{out}");
    assert!(out.contains(" 11.00 "), "median of 10, 11, 11: {out}");
}

/// Writes an executable `/bin/sh` script with `body` at `path`: fake tools and wrappers.
fn shell_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}")).expect("write a shell script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("make it executable");
}

/// `scripts/pgo-build.sh` checks, before building anything, that `llvm-profdata` is of
/// rustc's LLVM: another version's profile format would fail late or train nothing.
#[test]
fn pgo_build_refuses_a_profdata_of_another_llvm() {
    let dir = tempfile_dir();
    let tool = |name: &str, script: &str| {
        let p = dir.join(name);
        shell_script(&p, script);
        p
    };
    let fake = tool(
        "llvm-profdata",
        "echo 'Ubuntu LLVM version 1.0.0'\necho '  Optimized build.'\n",
    );
    // A `cargo` that fails at once: a broken guard fails the test in a moment instead of
    // building for minutes.
    tool("cargo", "echo 'fake cargo ran' >&2\nexit 3\n");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let target = dir.join("pgo");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pgo-build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("LLVM_PROFDATA", &fake)
        .env("PGO_TARGET_DIR", &target)
        .env("BOLT", "0")
        .env("PATH", path)
        .output()
        .expect("bash runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        err.contains("is LLVM 1, rustc is LLVM") && err.contains("profile formats differ"),
        "stderr: {err}"
    );
    assert!(!err.contains("instrumented build"), "built anyway: {err}");
}

/// `benches/realistic.sh` end to end on a small capture (the mobile-network sample laid out
/// as a bench directory): with `SIDE_BY_SIDE=1` the two builds of a pair replay at the same
/// time, and the table compares them; without a baseline the mode is refused.
#[test]
fn side_by_side_pairs_replay_at_once() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bench = tempfile_dir().join("side-by-side");
    let dir = bench.join("1x");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let sample = root.join("samples/mobile-network");
    std::fs::copy(sample.join("capture.pcap"), dir.join("capture.pcap")).expect("capture");
    std::fs::copy(sample.join("shieldtap.toml"), dir.join("shieldtap.toml")).expect("config");
    let manifest = r#"{"transactions": 2801, "packets": 9000, "capture_bytes": 4000000,
        "packet_time": {"span_secs": 60}, "client_addresses": 50, "devices": 50, "users": 50,
        "gzip_share": 0.2, "chunked_share": 0.2, "ipv6_share": 0.0}"#;
    std::fs::write(dir.join("manifest.json"), manifest).expect("manifest");
    let kept = bench.join("results");
    // Each replay of this small capture takes a tenth of a second, less than two replays'
    // start-up can differ by on a busy machine: the binary is reached through a wrapper
    // that waits a second first, so that replays started together overlap and replays
    // run one after the other do not.
    let bin = bench.join("slow-shieldtap");
    shell_script(
        &bin,
        &format!(
            "sleep 1\nexec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_shieldtap")
        ),
    );
    let bin = bin.to_str().expect("a UTF-8 temporary path");
    let script = |side: &str, baseline: &str| {
        Command::new("bash")
            .arg(root.join("benches/realistic.sh"))
            .env("SHIELDTAP", bin)
            .env("BASELINE", baseline)
            .env("SIDE_BY_SIDE", side)
            .env("SHIELDTAP_BENCH_DIR", &bench)
            .env("SCALES", "1")
            .env("WORKERS", "1")
            .env("RUNS", "2")
            .env("KEEP_RESULTS", &kept)
            .output()
            .expect("bash runs")
    };
    let out = script("1", bin);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("side by side"), "{text}");
    assert!(text.contains("candidate/baseline over 2 pair(s)"), "{text}");
    assert!(
        text.contains("alerts over all runs, worker counts and builds: identical"),
        "{text}"
    );
    // Each pair's two replays overlap in time.
    let runs: Vec<serde_json::Value> = std::fs::read_to_string(kept.join("results.jsonl"))
        .expect("results")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a result line"))
        .collect();
    assert_eq!(runs.len(), 4, "{runs:?}");
    for r in [1, 2] {
        let pair: Vec<&serde_json::Value> = runs.iter().filter(|x| x["run"] == r).collect();
        let (a, b) = (pair[0], pair[1]);
        let span = |x: &serde_json::Value| {
            let s = x["started"].as_f64().expect("started");
            (s, s + x["wall_secs"].as_f64().expect("wall"))
        };
        let ((a0, a1), (b0, b1)) = (span(a), span(b));
        assert!(a0 < b1 && b0 < a1, "run {r} did not overlap: {a} {b}");
    }
    // The mode compares two builds.
    let out = script("1", "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("set BASELINE too"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&bench);
}

/// Every shell script of the benches and scripts parses (`bash -n`): most of them need
/// root, minutes and packages the tests do not have, so this is what runs here.
#[test]
fn shell_scripts_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for d in ["scripts", "benches", ".ci"] {
        for e in std::fs::read_dir(root.join(d)).expect("read dir") {
            let p = e.expect("dir entry").path();
            let is_sh = p.extension().is_some_and(|x| x == "sh")
                || (d == ".ci" && p.file_name().is_some_and(|f| f == "run"));
            if !is_sh {
                continue;
            }
            let out = Command::new("bash")
                .arg("-n")
                .arg(&p)
                .output()
                .expect("bash runs");
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 8, "found only {n} shell scripts");
}
