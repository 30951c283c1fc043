//! A real NATS JetStream lab for the scale-out tests: one node, or a cluster of three, of the
//! system's `nats-server` on loopback ports, started by the test. Each node has its own config,
//! JetStream store and log (stdout and stderr) in one temporary directory; optional
//! user/password authorization and TLS (a throwaway CA made with rcgen, the server certificate
//! naming 127.0.0.1 and localhost). Nodes can be stopped (SIGTERM), killed (SIGKILL) and
//! restarted on the same ports, config and store, so they rejoin with their data: a one-node
//! "cluster" restarted keeps its streams, which is how the tests make a sensor lose its broker
//! for a few seconds. Dropping the cluster kills every node and removes the directory (on a
//! panic it first prints each node's log tail; `NATS_LAB_KEEP=1` keeps the directory).
//! Ports are loopback ports found free below the kernel's ephemeral range (so no outgoing
//! connection takes a stopped node's port) and not held by another lab of the process; a
//! start that loses a port to another process before the server binds it is retried with
//! fresh ports.
//! Without nats-server (`$NATS_SERVER` when set, else on `PATH`, then in /usr/sbin) `start` returns
//! `None` after a skip note, unless `CI` is set, where it fails. Waits are bounded and fail
//! with the node's log tail. The control methods block (they poll the monitoring port):
//! from async tests use a multi-thread runtime or `spawn_blocking`.
//! Include with `#[path = "common/nats.rs"] mod nats;`.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// How long a start or restart may take before the test fails. Generous: the build machine's
/// two cores are shared with other builders; an idle one starts three nodes in about a second.
pub const READY_LIMIT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// Starts tried with fresh ports when one was taken between the probe and the server's bind.
const START_ATTEMPTS: usize = 3;

/// What to start.
#[derive(Clone, Debug)]
pub struct NatsOpts {
    /// 1 (a plain server) or more (a cluster named `lab`, every node a JetStream peer).
    pub nodes: usize,
    /// `authorization { user, password }` on every node's client port.
    pub user: Option<(String, String)>,
    /// TLS on the client ports (routes between nodes stay plain loopback TCP).
    pub tls: bool,
    /// `authorization { users = [{ nkey }] }`: an NKey user's seed (its public key is
    /// configured on the server; clients sign with the seed).
    pub nkey_seed: Option<String>,
}

impl Default for NatsOpts {
    fn default() -> Self {
        NatsOpts {
            nodes: 1,
            user: None,
            tls: false,
            nkey_seed: None,
        }
    }
}

/// One node: its ports stay fixed for the cluster's life so a restart rejoins as itself.
struct Node {
    name: String,
    config: PathBuf,
    log: PathBuf,
    client_port: u16,
    cluster_port: u16,
    http_port: u16,
    child: Option<Child>,
}

/// A running lab; see the module documentation.
pub struct NatsCluster {
    dir: Option<tempfile::TempDir>,
    bin: PathBuf,
    opts: NatsOpts,
    nodes: Vec<Node>,
    ca: Option<PathBuf>,
}

/// Why a start attempt failed without panicking.
enum StartFailure {
    /// A port probed free was taken before the node bound it: try again with others.
    PortTaken(String),
}

/// The nats-server binary: `$NATS_SERVER`, then `PATH`, then /usr/sbin and /usr/local/bin
/// (Debian installs it in /usr/sbin, which a non-root `PATH` may lack).
pub fn server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        // Set but not a file counts as missing (that is also how the skip path is tried).
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it, written as PEM to
/// `dir`: (CA file, certificate file, key file). Tests also use it to make a foreign CA.
pub fn write_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "shieldtap NATS lab CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    let files = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server-key.pem"),
    );
    for (path, pem) in [
        (&files.0, ca_cert.pem()),
        (&files.1, cert.pem()),
        (&files.2, key.serialize_pem()),
    ] {
        std::fs::write(path, pem).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    files
}

/// Ports handed to labs alive in this process: a node's ports stay its own while it is
/// stopped, so another lab's pick skips them even though nothing listens there.
static PORTS_IN_USE: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// The first port the kernel hands out as a connection's source port.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// `count` loopback ports free now, below the ephemeral range: a port from `bind(:0)` lies
/// in that range, and while its node is stopped any outgoing connection (a client, a route
/// dial, the monitoring poll) may take it as source port and make the restart fail. Below
/// it only an explicit bind can, and labs in this process skip each other's ports.
fn pick_ports(count: usize) -> Vec<u16> {
    const LOW: u16 = 10_000;
    let high = ephemeral_start().max(LOW + 1_000);
    let span = u32::from(high - LOW);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(7919);
    let mut in_use = PORTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    let mut ports = Vec::with_capacity(count);
    for step in 0..span {
        if ports.len() == count {
            break;
        }
        // `span` < 65536, so the offset fits the port range.
        let port = LOW + ((seed.wrapping_add(step)) % span) as u16;
        if !in_use.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            in_use.insert(port);
            ports.push(port);
        }
    }
    assert_eq!(ports.len(), count, "no free loopback ports below {high}");
    ports
}

