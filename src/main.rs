//! The `shieldtap` command line: parses flags, loads config, hands over to the runtime.
// One audited call into the allocator ([`prompt_purge`]); nothing else may be unsafe.
#![deny(unsafe_code)]

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use shieldtap::capture::Progress;
use shieldtap::config::Config;
use shieldtap::output::Summary;
use shieldtap::output::webhook::{WebhookError, Webhooks};
use shieldtap::rules::{self, RuleErrors, RuleSet};
use shieldtap::runtime::{self, AlertSink, Outputs, ReloadSources, RunError};
use shieldtap::telemetry::metrics::Hub;
use shieldtap::telemetry::server::MetricsServer;
use shieldtap::telemetry::{self, LogFormat};

/// Workers allocate each transaction's event and the detect thread frees it: mimalloc frees
/// across threads without the arena locking glibc's malloc contends on (the end_to_end
/// bench runs with the same allocator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Passive shield for the APIs behind mobile apps: reassembles mirrored HTTP traffic,
/// verifies app attestation tokens and flags abuse.
#[derive(Parser)]
#[command(name = "shieldtap", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides.
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay pcap or pcapng files (`-` for stdin) through the pipeline.
    Replay {
        /// Capture files, processed in order.
        #[arg(required = true)]
        captures: Vec<PathBuf>,
        #[command(flatten)]
        common: Common,
        /// Never show the progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// After the replay, keep serving `--metrics-listen` until SIGINT or SIGTERM (to
        /// look at a replay in Prometheus and Grafana).
        #[arg(long, requires = "metrics_listen")]
        hold_metrics: bool,
    },
    /// Capture live on one or more interfaces (a mirror/SPAN port) until SIGINT/SIGTERM.
    Run {
        /// Interface to capture on; repeat for several.
        #[arg(long = "interface", short = 'i', required = true)]
        interfaces: Vec<String>,
        /// BPF filter (overrides `capture.bpf`), e.g. "tcp or (vlan and tcp)".
        #[arg(long)]
        bpf: Option<String>,
        /// Bytes captured per packet (overrides `capture.snaplen_bytes`).
        #[arg(long)]
        snaplen: Option<u32>,
        /// Kernel buffer per interface in MiB (overrides `capture.buffer_size_mib`).
        #[arg(long)]
        buffer_size_mib: Option<u32>,
        /// Do not put the interface in promiscuous mode.
        #[arg(long)]
        no_promiscuous: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Token tools.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Rule tools.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// List, add and delete the decisions of a running daemon (its `[enforce]` admin API).
    Decisions {
        #[command(subcommand)]
        command: DecisionsCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Serve the gateway check endpoint on its own, next to the gateway: the token checks
    /// of the config, and the decisions of `[enforce] follow` (a daemon's stream) and of
    /// the admin API. Runs until SIGINT or SIGTERM.
    Enforce {
        /// TOML config with `[[attestation]]`, `[identity]` and `[enforce]`.
        #[arg(long)]
        config: PathBuf,
    },
    /// Scale-out: consume partitions of the NATS JetStream events stream that sensors
    /// (`run`/`replay` with `[export]`) publish, run their detect shards and send the alerts
    /// to the alerts stream and the usual outputs. Checkpoints its state; a restarted
    /// correlator resumes where it left off. Runs until SIGINT or SIGTERM.
    Correlate {
        /// TOML config with `[nats]` and `[correlate]` (and the `[detect]` of the sensors).
        #[arg(long)]
        config: PathBuf,
        /// Rules folder (default: the built-in pack): the sensors' rules.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Partitions to run, e.g. `0,1` (default: `[correlate] partitions`, else all).
        #[arg(long, value_delimiter = ',')]
        partitions: Vec<u32>,
        /// Alerts as JSON lines, each with its stable `id` (`-` is stdout; a file is
        /// appended to).
        #[arg(long, default_value = "-")]
        alerts_out: PathBuf,
        /// End-of-run summary (per partition) as one JSON object.
        #[arg(long)]
        summary_json: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDR/metrics (default 127.0.0.1:9478; `off`).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
        /// Stop once every sensor of every partition has finished (replayed captures).
        #[arg(long)]
        until_finished: bool,
    },
}

#[derive(Args)]
struct AdminArgs {
    /// The daemon's enforcement endpoint (default: `[enforce] listen` of --config, else
    /// http://127.0.0.1:9478).
    #[arg(long, global = true)]
    url: Option<String>,
    /// Config to read `[enforce] listen` and the admin key from.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Variable holding the admin key (default: the config's admin key, if any).
    #[arg(long, global = true)]
    api_key_env: Option<String>,
}

#[derive(Subcommand)]
enum DecisionsCommand {
    /// Print the active decisions as JSON lines.
    List,
    /// Ban a value: `--scope ip|range|device|token|user --value V --duration 4h`.
    Add {
        #[arg(long)]
        scope: String,
        #[arg(long)]
        value: String,
        /// `90s`, `30m`, `4h`, `7d` (default 4h).
        #[arg(long, default_value = "4h")]
        duration: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a decision: by id, or by `--scope` and `--value`.
    Delete {
        id: Option<u64>,
        #[arg(long, requires = "value")]
        scope: Option<String>,
        #[arg(long, requires = "scope")]
        value: Option<String>,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate a rules folder (default: the built-in pack) and run the test cases its
    /// files carry. Prints `file:line:col: message` per problem. Exit 0 when everything is
    /// valid and every test passes, 2 when a rule file is invalid, 1 when a test fails.
    Check {
        /// Rules folder; without it the built-in pack is checked.
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Verify one token as the pipeline would and print {family, verdict, claims} as JSON.
    /// Exit 0 when valid, 1 for any other verdict, 2 for a usage or config error.
    Verify {
        /// TOML config with the `[[attestation]]` families (default: Approov-compatible, no key).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The token as it appears in the header (without prefix).
        #[arg(long)]
        token: String,
        /// Another request header, "Name: value" (e.g. the Authorization header the token binds).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// Judge expiry at this Unix time instead of now.
        #[arg(long)]
        now: Option<f64>,
    },
}

/// A usage error found after argument parsing (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

#[derive(Args)]
struct Common {
    /// TOML config file; without it the embedded defaults apply.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Rules folder replacing the built-in pack (every *.yaml file in it).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Alerts as JSON lines (`-` is stdout).
    #[arg(long, default_value = "-")]
    alerts_out: PathBuf,
    /// One JSON line per HTTP transaction (`-` is stdout).
    #[arg(long)]
    transactions_out: Option<PathBuf>,
    /// End-of-run summary as one JSON object.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// The field inventory (field paths each route returned, their classes, how often) as
    /// JSON, written at the end (for `run`: at shutdown). Values never appear in it.
    #[arg(long)]
    inventory_out: Option<PathBuf>,
    /// Decisions made from alerts, as JSON lines (replay: at packet time, with the ban
    /// policy of `[enforce]` and the rules' `ban:`; nothing is enforced).
    #[arg(long)]
    decisions_out: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (`run` default: 127.0.0.1:9477;
    /// `off` disables).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
}

/// Turns transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` asks for
/// them. mimalloc advises huge pages on its eagerly committed arenas, and the kernel then
/// backs a table that is partly used, or a page freed and touched again, with a whole 2 MiB
/// page: on the realistic capture that alone was 45 to 55 MiB of peak RSS (about 215 against
/// 170 MiB) for no measurable CPU gain, and resident memory is what the budget promises. The
/// flag holds for the whole process and every later fault.
fn no_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some_and(|v| v != "0") {
        return;
    }
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::debug!(error = %e, "could not turn transparent huge pages off");
    }
}

/// Index of `mi_option_purge_delay` in the bundled mimalloc v3 header (`mi_option_t`); the
/// bindings name no constant for it. Test `purge_delay_index_names_the_purge_delay` checks
/// it against the option's default, and `Cargo.toml` pins the bindings' version.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the OS within 10 ms instead of mimalloc v3's default second,
/// unless `MIMALLOC_PURGE_DELAY` says otherwise. Events are allocated by the workers and
/// freed by the detect thread, so a second of them (tens of MiB on a busy port) sat
/// resident after use: on the realistic capture this lowers peak RSS by about 4 MiB (3
/// paired runs: 146 to 142 MiB with 1 worker, 159 to 155 MiB with 2), CPU within noise.
fn prompt_purge() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: `mi_option_set` stores an integer in mimalloc's option table: no pointers,
    // no allocation, and mimalloc allows it from any thread at any time. The index is
    // the purge delay's (see `MI_OPTION_PURGE_DELAY`), whose values are milliseconds.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10);
    }
}

/// Exit status per INTERFACE.md: 0 success, 2 usage or config error, 1 other failure.
fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format, &cli.log_level);
    no_huge_pages();
    prompt_purge();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shieldtap: error: {e:#}");
            if e.downcast_ref::<shieldtap::config::ConfigError>().is_some()
                || e.downcast_ref::<UsageError>().is_some()
                || e.downcast_ref::<RuleErrors>().is_some()
                || e.downcast_ref::<WebhookError>().is_some()
                || matches!(e.downcast_ref::<RunError>(), Some(RunError::Token(_)))
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn open_out(path: &PathBuf) -> anyhow::Result<Box<dyn Write + Send>> {
    open_output(path, false)
}

/// `-` is stdout; a file is created, or with `append` (the daemon's alert and transaction
/// logs, so a restart never wipes what was written) appended to.
fn open_output(path: &PathBuf, append: bool) -> anyhow::Result<Box<dyn Write + Send>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(BufWriter::with_capacity(
            1 << 16,
            std::io::stdout(),
        )));
    }
    let f = if append {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    } else {
        File::create(path)
    }
    .with_context(|| format!("cannot create {}", path.display()))?;
    Ok(Box::new(BufWriter::with_capacity(1 << 16, f)))
}

