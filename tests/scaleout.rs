//! Scale-out over NATS JetStream with real components: `nats-server` clusters started here
//! (tests/common/nats.rs), sensors (`shieldtap replay` with `[export]`) and correlators
//! (`shieldtap correlate`) as separate processes.
//!
//! The bots-and-stuffing sample is split by client address over two sensors; two
//! correlators of two partitions each must give exactly the sample's golden alerts (those
//! of one process reading the whole capture), on the alerts stream (each once) and in their
//! JSON lines, also when a correlator is SIGKILLed mid-stream and restarted, when a NATS
//! node stops mid-run, and when a sensor loses the broker for a few seconds. A live sensor
//! whose broker is away counts what it drops. Needs nats-server (skipped with a note
//! without it unless CI is set).

#[path = "common/nats.rs"]
mod nats;
#[path = "common/netlab.rs"]
mod netlab;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nats::{NatsCluster, NatsOpts};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_shieldtap");
/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(90);

/// An envelope read back from the events stream, or why it would not decode.
type Decoded = Result<shieldtap::export::wire::Envelope, String>;

fn sample() -> PathBuf {
    Path::new(ROOT).join("samples/bots-and-stuffing")
}

/// The sample's golden alerts, each as canonical JSON, sorted.
fn golden() -> Vec<String> {
    canon(&std::fs::read_to_string(sample().join("alerts.jsonl")).unwrap())
}

/// Alerts (JSON lines) without their `id`, canonical, sorted.
fn canon(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut x: serde_json::Value = serde_json::from_str(l).unwrap();
            x.as_object_mut().unwrap().remove("id");
            sorted(&x).to_string()
        })
        .collect();
    v.sort();
    v
}

fn sorted(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let b: BTreeMap<_, _> = m.iter().map(|(k, v)| (k.clone(), sorted(v))).collect();
            serde_json::to_value(b).unwrap()
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
        x => x.clone(),
    }
}

/// The same alerts, or a panic naming what is missing and what is extra (rule, key, count).
fn assert_same(got: &[String], want: &[String], what: &str, context: impl FnOnce() -> String) {
    if got == want {
        return;
    }
    let brief = |l: &String| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        format!(
            "{} {} count {} follow_up {} ts {}",
            v["rule"], v["evidence"]["key"], v["count"], v["follow_up"], v["ts"]
        )
    };
    let missing: Vec<String> = want
        .iter()
        .filter(|w| !got.contains(w))
        .map(brief)
        .collect();
    let extra: Vec<String> = got
        .iter()
        .filter(|g| !want.contains(g))
        .map(brief)
        .collect();
    panic!(
        "{what}: {} alerts, {} expected\nmissing:\n  {}\nextra:\n  {}\n{}",
        got.len(),
        want.len(),
        missing.join("\n  "),
        extra.join("\n  "),
        context()
    );
}

/// Splits a capture by client address (the side with the higher port): clients whose
/// address ends in an even byte go to the first file, the others to the second.
fn split_by_client(src: &Path, a: &Path, b: &Path) -> (usize, usize) {
    let mut cap = pcap::Capture::from_file(src).unwrap();
    let mut out_a = cap.savefile(a).unwrap();
    let mut out_b = pcap::Capture::from_file(src).unwrap().savefile(b).unwrap();
    let (mut na, mut nb) = (0, 0);
    while let Ok(p) = cap.next_packet() {
        let s = etherparse::SlicedPacket::from_ethernet(p.data).unwrap();
        let (src_ip, dst_ip) = match s.net {
            Some(etherparse::NetSlice::Ipv4(v4)) => (
                std::net::IpAddr::from(v4.header().source_addr()),
                std::net::IpAddr::from(v4.header().destination_addr()),
            ),
            Some(etherparse::NetSlice::Ipv6(v6)) => (
                std::net::IpAddr::from(v6.header().source_addr()),
                std::net::IpAddr::from(v6.header().destination_addr()),
            ),
            _ => panic!("not IP"),
        };
        let Some(etherparse::TransportSlice::Tcp(t)) = s.transport else {
            panic!("not TCP")
        };
        let client = if t.source_port() > t.destination_port() {
            src_ip
        } else {
            dst_ip
        };
        let last = match client {
            std::net::IpAddr::V4(v) => v.octets()[3],
            std::net::IpAddr::V6(v) => v.octets()[15],
        };
        if last % 2 == 0 {
            out_a.write(&p);
            na += 1;
        } else {
            out_b.write(&p);
            nb += 1;
        }
    }
    out_a.flush().unwrap();
    out_b.flush().unwrap();
    (na, nb)
}