/// A config string quoted for nats-server's config syntax (JSON-compatible strings).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// `GET path` on a loopback monitoring port: (status code, body), or None when it does not
/// answer within the bound.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    // The monitoring answers are small; the cap keeps a confused peer from growing this.
    s.take(1 << 20).read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// The last `lines` lines of a log file (or why it cannot be read).
fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let all: Vec<&str> = t.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(no log {}: {e})", path.display()),
    }
}

impl NatsCluster {
    /// Starts the lab and waits until every node serves JetStream and, for a cluster, all
    /// agree on a JetStream meta leader. None (with a note) when nats-server is missing and
    /// `CI` is not set.
    pub fn start(opts: &NatsOpts) -> Option<NatsCluster> {
        assert!(opts.nodes >= 1, "a NATS lab needs at least one node");
        let Some(bin) = server_binary() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install nats-server (Debian package nats-server) for the NATS lab"
            );
            eprintln!("note: nats-server not installed, NATS lab test skipped");
            return None;
        };
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut lab = Self::configure(&bin, opts);
            for i in 0..lab.nodes.len() {
                lab.spawn(i);
            }
            match lab.wait_all_ready(READY_LIMIT) {
                Ok(()) => return Some(lab),
                Err(StartFailure::PortTaken(log)) => last = log,
            }
        }
        panic!("NATS lab: ports kept being taken before nats-server bound them:\n{last}");
    }

    /// Writes the directory, certificates and one config per node (fresh ports).
    fn configure(bin: &Path, opts: &NatsOpts) -> NatsCluster {
        let dir = tempfile::Builder::new()
            .prefix("shieldtap-nats-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().to_owned();
        let tls = opts.tls.then(|| write_pki(&root));
        let ports: Vec<(u16, u16, u16)> = pick_ports(3 * opts.nodes)
            .chunks(3)
            .map(|c| (c[0], c[1], c[2]))
            .collect();
        let mut nodes = Vec::new();
        for (i, &(client_port, cluster_port, http_port)) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let store = root.join(format!("{name}-store"));
            let mut conf = format!(
                "server_name: {name}\n\
                 listen: \"127.0.0.1:{client_port}\"\n\
                 http: \"127.0.0.1:{http_port}\"\n\
                 jetstream {{\n  store_dir: {}\n  max_mem: 64MB\n  max_file: 256MB\n}}\n",
                quoted(&store.to_string_lossy())
            );
            if opts.nodes > 1 {
                let routes: Vec<String> = ports
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, p)| format!("\"nats-route://127.0.0.1:{}\"", p.1))
                    .collect();
                conf.push_str(&format!(
                    "cluster {{\n  name: lab\n  listen: \"127.0.0.1:{cluster_port}\"\n  \
                     routes: [{}]\n}}\n",
                    routes.join(", ")
                ));
            }
            if let Some(seed) = &opts.nkey_seed {
                let public = nkeys::KeyPair::from_seed(seed)
                    .expect("an NKey user seed")
                    .public_key();
                conf.push_str(&format!(
                    "authorization {{\n  users = [ {{ nkey: {} }} ]\n}}\n",
                    quoted(&public)
                ));
            }
            if let Some((user, password)) = &opts.user {
                conf.push_str(&format!(
                    "authorization {{\n  user: {}\n  password: {}\n}}\n",
                    quoted(user),
                    quoted(password)
                ));
            }
            if let Some((_, cert, key)) = &tls {
                // The default handshake timeout (0.5 s) is too tight on a loaded machine.
                conf.push_str(&format!(
                    "tls {{\n  cert_file: {}\n  key_file: {}\n  timeout: 5\n}}\n",
                    quoted(&cert.to_string_lossy()),
                    quoted(&key.to_string_lossy())
                ));
            }
            let config = root.join(format!("{name}.conf"));
            std::fs::write(&config, conf).expect("write nats-server config");
            nodes.push(Node {
                log: root.join(format!("{name}.log")),
                name,
                config,
                client_port,
                cluster_port,
                http_port,
                child: None,
            });
        }
        NatsCluster {
            dir: Some(dir),
            bin: bin.to_owned(),
            opts: opts.clone(),
            nodes,
            ca: tls.map(|t| t.0),
        }
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(
            node.child.is_none(),
            "NATS lab: node {} already runs",
            node.name
        );
        // Appended: a restarted node's log follows its earlier life.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open nats-server log");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        node.child = Some(child);
    }

    /// Every running node ready (see `node_ready`), and for a cluster one meta leader that
    /// all running nodes name.
    fn wait_all_ready(&mut self, limit: Duration) -> Result<(), StartFailure> {
        let start = Instant::now();
        loop {
            let mut ready = true;
            for i in 0..self.nodes.len() {
                ready &= self.node_ready(i)?;
            }
            if ready && self.nodes.len() > 1 {
                let leaders: Vec<Option<String>> = (0..self.nodes.len())
                    .filter(|&i| self.is_running(i))
                    .map(|i| self.meta_leader_seen_by(i))
                    .collect();
                ready = leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]);
            }
            if ready {
                return Ok(());
            }
            self.check_deadline(start, limit, "the cluster", None);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Node `i` answers `/healthz?js-enabled-only=true` and, in a cluster, knows a meta
    /// leader. Panics (with its log) when it exited, except for a lost port.
    fn node_ready(&mut self, i: usize) -> Result<bool, StartFailure> {
        let node = &mut self.nodes[i];
        let Some(child) = node.child.as_mut() else {
            return Ok(true);
        };
        if let Some(status) = child.try_wait().expect("poll nats-server") {
            node.child = None;
            let tail = log_tail(&node.log, 30);
            if tail.contains("address already in use") {
                return Err(StartFailure::PortTaken(tail));
            }
            panic!(
                "NATS lab: {} exited ({status}) while starting:\n{tail}",
                node.name
            );
        }
        let healthy = matches!(
            http_get(node.http_port, "/healthz?js-enabled-only=true"),
            Some((200, _))
        );
        Ok(healthy && (self.nodes.len() == 1 || self.meta_leader_seen_by(i).is_some()))
    }

    fn check_deadline(&self, start: Instant, limit: Duration, what: &str, node: Option<usize>) {
        if start.elapsed() < limit {
            return;
        }
        let logs: Vec<String> = (0..self.nodes.len())
            .filter(|&i| node.is_none_or(|n| n == i))
            .map(|i| {
                let n = &self.nodes[i];
                format!(
                    "--- {} (client {}, cluster {}, http {}; jsz: {:?}):\n{}",
                    n.name,
                    n.client_port,
                    n.cluster_port,
                    n.http_port,
                    http_get(n.http_port, "/jsz").map(|r| r.1),
                    log_tail(&n.log, 30)
                )
            })
            .collect();
        panic!(
            "NATS lab: {what} not ready after {limit:?}\n{}",
            logs.join("\n")
        );
    }

    /// Client URLs of every node (`nats://` or `tls://127.0.0.1:PORT`), running or not.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.url(i)).collect()
    }

    /// Client URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        let scheme = if self.opts.tls { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// The PEM file of the CA that signed the servers' certificate (when TLS is on).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.ca.clone()
    }

    /// The configured user and password.
    pub fn creds(&self) -> Option<(String, String)> {
        self.opts.user.clone()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The lab's directory (configs, stores `nN-store`, logs `nN.log`, certificates).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir lives until drop").path()
    }

    /// Node `i`'s server name (`n0`, `n1`, ...), as JetStream cluster info reports it.
    pub fn node_name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The index of the node a server name (from stream or meta cluster info) names.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// Node `i`'s process id while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Node `i`'s `/jsz` (JetStream state) as JSON, when it answers.
    pub fn jsz(&self, i: usize) -> Option<serde_json::Value> {
        let (status, body) = http_get(self.nodes[i].http_port, "/jsz")?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// The JetStream meta leader node `i` knows of.
    fn meta_leader_seen_by(&self, i: usize) -> Option<String> {
        let jsz = self.jsz(i)?;
        let leader = jsz.pointer("/meta_cluster/leader")?.as_str()?;
        (!leader.is_empty()).then(|| leader.to_owned())
    }

    /// The index of the current JetStream meta leader, as the first running node sees it.
    pub fn meta_leader(&self) -> Option<usize> {
        let i = (0..self.nodes.len()).find(|&i| self.is_running(i))?;
        self.node_index(&self.meta_leader_seen_by(i)?)
    }

    /// Full `/healthz` of node `i` (JetStream enabled, meta group joined, every stream and
    /// consumer it holds current): Ok, or the server's reason.
    pub fn healthz(&self, i: usize) -> Result<(), String> {
        match http_get(self.nodes[i].http_port, "/healthz") {
            Some((200, _)) => Ok(()),
            Some((status, body)) => Err(format!("{status}: {body}")),
            None => Err("no answer".to_owned()),
        }
    }

    /// SIGTERM to node `i`, then waits for it to exit (killed after 10 s). Its store stays.
    pub fn stop(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(mut child) = node.child.take() else {
            panic!("NATS lab: stop {}: not running", node.name);
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while child.try_wait().expect("poll nats-server").is_none() {
            if start.elapsed() > STOP_LIMIT {
                eprintln!(
                    "note: {} ignored SIGTERM for {STOP_LIMIT:?}: killed",
                    node.name
                );
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Restarts every node whose process has exited without the test stopping or killing
    /// it, after printing how it ended. That is the broker crashing on its own: Debian's
    /// nats-server 2.9.10 once panicked in `processServiceImport` as a sensor's first
    /// JetStream requests came in, and the sensor then retried a dead broker until its test
    /// gave up. A service manager would restart it, and shieldtap riding out the outage is
    /// what the tests check. Returns the names of the nodes restarted.
    pub fn revive_crashed(&mut self) -> Vec<String> {
        let mut revived = Vec::new();
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            else {
                continue;
            };
            node.child = None;
            let log = std::fs::read_to_string(&node.log).unwrap_or_default();
            let end = log.rfind("panic:").map_or_else(
                || log_tail(&node.log, 20),
                |at| log[at..].lines().take(12).collect::<Vec<_>>().join("\n"),
            );
            eprintln!(
                "note: NATS lab: {} exited on its own ({status}); restarting it. It ended:\n{end}",
                node.name
            );
            revived.push(node.name.clone());
            self.restart(i);
        }
        revived
    }

    /// SIGSTOP to node `i`: it hangs with its connections open, so what clients publish
    /// meanwhile waits in its sockets and is lost if it is then killed.
    pub fn freeze(&mut self, i: usize) {
        let node = &self.nodes[i];
        let Some(child) = &node.child else {
            panic!("NATS lab: freeze {}: not running", node.name);
        };
        let _ = Command::new("kill")
            .args(["-STOP", &child.id().to_string()])
            .status();
    }

    /// SIGKILL to node `i` (a crash: no clean shutdown of its store or its raft groups).
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(mut child) = node.child.take() else {
            panic!("NATS lab: kill {}: not running", node.name);
        };
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts node `i` again with its config, ports and store, and waits until it serves
    /// JetStream and (in a cluster) knows the meta leader. Its streams' replicas may still
    /// be catching up: poll stream info or `healthz(i)` for that.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        let start = Instant::now();
        loop {
            match self.node_ready(i) {
                Ok(true) => return,
                Ok(false) => {}
                Err(StartFailure::PortTaken(log)) => panic!(
                    "NATS lab: {} cannot restart, another process took its port:\n{log}",
                    self.nodes[i].name
                ),
            }
            self.check_deadline(start, READY_LIMIT, &self.nodes[i].name, Some(i));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Client options for this lab: user and password when set; the lab's CA and TLS required
    /// when TLS is on; a 5 s connect timeout. Add reconnect settings and connect to `urls()`.
    pub fn connect_options(&self) -> async_nats::ConnectOptions {
        let mut o = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5));
        if let Some((user, password)) = &self.opts.user {
            o = o.user_and_password(user.clone(), password.clone());
        }
        if let Some(seed) = &self.opts.nkey_seed {
            o = o.nkey(seed.clone());
        }
        if let Some(ca) = &self.ca {
            o = o.add_root_certificates(ca.clone()).require_tls(true);
        }
        o
    }

    /// A client connected to all nodes with `connect_options()` (no retry on the initial
    /// connect: a lab that cannot be reached fails the test at once).
    pub async fn connect(&self) -> async_nats::Client {
        let urls = self.urls();
        self.connect_options()
            .connect(urls.as_slice())
            .await
            .unwrap_or_else(|e| panic!("NATS lab: connect to {urls:?}: {e}"))
    }
}

/// Creates key-value bucket `bucket` (history 1, file storage, `replicas` copies) by creating
/// its backing stream `KV_<bucket>` with the configuration async-nats would send, then opening
/// it. Needed because async-nats 0.51's `Context::create_key_value` first calls
/// `query_account`, whose reply from nats-server 2.9 (Debian's) lacks `reserved_memory` and
/// `reserved_storage` and fails to parse ("data did not match any variant of untagged enum
/// Response"); `get_key_value`, `put` and `get` work on 2.9.
pub async fn create_bucket(
    js: &async_nats::jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<async_nats::jetstream::kv::Store, String> {
    use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
    js.create_stream(Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        storage: StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("create stream KV_{bucket}: {e}"))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| format!("open bucket {bucket}: {e}"))
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let mut in_use = PORTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        for node in &self.nodes {
            for port in [node.client_port, node.cluster_port, node.http_port] {
                in_use.remove(&port);
            }
        }
        drop(in_use);
        let keep = std::env::var_os("NATS_LAB_KEEP").is_some_and(|v| v == "1");
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "--- NATS lab {} log tail:\n{}",
                    node.name,
                    log_tail(&node.log, 20)
                );
            }
        }
        if keep && let Some(dir) = self.dir.take() {
            eprintln!("note: NATS lab kept in {}", dir.keep().display());
        }
    }
}