fn load_config(common: &Common) -> anyhow::Result<Config> {
    Ok(match &common.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

/// The `[[webhook]]` receivers, started, with their counters on the metrics hub.
fn start_webhooks(cfg: &Config, hub: &Arc<Hub>) -> anyhow::Result<Option<Arc<Webhooks>>> {
    if cfg.webhooks.is_empty() {
        return Ok(None);
    }
    let w = Arc::new(Webhooks::start(&cfg.webhooks)?);
    let weak = Arc::downgrade(&w);
    hub.set_webhook_source(Box::new(move || {
        weak.upgrade().map(|w| w.snapshots()).unwrap_or_default()
    }));
    Ok(Some(w))
}

fn outputs(common: &Common, cfg: &Config, append: bool) -> anyhow::Result<Outputs> {
    let transactions = common
        .transactions_out
        .as_ref()
        .map(|p| open_output(p, append))
        .transpose()?;
    let alerts = AlertSink::Writer(open_output(&common.alerts_out, append)?);
    let metrics = Arc::new(Hub::default());
    let webhooks = start_webhooks(cfg, &metrics)?;
    // `run` with `[enforce]`: decisions are kept (and saved) for the check endpoint; else,
    // with --decisions-out, they are only written.
    let decisions = match (&cfg.enforce, append, &common.decisions_out) {
        (None, _, None) => None,
        (Some(_), false, None) => None,
        (e, live, out) => {
            let ecfg = e.clone().unwrap_or_default();
            let store = if live {
                shieldtap::enforce::Store::open(
                    ecfg.max_decisions,
                    ecfg.state_file.clone(),
                    shieldtap::enforce::unix_now(),
                )
                .map_err(|e| UsageError(format!("enforce.state_file: {e}")))?
            } else {
                shieldtap::enforce::Store::new(ecfg.max_decisions, None)
            };
            Some(runtime::DecisionSink {
                decider: Arc::new(shieldtap::enforce::Decider::new(
                    Arc::new(ecfg),
                    Arc::new(store),
                )),
                log: out.as_ref().map(|p| open_output(p, live)).transpose()?,
            })
        }
    };
    Ok(Outputs {
        transactions,
        alerts,
        metrics,
        webhooks,
        decisions,
        export: None,
    })
}

/// The loaded rules' alert counters, from zero, before `/metrics` answers: the detect
/// thread publishes them as it starts, and a first scrape could come before that (an idle
/// `run` then lacked `shieldtap_alerts_total` on it: `tests/dashboards.rs` under load).
fn publish_rules(hub: &Hub, rules: &shieldtap::rules::RuleSet) {
    hub.publish_detect(shieldtap::telemetry::metrics::DetectSnapshot {
        rules: shieldtap::telemetry::metrics::rule_labels(rules),
        ..Default::default()
    });
}

/// Starts the metrics endpoint when asked (or by default for `run`).
fn metrics_server(
    listen: Option<&str>,
    default: Option<&str>,
    hub: &Arc<Hub>,
) -> anyhow::Result<Option<MetricsServer>> {
    let Some(addr) = listen.or(default) else {
        return Ok(None);
    };
    if addr == "off" {
        return Ok(None);
    }
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| UsageError(format!("--metrics-listen {addr:?}: {e}")))?;
    let server = MetricsServer::start(addr, hub.clone())
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    Ok(Some(server))
}

/// Blocks until SIGINT or SIGTERM.
/// `shieldtap enforce`: the check endpoint in its own process.
fn enforce_command(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    use shieldtap::enforce::{check::Checker, server::EnforceServer};
    let cfg = Config::load(config)?;
    let Some(ecfg) = cfg.enforce.clone() else {
        return Err(UsageError(format!("{}: no [enforce] section", config.display())).into());
    };
    let verifier = Arc::new(
        shieldtap::token::Verifier::with_cache_bytes(
            cfg.token.clone(),
            cfg.runtime.budget.share(shieldtap::budget::Table::Tokens) as u64,
        )
        .map_err(RunError::Token)?,
    );
    let store = shieldtap::enforce::Store::open(
        ecfg.max_decisions,
        ecfg.state_file.clone(),
        shieldtap::enforce::unix_now(),
    )
    .map_err(|e| UsageError(format!("enforce.state_file: {e}")))?;
    let hub = Arc::new(Hub::default());
    let v = verifier.clone();
    hub.set_token_source(Box::new(move || v.stats()));
    let checker = Arc::new(Checker::new(
        Arc::new(ecfg.clone()),
        Arc::new(store),
        Arc::new(move || verifier.clone()),
    ));
    hub.set_enforce_source(checker.clone());
    let server =
        EnforceServer::start(checker, Some(Arc::new(move || hub.render()))).map_err(|source| {
            RunError::Enforce {
                addr: ecfg.listen,
                source,
            }
        })?;
    tracing::info!(addr = %server.addr, follow = ?ecfg.follow.as_ref().map(|f| &f.url), "check endpoint ready");
    wait_for_stop()?;
    server.stop();
    Ok(ExitCode::SUCCESS)
}

/// `shieldtap decisions ...`: the admin API of a running daemon.
fn decisions_command(cmd: DecisionsCommand, admin: AdminArgs) -> anyhow::Result<ExitCode> {
    let ecfg = match &admin.config {
        Some(p) => Config::load(p)?.enforce,
        None => None,
    };
    let base = match (&admin.url, &ecfg) {
        (Some(u), _) => u.trim_end_matches('/').to_string(),
        (None, Some(e)) => format!("http://{}", e.listen),
        (None, None) => "http://127.0.0.1:9478".to_string(),
    };
    let key = match &admin.api_key_env {
        Some(v) => Some(
            std::env::var(v).map_err(|_| UsageError(format!("--api-key-env: {v} is not set")))?,
        ),
        None => ecfg.as_ref().and_then(|e| e.admin_key.clone()),
    };
    let (method, path, body) = match &cmd {
        DecisionsCommand::List => ("GET", "/v1/admin/decisions".to_string(), None),
        DecisionsCommand::Add {
            scope,
            value,
            duration,
            reason,
        } => {
            let d = humantime::parse_duration(duration)
                .map_err(|e| UsageError(format!("--duration {duration:?}: {e}")))?;
            let body = serde_json::json!({
                "scope": scope, "value": value, "duration_secs": d.as_secs().max(1), "reason": reason,
            });
            ("POST", "/v1/admin/decisions".to_string(), Some(body))
        }
        DecisionsCommand::Delete { id, scope, value } => match (id, scope, value) {
            (Some(id), None, None) => ("DELETE", format!("/v1/admin/decisions/{id}"), None),
            (None, Some(s), Some(v)) => {
                let q: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("scope", s)
                    .append_pair("value", v)
                    .finish();
                ("DELETE", format!("/v1/admin/decisions?{q}"), None)
            }
            _ => return Err(UsageError("give an id, or --scope and --value".into()).into()),
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, text) = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let mut req = client.request(method.parse()?, format!("{base}{path}"));
        if let Some(k) = &key {
            req = req.header("X-Api-Key", k);
        }
        if let Some(b) = &body {
            req = req
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(b)?);
        }
        let r = req
            .send()
            .await
            .with_context(|| format!("cannot reach {base}"))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        anyhow::Ok((status, text))
    })?;
    if !status.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or(text);
        anyhow::bail!("{method} {path}: {status}: {msg}");
    }
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    let mut out = std::io::stdout().lock();
    match v.get("decisions").and_then(|d| d.as_array()) {
        Some(list) => {
            for d in list {
                writeln!(out, "{d}")?;
            }
        }
        None => writeln!(out, "{v}")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A sensor (`[export]`): the detect shards become partitions of the NATS events stream.
fn sensor(
    cfg: &Config,
    rules: &RuleSet,
    live: bool,
    outputs: &mut Outputs,
) -> anyhow::Result<Option<Arc<shieldtap::export::ScaleStats>>> {
    let (Some(nats), Some(export)) = (&cfg.nats, &cfg.export) else {
        return Ok(None);
    };
    let stats = Arc::new(shieldtap::export::ScaleStats::default());
    outputs.metrics.set_scale_source(stats.clone());
    let host = shieldtap::export::NatsShards::start(nats, export, rules, live, stats.clone())
        .context("starting the NATS export")?;
    outputs.export = Some(Box::new(host));
    Ok(Some(stats))
}

struct CorrelateArgs {
    config: PathBuf,
    rules: Option<PathBuf>,
    partitions: Vec<u32>,
    alerts_out: PathBuf,
    summary_json: Option<PathBuf>,
    metrics_listen: Option<String>,
    until_finished: bool,
}

/// `shieldtap correlate`.
fn correlate_command(a: CorrelateArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&a.config)?;
    let rules = load_rules(a.rules.as_ref())?;
    let Some(nats) = &cfg.nats else {
        return Err(UsageError(format!(
            "{}: correlate needs a [nats] section",
            a.config.display()
        ))
        .into());
    };
    let mut cc = match &cfg.correlate {
        Some(c) => c.clone(),
        None => shieldtap::export::CorrelateConfig::from_raw(&Default::default(), nats.partitions)
            .map_err(|(k, m)| UsageError(format!("{k}: {m}")))?,
    };
    if !a.partitions.is_empty() {
        if let Some(p) = a.partitions.iter().find(|p| **p >= nats.partitions) {
            return Err(UsageError(format!(
                "--partitions: {p} is not below nats.partitions ({})",
                nats.partitions
            ))
            .into());
        }
        cc.partitions = a.partitions.clone();
        cc.partitions.sort_unstable();
        cc.partitions.dedup();
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let hub = Arc::new(Hub::default());
    let stats = Arc::new(shieldtap::export::ScaleStats::default());
    hub.set_scale_source(stats.clone());
    let server = metrics_server(a.metrics_listen.as_deref(), Some("127.0.0.1:9478"), &hub)?;
    let webhooks = start_webhooks(&cfg, &hub)?;
    // The usual detect metrics (alerts per rule, keys) from the correlator's shards.
    let rule_labels = shieldtap::telemetry::metrics::rule_labels(&rules);
    let publishing = Arc::new(AtomicBool::new(true));
    let publisher = {
        let (hub, stats, on) = (hub.clone(), stats.clone(), publishing.clone());
        std::thread::spawn(move || {
            while on.load(Ordering::Relaxed) {
                hub.publish_detect(shieldtap::telemetry::metrics::DetectSnapshot {
                    stats: stats.detect(),
                    actors: Default::default(),
                    rules: rule_labels.clone(),
                });
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let sinks = shieldtap::export::correlator::Sinks {
        alerts: Some(open_output(&a.alerts_out, true)?),
        hooks: webhooks.clone(),
    };
    let report = shieldtap::export::correlator::correlate(
        shieldtap::export::correlator::Setup {
            nats,
            correlate: &cc,
            detect: &cfg.detect,
            rules: rules.clone(),
            until_finished: a.until_finished,
        },
        sinks,
        stats,
        stop,
    );
    publishing.store(false, Ordering::Relaxed);
    let _ = publisher.join();
    if let Some(w) = webhooks {
        w.finish();
    }
    if let Some(server) = server {
        server.stop();
    }
    let report = report?;
    eprintln!(
        "shieldtap correlate: {} alerts written; partitions {}",
        report.alerts_written,
        serde_json::to_string(&report.partitions).unwrap_or_default()
    );
    if let Some(p) = &a.summary_json {
        let mut w = open_out(p)?;
        serde_json::to_writer_pretty(&mut w, &report)?;
        writeln!(w)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn wait_for_stop() -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn load_rules(dir: Option<&PathBuf>) -> Result<RuleSet, RuleErrors> {
    match dir {
        Some(d) => rules::load_dir(d),
        None => rules::builtin(),
    }
}

/// `rules check`: problems, then test results; the exit status says which kind failed.
fn rules_check(dir: Option<&PathBuf>) -> ExitCode {
    let set = match load_rules(dir) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            eprintln!("shieldtap: {} problem(s) in the rules", errors.0.len());
            return ExitCode::from(2);
        }
    };
    let report = runtime::check_rules(&set);
    for t in &report.passed {
        println!("ok    {t}");
    }
    for (t, why) in &report.skipped {
        println!("skip  {t}: {why}");
    }
    for (t, why) in &report.failed {
        println!("FAIL  {t}:{why}");
    }
    println!(
        "{}: {} rules ({} disabled) in {} files; tests: {} passed, {} failed, {} skipped",
        set.source,
        set.rules.len(),
        set.disabled.len(),
        set.files,
        report.passed.len(),
        report.failed.len(),
        report.skipped.len()
    );
    if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn write_summary(common: &Common, summary: &Summary) -> anyhow::Result<()> {
    if let Some(p) = &common.inventory_out {
        let mut w = open_out(p)?;
        serde_json::to_writer_pretty(&mut w, &summary.inventory)
            .with_context(|| format!("writing {}", p.display()))?;
        w.write_all(b"\n")?;
        w.flush()?;
    }
    if let Some(p) = &common.summary_json {
        let mut w = open_out(p)?;
        summary
            .write_json(&mut w)
            .with_context(|| format!("writing {}", p.display()))?;
        w.flush()?;
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Token {
            command:
                TokenCommand::Verify {
                    config,
                    token,
                    headers,
                    now,
                },
        } => {
            let cfg = match &config {
                Some(p) => Config::load(p)?,
                None => Config::default(),
            };
            let mut pairs = Vec::new();
            for h in headers {
                let Some((name, value)) = h.split_once(':') else {
                    return Err(
                        UsageError(format!("--header {h:?}: expected \"Name: value\"")).into(),
                    );
                };
                pairs.push((name.trim().to_string(), value.trim_start().to_string()));
            }
            let (json, code) = shieldtap::token::verify_command(cfg.token, &token, &pairs, now);
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Rules {
            command: RulesCommand::Check { dir },
        } => Ok(rules_check(dir.as_ref())),
        Command::Decisions { command, admin } => decisions_command(command, admin),
        Command::Enforce { config } => enforce_command(&config),
        Command::Correlate {
            config,
            rules,
            partitions,
            alerts_out,
            summary_json,
            metrics_listen,
            until_finished,
        } => correlate_command(CorrelateArgs {
            config,
            rules,
            partitions,
            alerts_out,
            summary_json,
            metrics_listen,
            until_finished,
        }),
        Command::Replay {
            captures,
            common,
            no_progress,
            hold_metrics,
        } => {
            let cfg = load_config(&common)?;
            let rules = load_rules(common.rules.as_ref())?;
            let workers = runtime::worker_count(&cfg, common.workers);
            let progress = Progress::default();
            let total: u64 = captures
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            let bar = (!no_progress && std::io::stderr().is_terminal())
                .then(|| spawn_progress(&progress, total));
            let mut outputs = outputs(&common, &cfg, false)?;
            let scale = sensor(&cfg, &rules, false, &mut outputs)?;
            publish_rules(&outputs.metrics, &rules);
            let server = metrics_server(common.metrics_listen.as_deref(), None, &outputs.metrics)?;
            let hooks = outputs.webhooks.clone();
            let result = runtime::replay(&cfg, rules, &captures, workers, outputs, &progress);
            let delivered = hooks.map(|h| h.finish());
            if let Some((stop, h)) = bar {
                stop.store(true, Ordering::Relaxed);
                let _ = h.join();
            }
            let mut summary = match result {
                Ok(s) => s,
                Err(RunError::Capture(e)) => anyhow::bail!("{e}"),
                Err(e) => return Err(e.into()),
            };
            summary.webhooks = delivered.unwrap_or_default();
            summary.export = scale.map(|s| s.sensor.to_json());
            eprint!("{}", summary.human());
            write_summary(&common, &summary)?;
            if let Some(server) = server {
                if hold_metrics {
                    tracing::info!(addr = %server.addr, "replay done; serving metrics until SIGINT or SIGTERM");
                    wait_for_stop()?;
                }
                server.stop();
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            interfaces,
            bpf,
            snaplen,
            buffer_size_mib,
            no_promiscuous,
            common,
        } => {
            let mut cfg = load_config(&common)?;
            let rules = load_rules(common.rules.as_ref())?;
            if let Some(b) = bpf {
                cfg.capture.bpf = Some(b);
            }
            if let Some(s) = snaplen {
                cfg.capture.snaplen = i32::try_from(s).context("--snaplen too large")?;
            }
            if let Some(m) = buffer_size_mib {
                cfg.capture.buffer_size_bytes =
                    i32::try_from(u64::from(m) << 20).context("--buffer-size-mib too large")?;
            }
            if no_promiscuous {
                cfg.capture.promiscuous = false;
            }
            let workers = runtime::worker_count(&cfg, common.workers);
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, stop.clone())
                    .context("installing signal handlers")?;
            }
            tracing::info!(interfaces = ?interfaces, workers, "capturing");
            let reload = ReloadSources {
                config: common.config.clone(),
                rules: common.rules.clone(),
            };
            tracing::info!(source = %rules.source, rules = rules.rules.len(), "rules loaded");
            let mut outputs = outputs(&common, &cfg, true)?;
            let scale = sensor(&cfg, &rules, true, &mut outputs)?;
            publish_rules(&outputs.metrics, &rules);
            let server = metrics_server(
                common.metrics_listen.as_deref(),
                Some("127.0.0.1:9477"),
                &outputs.metrics,
            )?;
            let hooks = outputs.webhooks.clone();
            let result =
                runtime::run_live(&cfg, rules, &interfaces, workers, outputs, stop, reload);
            let delivered = hooks.map(|h| h.finish());
            let mut summary = result?;
            summary.webhooks = delivered.unwrap_or_default();
            summary.export = scale.map(|s| s.sensor.to_json());
            if let Some(server) = server {
                server.stop();
            }
            eprint!("{}", summary.human());
            write_summary(&common, &summary)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A progress bar on stderr (bytes and packets, with rates) until the flag is set.
fn spawn_progress(
    progress: &Progress,
    total: u64,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let p = progress.clone();
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        let bar = if total > 0 {
            indicatif::ProgressBar::new(total)
        } else {
            indicatif::ProgressBar::new_spinner()
        };
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        let started = std::time::Instant::now();
        while !s.load(Ordering::Relaxed) {
            bar.set_position(p.bytes.load(Ordering::Relaxed));
            let frames = p.frames.load(Ordering::Relaxed);
            let rate = frames as f64 / started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!("{frames} packets ({rate:.0}/s)"));
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
    });
    (stop, h)
}

#[cfg(test)]
mod tests {
    /// `MI_OPTION_PURGE_DELAY` reads the purge delay: mimalloc v3's default for it is
    /// 1000 ms, which no other option of that version has, and a value set there reads
    /// back.
    #[test]
    #[allow(unsafe_code)]
    fn purge_delay_index_names_the_purge_delay() {
        // SAFETY: integer reads and writes of mimalloc's option table, as in `prompt_purge`.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(default, 1000);
        }
        super::prompt_purge();
        // SAFETY: as above.
        let now = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(now, 10);
        }
    }
}