/// A pcap file as its header and its records (each with its own record header).
fn records(path: &Path) -> (Vec<u8>, Vec<Vec<u8>>) {
    let b = std::fs::read(path).unwrap();
    let le = b[..4] == [0xd4, 0xc3, 0xb2, 0xa1] || b[..4] == [0x4d, 0x3c, 0xb2, 0xa1];
    let mut recs = Vec::new();
    let mut i = 24;
    while i + 16 <= b.len() {
        let len = if le {
            u32::from_le_bytes(b[i + 8..i + 12].try_into().unwrap())
        } else {
            u32::from_be_bytes(b[i + 8..i + 12].try_into().unwrap())
        } as usize;
        recs.push(b[i..i + 16 + len].to_vec());
        i += 16 + len;
    }
    (b[..24].to_vec(), recs)
}

struct Lab {
    dir: tempfile::TempDir,
    cluster: NatsCluster,
    nkey_seed: Option<String>,
}

impl Lab {
    fn start(nodes: usize) -> Option<Lab> {
        Lab::with(&NatsOpts {
            nodes,
            ..Default::default()
        })
    }

    fn with(opts: &NatsOpts) -> Option<Lab> {
        let cluster = NatsCluster::start(opts)?;
        Some(Lab {
            dir: tempfile::tempdir().unwrap(),
            cluster,
            nkey_seed: opts.nkey_seed.clone(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The sample's config with `[nats]`, `[export]` for `sensor`, `[correlate]`.
    fn config(&self, sensor: &str, extra: &str) -> PathBuf {
        let base = std::fs::read_to_string(sample().join("shieldtap.toml")).unwrap();
        let servers: Vec<String> = self
            .cluster
            .urls()
            .iter()
            .map(|u| format!("{u:?}"))
            .collect();
        let replicas = if self.cluster.urls().len() >= 3 { 3 } else { 1 };
        let mut login = String::new();
        if let Some((user, password)) = self.cluster.creds() {
            // Written once: processes started earlier may be reading it.
            let f = self.path("nats-password");
            if !f.exists() {
                std::fs::write(&f, format!("{password}\n")).unwrap();
            }
            login.push_str(&format!("user = {user:?}\npassword_file = {f:?}\n"));
        }
        if let Some(seed) = &self.nkey_seed {
            let f = self.path("nats-seed");
            if !f.exists() {
                std::fs::write(&f, seed).unwrap();
            }
            login.push_str(&format!("nkey_seed_file = {f:?}\n"));
        }
        if let Some(ca) = self.cluster.ca_file() {
            login.push_str(&format!("tls_ca = {ca:?}\n"));
        }
        let text = format!(
            "{base}\n[nats]\nservers = [{}]\npartitions = 4\nreplicas = {replicas}\nmax_stream_mib = 64\n{login}\n[export]\nsensor = \"{sensor}\"\n{extra}\n\n[correlate]\nsensors = [\"a\", \"b\"]\ncheckpoint_interval_secs = 0.2\nmax_wait_secs = 60\n",
            servers.join(", ")
        );
        // Atomically: a process started earlier may be reading it.
        let p = self.path(&format!("{sensor}.toml"));
        let tmp = self.path(&format!("{sensor}.toml.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p
    }

    fn correlator(&self, name: &str, partitions: &str) -> Child {
        // A file of its own: a sensor's config is rewritten while correlators may read.
        let cfg = self.path(&format!("{name}.correlate.toml"));
        std::fs::copy(self.config("a", ""), &cfg).unwrap();
        Command::new(BIN)
            .args(["correlate", "--until-finished", "--metrics-listen", "off"])
            .arg("--config")
            .arg(&cfg)
            .args(["--partitions", partitions])
            .arg("--alerts-out")
            .arg(self.path(&format!("{name}.jsonl")))
            .arg("--summary-json")
            .arg(self.path(&format!("{name}.summary.json")))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path(&format!("{name}.log"))).unwrap())
            .spawn()
            .unwrap()
    }

    /// A sensor replaying `capture`, or reading stdin when it is `None`.
    fn sensor(&self, name: &str, capture: Option<&Path>) -> Child {
        self.sensor_with(name, capture, &self.config(name, ""))
    }

    /// A sensor as [`Lab::sensor`], with config file `config`.
    fn sensor_with(&self, name: &str, capture: Option<&Path>, config: &Path) -> Child {
        let mut c = Command::new(BIN);
        c.args([
            "replay",
            "--no-progress",
            "--metrics-listen",
            "off",
            "--workers",
            "2",
        ])
        .arg(capture.map_or_else(|| PathBuf::from("-"), Path::to_path_buf))
        .arg("--config")
        .arg(config)
        .args(["--alerts-out", "/dev/null"])
        .arg("--summary-json")
        .arg(self.path(&format!("{name}.summary.json")))
        .stdin(if capture.is_some() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(self.path(&format!("{name}.log"))).unwrap());
        c.spawn().unwrap()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits for a process to exit successfully. A broker node that crashed on its own
    /// meanwhile is restarted ([`NatsCluster::revive_crashed`]).
    fn wait_ok(&mut self, mut c: Child, name: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.cluster.revive_crashed();
            if let Some(st) = c.try_wait().unwrap() {
                assert!(st.success(), "{name} exited {st}:\n{}", self.log(name));
                return;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("{name} did not finish in {WAIT:?}:\n{}", self.log(name));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The two split captures.
    fn split(&self) -> (PathBuf, PathBuf) {
        let (a, b) = (self.path("a.pcap"), self.path("b.pcap"));
        let (na, nb) = split_by_client(&sample().join("capture.pcap"), &a, &b);
        assert!(
            na > 100 && nb > 100,
            "both sensors get traffic: {na} / {nb}"
        );
        (a, b)
    }

    /// Every alert on the alerts stream (ids and records).
    fn stream_alerts(&self) -> Vec<(String, String)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use futures_util::StreamExt;
            let client = self.cluster.connect().await;
            let js = async_nats::jetstream::new(client);
            let stream = js.get_stream("SHIELDTAP_ALERTS").await.unwrap();
            let n = stream.get_info().await.unwrap().state.messages;
            let consumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
                .await
                .unwrap();
            let mut msgs = consumer.messages().await.unwrap().take(n as usize);
            let mut out = Vec::new();
            while let Some(m) = msgs.next().await {
                let m = m.unwrap();
                let id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                out.push((id, String::from_utf8(m.payload.to_vec()).unwrap()));
            }
            out
        })
    }

    /// Whether the checkpoint store holds `name`.
    fn has_checkpoint(&self, name: &str) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let js = async_nats::jetstream::new(self.cluster.connect().await);
            match js.get_object_store("shieldtap-checkpoints").await {
                Ok(store) => store.info(name).await.is_ok(),
                Err(_) => false,
            }
        })
    }

    /// Every message of stream `name` with its stream sequence, in stream order.
    fn stream_messages(&self, name: &str) -> Result<Vec<(u64, Vec<u8>)>, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use futures_util::StreamExt;
            let js = async_nats::jetstream::new(self.cluster.connect().await);
            let stream = js.get_stream(name).await.map_err(|e| e.to_string())?;
            let info = stream.get_info().await.map_err(|e| e.to_string())?;
            let consumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
                .await
                .map_err(|e| e.to_string())?;
            let mut msgs = consumer
                .messages()
                .await
                .map_err(|e| e.to_string())?
                .take(info.state.messages as usize);
            let mut out = Vec::new();
            while let Some(m) = msgs.next().await {
                let m = m.map_err(|e| e.to_string())?;
                let seq = m.info().map_or(0, |i| i.stream_sequence);
                out.push((seq, m.payload.to_vec()));
            }
            Ok(out)
        })
    }

    /// Every message of the given streams, raw.
    fn raw_messages(&self, streams: &[&str]) -> Vec<Vec<u8>> {
        streams
            .iter()
            .flat_map(|name| self.stream_messages(name).unwrap())
            .map(|(_, m)| m)
            .collect()
    }

    /// Every envelope on the events stream with its stream sequence, in stream order.
    fn envelopes(&self) -> Result<Vec<(u64, Decoded)>, String> {
        Ok(self
            .stream_messages("SHIELDTAP_EVENTS")?
            .into_iter()
            .map(|(seq, m)| {
                let env = shieldtap::export::wire::Envelope::decode(&m);
                (seq, env.map_err(|e| e.to_string()))
            })
            .collect())
    }

    /// The events stream, one line an envelope: stream sequence, partition, sensor, run,
    /// batch, clock, finished, messages. What a failed comparison needs to tell a batch
    /// the broker stored late from one a correlator never took.
    fn events_table(&self) -> String {
        let envelopes = match self.envelopes() {
            Ok(v) => v,
            Err(e) => return format!("(cannot read the events stream: {e})\n"),
        };
        let mut out = String::new();
        for (seq, env) in envelopes {
            out.push_str(&match env {
                Ok(e) => format!(
                    "{seq} p{} {} run {} batch {} clock {:?} finished {} msgs {}\n",
                    e.partition,
                    e.sensor,
                    e.run,
                    e.batch,
                    e.clock,
                    e.finished,
                    e.msgs.len()
                ),
                Err(e) => format!("{seq} undecodable: {e}\n"),
            });
        }
        out
    }

    /// Per partition, the batch numbers missing between 1 and the highest that `sensor`
    /// has on the events stream (an error when the stream cannot be read).
    fn holes(&self, sensor: &str) -> Result<std::collections::BTreeMap<u32, Vec<u64>>, String> {
        let mut seen: std::collections::BTreeMap<u32, std::collections::BTreeSet<u64>> =
            Default::default();
        for (_, env) in self.envelopes()? {
            if let Ok(e) = env
                && e.sensor == sensor
            {
                seen.entry(e.partition).or_default().insert(e.batch);
            }
        }
        Ok(seen
            .into_iter()
            .filter_map(|(p, b)| {
                let top = b.last().copied().unwrap_or(0);
                let missing: Vec<u64> = (1..top).filter(|n| !b.contains(n)).collect();
                (!missing.is_empty()).then_some((p, missing))
            })
            .collect())
    }

    /// What a failed comparison shows: each correlator's and sensor's summary and log.
    fn diagnostics(&self, correlators: &[&str]) -> String {
        let mut out = String::new();
        for name in correlators.iter().chain(&["a", "b"]) {
            let summary = std::fs::read_to_string(self.path(&format!("{name}.summary.json")))
                .unwrap_or_else(|e| format!("(no summary: {e})"));
            out.push_str(&format!(
                "--- {name} summary: {summary}\n--- {name} log:\n{}\n",
                self.log(name)
            ));
        }
        out.push_str(&format!("--- events stream:\n{}", self.events_table()));
        out
    }

    /// The deployment's alerts (stream and JSON lines) equal the golden ones, each once.
    fn assert_golden(&self, files: &[&str]) {
        let want = golden();
        let stream = self.stream_alerts();
        let mut ids: Vec<&String> = stream.iter().map(|(i, _)| i).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(
            ids.len(),
            stream.len(),
            "an alert id is on the stream twice"
        );
        let text: String = stream.iter().map(|(_, l)| format!("{l}\n")).collect();
        let got = canon(&text);
        assert_same(&got, &want, "alerts stream", || self.diagnostics(files));
        let mut lines = String::new();
        for f in files {
            lines.push_str(&std::fs::read_to_string(self.path(&format!("{f}.jsonl"))).unwrap());
        }
        // Each alert's id is the one webhooks give it, on the stream and in the JSON lines.
        let stream_ids: std::collections::BTreeSet<&String> =
            stream.iter().map(|(i, _)| i).collect();
        for l in lines.lines() {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let id = v.as_object_mut().unwrap().remove("id").unwrap();
            let id = id.as_str().unwrap().to_string();
            assert_eq!(
                id,
                shieldtap::output::webhook::alert_id(&v.to_string()),
                "{l}"
            );
            assert!(stream_ids.contains(&id), "{id} not on the stream");
        }
        assert_same(&canon(&lines), &want, "correlators' JSON lines", || {
            self.diagnostics(files)
        });
        // Every envelope a sensor had acknowledged reached its correlator in time: none
        // skipped as missing, no sensor given up on.
        for f in files {
            let Ok(bytes) = std::fs::read(self.path(&format!("{f}.summary.json"))) else {
                continue; // killed: no summary
            };
            let s: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            for (p, part) in s["partitions"].as_object().unwrap() {
                if part["batches_missing"] != 0 || part["waits_expired"] != 0 {
                    panic!(
                        "{f} partition {p} skipped a batch or gave up on a sensor: {part}\n{}",
                        self.diagnostics(files)
                    );
                }
            }
        }
    }
}

#[test]
fn two_sensors_two_correlators_give_one_process_alerts() {
    let Some(mut lab) = Lab::start(3) else { return };
    split_run(&mut lab);
    // What a sensor published is on record.
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.path("a.summary.json")).unwrap()).unwrap();
    assert!(
        s["export"]["events_published"].as_u64().unwrap() > 50,
        "{s}"
    );
    assert_eq!(s["export"]["events_dropped"], 0);
}

/// Feeds a sensor reading stdin the capture's records in `chunks` parts, a pause after
/// each; `between(k)` runs after part `k` (1-based).
fn feed(mut sensor: Child, capture: &Path, chunks: usize, mut between: impl FnMut(usize)) -> Child {
    let (head, recs) = records(capture);
    let mut stdin = sensor.stdin.take().unwrap();
    stdin.write_all(&head).unwrap();
    let per = recs.len().div_ceil(chunks);
    for (k, part) in recs.chunks(per).enumerate() {
        for r in part {
            stdin.write_all(r).unwrap();
        }
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(400));
        between(k + 1);
    }
    drop(stdin);
    sensor
}

fn summary(lab: &Lab, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(lab.path(&format!("{name}.summary.json"))).unwrap())
        .unwrap()
}

#[test]
fn a_correlator_killed_mid_stream_resumes_from_its_checkpoint_without_loss_or_repeat() {
    let Some(mut lab) = Lab::start(3) else { return };
    let (a, b) = lab.split();
    let c2 = lab.correlator("c2", "2,3");
    let mut c1 = Some(lab.correlator("c1", "0,1"));
    let mut c3 = None;
    let s2 = lab.sensor("b", Some(&b));
    let s1 = lab.sensor("a", None);
    let s1 = feed(s1, &a, 8, |k| {
        if k == 6 {
            // Once it has checkpointed both partitions and sent alerts, SIGKILL: no chance
            // to checkpoint again or flush.
            let deadline = Instant::now() + WAIT;
            let sent =
                || std::fs::read_to_string(lab.path("c1.jsonl")).is_ok_and(|t| !t.is_empty());
            while !(lab.has_checkpoint("p0") && lab.has_checkpoint("p1") && sent()) {
                assert!(
                    Instant::now() < deadline,
                    "no checkpoint: {}",
                    lab.log("c1")
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(Duration::from_millis(300));
            let mut c = c1.take().unwrap();
            c.kill().unwrap();
            c.wait().unwrap();
        }
        if k == 7 {
            // Another correlator takes its partitions over.
            c3 = Some(lab.correlator("c3", "0,1"));
        }
    });
    lab.wait_ok(s1, "a");
    lab.wait_ok(s2, "b");
    lab.wait_ok(c3.take().unwrap(), "c3");
    lab.wait_ok(c2, "c2");
    lab.assert_golden(&["c1", "c2", "c3"]);
    let s = summary(&lab, "c3");
    for p in ["0", "1"] {
        assert_eq!(s["partitions"][p]["restored"], true, "{s}");
    }
    // The killed one had sent alerts before it died, the new one after.
    let count = |f: &str| {
        std::fs::read_to_string(lab.path(&format!("{f}.jsonl")))
            .unwrap()
            .lines()
            .count()
    };
    assert!(
        count("c1") > 0 && count("c3") > 0,
        "{} / {}",
        count("c1"),
        count("c3")
    );
}

#[test]
fn a_nats_node_stopped_mid_run_stops_nothing() {
    let Some(mut lab) = Lab::start(3) else {
        return;
    };
    let (a, b) = lab.split();
    let c1 = lab.correlator("c1", "0,1");
    let c2 = lab.correlator("c2", "2,3");
    let s2 = lab.sensor("b", Some(&b));
    let s1 = lab.sensor("a", None);
    let s1 = feed(s1, &a, 8, |k| {
        let c = &mut lab.cluster;
        if k == 3 {
            c.kill(0);
        }
        if k == 6 {
            c.restart(0);
        }
    });
    lab.wait_ok(s1, "a");
    lab.wait_ok(s2, "b");
    lab.wait_ok(c1, "c1");
    lab.wait_ok(c2, "c2");
    lab.assert_golden(&["c1", "c2"]);
    // No correlator gave up waiting for a sensor: a consumer on the stopped node is
    // recreated on another within seconds, well inside `max_wait_secs` (60 here).
    for c in ["c1", "c2"] {
        let s = summary(&lab, c);
        for (p, part) in s["partitions"].as_object().unwrap() {
            assert_eq!(part["waits_expired"], 0, "{c} partition {p}: {s}");
            assert_eq!(part["late"], 0, "{c} partition {p}: {s}");
        }
    }
}

/// Sensor `b` replays its half first; sensor `a` then reads its half from stdin in 8 parts,
/// `between(lab, k)` after part `k`; two correlators. The deployment's alerts are the
/// golden ones.
fn fed_after_b(lab: &mut Lab, mut between: impl FnMut(&mut Lab, usize)) {
    let (a, b) = lab.split();
    let c1 = lab.correlator("c1", "0,1");
    let c2 = lab.correlator("c2", "2,3");
    let s2 = lab.sensor("b", Some(&b));
    lab.wait_ok(s2, "b");
    let s1 = lab.sensor("a", None);
    let s1 = feed(s1, &a, 8, |k| between(lab, k));
    lab.wait_ok(s1, "a");
    lab.wait_ok(c1, "c1");
    lab.wait_ok(c2, "c2");
    lab.assert_golden(&["c1", "c2"]);
}

#[test]
fn a_replaying_sensor_rides_out_a_broker_outage_without_loss() {
    let Some(mut lab) = Lab::start(1) else {
        return;
    };
    fed_after_b(&mut lab, |lab, k| {
        // Parts 4 and 5 reach the sensor while the broker is away (3 s and more).
        if k == 3 {
            lab.cluster.stop(0);
        }
        if k == 5 {
            std::thread::sleep(Duration::from_secs(2));
            lab.cluster.restart(0);
        }
    });
    let s = summary(&lab, "a");
    assert_eq!(s["export"]["events_dropped"], 0, "{s}");
    // It did meet the outage (its client lost the connection and came back).
    let log = lab.log("a");
    assert!(log.contains("NATS connection lost"), "{log}");
}

/// A publish the broker lost without a word (it hung with the envelopes in its socket and
/// was killed) is sent again while the sensor waits for input: not only when its window of
/// pending publishes fills or its run ends, long after the correlators, holding those
/// partitions for it, skipped it as missing.
#[test]
fn a_publish_the_broker_lost_is_sent_again_while_the_sensor_waits_for_input() {
    let Some(mut lab) = Lab::start(1) else {
        return;
    };
    fed_after_b(&mut lab, |lab, k| {
        if k == 3 {
            lab.cluster.freeze(0);
        }
        if k == 4 {
            // Part 4's envelopes went to the hung broker; it dies with them.
            std::thread::sleep(Duration::from_secs(1));
            lab.cluster.kill(0);
            lab.cluster.restart(0);
        }
        if k == 5 {
            // Polled until no batch is missing; a stream not readable yet counts as not.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let holes = lab.holes("a");
                if holes.as_ref().is_ok_and(|h| h.is_empty()) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "batches still missing 30 s after the broker came back: {holes:?}\n{}",
                    lab.events_table()
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    });
    let s = summary(&lab, "a");
    assert_eq!(s["export"]["events_dropped"], 0, "{s}");
    assert!(s["export"]["publish_retries"].as_u64().unwrap() > 0, "{s}");
}

/// Every sensor and correlator makes sure the streams exist when it starts. One that finds
/// the events stream with its settings sends the broker no update (nats-server 2.9.10 crashed
/// on concurrent updates), keeps what an operator tuned on the broker, and applies a setting
/// of its own that changed.
#[test]
fn a_starting_sensor_updates_the_stream_only_for_a_setting_of_its_own_that_changed() {
    let Some(mut lab) = Lab::start(1) else {
        return;
    };
    let (a, _) = lab.split();
    let s = lab.sensor("a", Some(&a));
    lab.wait_ok(s, "a");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let js = rt.block_on(async { async_nats::jetstream::new(lab.cluster.connect().await) });
    let config = |js: &async_nats::jetstream::Context| {
        rt.block_on(async {
            let mut s = js.get_stream("SHIELDTAP_EVENTS").await.unwrap();
            s.info().await.unwrap().config.clone()
        })
    };
    let first = config(&js);
    assert_eq!(first.max_bytes, 64 << 20);
    // The operator keeps events a day on the broker.
    let day = Duration::from_secs(24 * 3600);
    rt.block_on(js.update_stream(async_nats::jetstream::stream::Config {
        max_age: day,
        ..first.clone()
    }))
    .unwrap();
    let (_client, mut updates) = rt.block_on(async {
        let client = lab.cluster.connect().await;
        let sub = client
            .subscribe("$JS.EVENT.ADVISORY.STREAM.UPDATED.SHIELDTAP_EVENTS")
            .await
            .unwrap();
        client.flush().await.unwrap();
        (client, sub)
    });
    let mut advisories = || {
        rt.block_on(async {
            use futures_util::StreamExt;
            let mut n = 0;
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(500), updates.next()).await
            {
                n += 1;
            }
            n
        })
    };
    // The same settings: no update, and the operator's retention stays.
    let s = lab.sensor("a", Some(&a));
    lab.wait_ok(s, "a");
    assert_eq!(
        advisories(),
        0,
        "a sensor with unchanged settings updated the stream"
    );
    let second = config(&js);
    assert_eq!(second.max_age, day);
    assert_eq!(second.max_bytes, 64 << 20);
    // A smaller `max_stream_mib`: updated, the operator's retention still kept.
    let text = std::fs::read_to_string(lab.config("a", "")).unwrap();
    assert!(text.contains("max_stream_mib = 64"));
    let smaller = lab.path("a-32.toml");
    std::fs::write(
        &smaller,
        text.replace("max_stream_mib = 64", "max_stream_mib = 32"),
    )
    .unwrap();
    let s = lab.sensor_with("a", Some(&a), &smaller);
    lab.wait_ok(s, "a");
    assert_eq!(advisories(), 1);
    let third = config(&js);
    assert_eq!(third.max_bytes, 32 << 20);
    assert_eq!(third.max_age, day);
    assert_eq!(third.subjects, first.subjects);
    assert_eq!(third.duplicate_window, first.duplicate_window);
}

/// Runs the split sample through two sensors and two correlators and checks the alerts.
fn split_run(lab: &mut Lab) {
    let (a, b) = lab.split();
    let c1 = lab.correlator("c1", "0,1");
    let c2 = lab.correlator("c2", "2,3");
    let s1 = lab.sensor("a", Some(&a));
    let s2 = lab.sensor("b", Some(&b));
    lab.wait_ok(s1, "a");
    lab.wait_ok(s2, "b");
    lab.wait_ok(c1, "c1");
    lab.wait_ok(c2, "c2");
    lab.assert_golden(&["c1", "c2"]);
}

#[test]
fn sensors_and_correlators_log_in_over_tls_and_messages_carry_no_secret_or_personal_value() {
    let Some(mut lab) = Lab::with(&NatsOpts {
        nodes: 1,
        user: Some(("shieldtap".into(), "a-long-nats-password-0123".into())),
        tls: true,
        ..Default::default()
    }) else {
        return;
    };
    assert!(lab.cluster.urls()[0].starts_with("tls://"));
    split_run(&mut lab);
    // What went over the wire: every event and alert message, raw.
    let raw = lab.raw_messages(&["SHIELDTAP_EVENTS", "SHIELDTAP_ALERTS"]);
    assert!(raw.len() > 20, "{} messages", raw.len());
    let text: Vec<String> = raw
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    let capture = std::fs::read(sample().join("capture.pcap")).unwrap();
    let capture = String::from_utf8_lossy(&capture);
    // Tokens (JWTs: attestation and bearer) and e-mail addresses in clear in the capture...
    let jwt =
        regex::Regex::new(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+").unwrap();
    let email = regex::Regex::new(r"[A-Za-z0-9._%+-]{2,}@example\.com").unwrap();
    let tokens: std::collections::BTreeSet<&str> =
        jwt.find_iter(&capture).map(|m| m.as_str()).collect();
    let emails: std::collections::BTreeSet<&str> = email
        .find_iter(&capture)
        .map(|m| m.as_str())
        .filter(|e| !e.contains('*'))
        .collect();
    assert!(
        tokens.len() > 5 && emails.len() > 5,
        "{tokens:?} {emails:?}"
    );
    // ... never appear in any message.
    for t in &text {
        for tok in &tokens {
            assert!(
                !t.contains(&tok[..40.min(tok.len())]),
                "a token in a message"
            );
        }
        for e in &emails {
            assert!(!t.contains(e), "{e} in a message");
        }
        assert!(!t.contains("a-long-nats-password-0123"));
    }
    // A wrong password is refused with a precise error that does not show it.
    std::fs::write(lab.path("nats-password"), "not-the-password-0123\n").unwrap();
    let cfg = std::fs::read_to_string(lab.path("a.toml")).unwrap();
    let bad = lab.path("bad.toml");
    std::fs::write(&bad, cfg).unwrap();
    let out = Command::new(BIN)
        .args(["replay", "--no-progress", "--metrics-listen", "off"])
        .arg(sample().join("capture.pcap"))
        .arg("--config")
        .arg(&bad)
        .args(["--alerts-out", "/dev/null"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot connect to NATS"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
}

#[test]
fn nkey_users_log_in() {
    let seed = nkeys::KeyPair::new_user().seed().unwrap();
    let Some(mut lab) = Lab::with(&NatsOpts {
        nodes: 1,
        nkey_seed: Some(seed),
        ..Default::default()
    }) else {
        return;
    };
    split_run(&mut lab);
}

#[test]
fn a_live_sensor_counts_what_it_drops_while_the_broker_is_away() {
    if !netlab::is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "live capture needs root under CI"
        );
        eprintln!("skipped: live capture on lo needs root");
        return;
    }
    let Some(mut lab) = Lab::start(1) else {
        return;
    };
    // A small web server and a client on loopback, captured by a live sensor.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let web = tempfile::tempdir().unwrap();
    std::fs::write(
        web.path().join("item.json"),
        br#"{"id": 1, "name": "thing"}"#,
    )
    .unwrap();
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(web.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cfg = lab.config("live", "queue_batches = 2\nmax_in_flight = 1");
    let mut sensor = Command::new(BIN)
        .args([
            "run",
            "--interface",
            "lo",
            "--metrics-listen",
            "off",
            "--workers",
            "1",
        ])
        .args(["--bpf", &format!("tcp port {port}")])
        .arg("--config")
        .arg(&cfg)
        .args(["--alerts-out", "/dev/null"])
        .arg("--summary-json")
        .arg(lab.path("live.summary.json"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(lab.path("live.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    // Both the broker link and the capture ring (which the kernel may take seconds to set up).
    while !(lab.log("live").contains("publishing detect events")
        && lab.log("live").contains("capture started"))
    {
        assert!(Instant::now() < deadline, "{}", lab.log("live"));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    lab.cluster.stop(0);
    // Ten seconds of requests (a new connection each) while the broker is away.
    let client = format!(
        "import time, urllib.request\nend = time.time() + 10\nn = 0\nwhile time.time() < end:\n    urllib.request.urlopen('http://127.0.0.1:{port}/item.json').read()\n    n += 1\n    time.sleep(0.01)\nprint(n)\n"
    );
    let out = Command::new("python3")
        .args(["-c", &client])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    // SIGTERM: the sensor stops within its drain bound although the broker never answers.
    let stopped = Instant::now();
    Command::new("kill")
        .args(["-TERM", &sensor.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let st = loop {
        if let Some(st) = sensor.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "live sensor did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = server.kill();
    let _ = server.wait();
    assert!(st.success(), "{}", lab.log("live"));
    assert!(stopped.elapsed() < Duration::from_secs(20));
    let s = summary(&lab, "live");
    let dropped = s["export"]["events_dropped"].as_u64().unwrap();
    let tx = s["http"]["transactions"].as_u64().unwrap();
    assert!(tx * 10 >= requests * 9, "captured {tx} of {requests}: {s}");
    assert!(
        s["export"]["envelopes_dropped"].as_u64().unwrap() > 0 && dropped > 0,
        "nothing counted dropped: {s}"
    );
    // An event goes to every partition owning one of its rules' keys (4 at most here),
    // and each copy is counted.
    assert!(
        dropped + s["export"]["events_published"].as_u64().unwrap() <= 4 * tx,
        "{s}"
    );
}
