//! `recwatch run` consuming Kafka: the real daemon binary against librdkafka's mock cluster
//! (in this process, on 127.0.0.1) and against a real broker process (tansu). Lines come from
//! the project's generator, are produced keyed by client (`recwatch::parse::client_key`,
//! what `recwatch kafka-key` prints), and the stored alerts are compared with `recwatch
//! replay` of the same lines. Every wait is on the daemon's metrics or the group's committed
//! offsets, with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::TopicPartitionList;
use recwatch::parse::{client_key, LogFormat};
use serde_json::Value;

mod common;
use common::{promtool_check, reserve_port, wait_until, Daemon, ReservedPort};

#[path = "support/synth.rs"]
#[allow(dead_code)] // each user takes only part of the generator
mod synth;
use synth::{generate, SynthOptions, SynthStats};

const TOPIC: &str = "access-logs";
const PARTITIONS: i32 = 6;
const DEADLINE: Duration = Duration::from_secs(60);

const RULES: &str = r#"
[networks]
internal = ["10.0.0.0/8", "192.168.0.0/16"]
[[rule]]
id = "R1"
name = "unknown-client-fetch"
severity = "critical"
status = [200, 206]
client_kind = ["unknown"]
[[rule]]
id = "R2"
name = "enumeration"
severity = "critical"
aggregate = "distinct"
window_secs = 60
threshold = 20
"#;

// ---------------------------------------------------------------------------------------------
// Data

/// Generated access-log lines (the project's generator), with its summary.
fn synth_lines(lines: u64, seed: u64, start_unix: i64) -> (Vec<String>, SynthStats) {
    let mut out = Vec::new();
    let opts = SynthOptions { lines, seed, start_unix, rec_frac: 0.2, ..SynthOptions::default() };
    let stats = generate(&opts, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    (text.lines().map(str::to_string).collect(), stats)
}

/// `n` distinct unknown clients fetching one recording each, one second apart from `start`:
/// every line raises exactly one R1 alert, so the alert set names the lines processed.
fn single_fetches(n: u32, start_unix: i64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let t = start_unix + i64::from(i);
            let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
            // 2019-02-18 is day 17945 since the epoch; the generator's clock starts there.
            assert!((17_945..17_945 + 10).contains(&days), "keep single fetches in February 2019");
            format!(
                "198.18.{}.{} - - [{:02}/Feb/2019:{:02}:{:02}:{:02} +0000] \"GET /recordings/one-{i}.wav HTTP/1.1\" 200 4096 \"-\" \"curl/8\"",
                i / 250,
                i % 250 + 1,
                18 + (days - 17_945),
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            )
        })
        .collect()
}

/// How a line travels: raw, or in a Vector or Filebeat JSON envelope.
#[derive(Clone, Copy)]
enum Wrap {
    Raw,
    Vector,
    Filebeat,
}

fn payload(line: &str, wrap: Wrap) -> String {
    match wrap {
        Wrap::Raw => line.to_string(),
        Wrap::Vector => serde_json::json!({"message": line, "host": "web1", "file": "/var/log/nginx/access.log",
            "source_type": "file", "timestamp": "2019-02-18T00:00:00Z"})
        .to_string(),
        Wrap::Filebeat => serde_json::json!({"@timestamp": "2019-02-18T00:00:00.000Z", "message": line,
            "host": {"name": "web2"}, "log": {"file": {"path": "/var/log/apache2/access.log"}, "offset": 0}})
        .to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Brokers

fn producer(bootstrap: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .set("queue.buffering.max.messages", "1000000")
        .set("reconnect.backoff.max.ms", "500")
        .set("retry.backoff.max.ms", "500")
        .set("request.timeout.ms", "3000")
        .set("socket.timeout.ms", "3000")
        .create()
        .expect("producer")
}

/// Produces `lines` keyed by client address, as the shipper snippets do, and waits for every
/// delivery.
fn produce(producer: &BaseProducer, lines: &[String], wrap: impl Fn(usize) -> Wrap) {
    for (i, line) in lines.iter().enumerate() {
        let key = client_key(LogFormat::Combined, line.as_bytes()).expect("a keyed line");
        let value = payload(line, wrap(i));
        let mut record = BaseRecord::to(TOPIC).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(DEADLINE).expect("every message delivered");
}

/// Reads the group's committed offsets without joining the group.
struct GroupObserver {
    client: BaseConsumer,
}

impl GroupObserver {
    fn new(bootstrap: &str, group: &str) -> GroupObserver {
        let client = ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().unwrap();
        GroupObserver { client }
    }

    /// Committed offset per partition (0 = none yet); None while the broker does not answer.
    fn committed(&self) -> Option<Vec<i64>> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(TOPIC, p);
        }
        let committed = self.client.committed_offsets(tpl, Duration::from_secs(5)).ok()?;
        (0..PARTITIONS)
            .map(|p| Some(committed.find_partition(TOPIC, p)?.offset().to_raw().unwrap_or(-1).max(0)))
            .collect()
    }

    /// Waits until the group has committed all `produced` messages. (Counted from what was
    /// produced rather than from the partitions' high watermarks: tansu 0.6 reports those a
    /// few messages short.)
    fn wait_committed(&self, produced: usize) {
        let mut last = None;
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            last = self.committed();
            if last.as_ref().is_some_and(|c| c.iter().sum::<i64>() == produced as i64) {
                eprintln!("waited {:.1?} for {produced} messages committed", start.elapsed());
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out after {DEADLINE:?} waiting for {produced} messages to be committed: per partition {last:?}");
    }

    fn committed_total(&self) -> i64 {
        wait_until("committed offsets", DEADLINE, || self.committed()).iter().sum()
    }
}

fn mock_cluster() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    cluster
}

/// Options that make group changes quick enough for tests (the defaults suit production).
/// The mock cluster keeps only the last 5 MB per partition: tests keep their topics well
/// below that per partition, so nothing is dropped before it is read.
const FAST_GROUP: &str = "\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 300\n\"statistics.interval.ms\" = 200\n\"reconnect.backoff.max.ms\" = 500\n";

// ---------------------------------------------------------------------------------------------
// The daemon

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// A config with one Kafka source; `options` go to `[source.kafka.options]`.
    fn new(bootstrap: &str, group: &str, options: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let brokers: Vec<String> = bootstrap.split(',').map(|b| format!("\"{b}\"")).collect();
        let config = format!(
            "[store]\npath = \"state\"\n[http]\nlisten = \"127.0.0.1:0\"\n{RULES}\n[[source]]\nname = \"fleet\"\nkind = \"kafka\"\nformat = \"combined\"\n[source.kafka]\nbrokers = [{}]\ntopics = [\"{TOPIC}\"]\ngroup_id = \"{group}\"\n[source.kafka.options]\n{options}",
            brokers.join(", ")
        );
        std::fs::write(dir.path().join("recwatch.toml"), config).unwrap();
        Env { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("recwatch.toml")
    }

    /// Starts the daemon and waits for its HTTP server (not for readiness).
    fn start(&self) -> Daemon {
        Daemon::spawn(&self.config(), None)
    }

    /// Alerts in the (stopped) daemon's store.
    fn stored_alerts(&self) -> Vec<Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
            .args(["alerts", "list", "--json", "--config"])
            .arg(self.config())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Alerts `recwatch replay` stores for `lines` under the same rules.
fn replay_alerts(env: &Env, lines: &[String]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("all.log");
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
        .args(["replay", "--no-progress", "--source-name", "fleet", "--config"])
        .arg(env.config())
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["alerts"].as_array().unwrap().clone()
}

/// What must agree between two runs over the same lines: identity and counts.
type AlertKey = (String, String, String, String, u64, u64);

fn keyed(alerts: &[Value]) -> BTreeMap<String, AlertKey> {
    alerts
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap().to_string();
            let n = |k: &str| a[k].as_u64().unwrap();
            (s("id"), (s("rule"), s("client"), s("first_seen"), s("last_seen"), n("requests"), n("distinct_resources")))
        })
        .collect()
}

fn assert_same_alerts(got: &BTreeMap<String, AlertKey>, want: &BTreeMap<String, AlertKey>) {
    let missing: Vec<_> = want.iter().filter(|(id, _)| !got.contains_key(*id)).collect();
    let extra: Vec<_> = got.iter().filter(|(id, _)| !want.contains_key(*id)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}\nextra {extra:?}");
    for (id, w) in want {
        assert_eq!(&got[id], w, "alert {id}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Raw lines, then Vector and Filebeat envelopes; a broker goes down mid-stream and comes
/// back; offset commits fail for a while. The stored alerts equal replay's, the failures are
/// counted, and every message ends up committed.
#[test]
fn consumed_alerts_equal_replay_through_a_broker_outage_and_failed_commits() {
    let cluster = mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    let (lines, _) = synth_lines(40_000, 7, 1_550_448_000);
    let (first, second) = lines.split_at(20_000);
    let producer = producer(&bootstrap);
    produce(&producer, first, |_| Wrap::Raw);

    let env = Env::new(&bootstrap, "outage", &format!("{FAST_GROUP}\"auto.commit.interval.ms\" = 100\n"));
    let d = env.start();
    // Not ready before the consumer has joined its group (the mock delays the first join 3 s).
    assert_eq!(d.get("/readyz").map(|(s, _)| s), Some(503), "ready before joining the group");
    d.wait_ready();
    assert!(d.metric("recwatch_kafka_rebalances_total", "kind=\"assign\"").unwrap() >= 1.0);
    d.wait_metric("recwatch_kafka_messages_total", "", 10_000.0);

    // Commits fail: the errors are counted, the stored offsets are committed again later.
    let failures = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE; 4];
    cluster.request_errors(RDKafkaApiKey::OffsetCommit, &failures);
    d.wait_metric("recwatch_kafka_commit_failures_total", "", 1.0);

    // A broker goes down while the second half is produced, and comes back.
    cluster.broker_down(1).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| produce(&producer, second, |i| if i % 2 == 0 { Wrap::Vector } else { Wrap::Filebeat }));
        // The outage lasts while the daemon keeps polling (deliveries wait for the broker).
        std::thread::sleep(Duration::from_millis(1500));
        cluster.broker_up(1).unwrap();
    });

    let observer = GroupObserver::new(&bootstrap, "outage");
    observer.wait_committed(lines.len());
    d.wait_metric("recwatch_kafka_messages_total", "", lines.len() as f64);
    assert!(d.metric("recwatch_kafka_consumer_lag", "").is_some(), "lag exported per partition");
    promtool_check(&d.get("/metrics").unwrap().1);
    assert_eq!(d.metric("recwatch_kafka_bad_payloads_total", ""), Some(0.0));
    assert!(d.terminate().success(), "SIGTERM exits 0");

    let stored = env.stored_alerts();
    assert_same_alerts(&keyed(&stored), &keyed(&replay_alerts(&env, &lines)));
    // Alerts raised by enveloped lines carry the shipper's host and file as their source.
    let sources: BTreeSet<&str> = stored.iter().map(|a| a["source"].as_str().unwrap()).collect();
    assert!(
        sources.is_subset(&["fleet", "web1:/var/log/nginx/access.log", "web2:/var/log/apache2/access.log"].into()),
        "{sources:?}"
    );
    assert!(sources.len() > 1, "some alerts come from enveloped lines: {sources:?}");
}

/// A consumer killed with work processed but not committed: the next one starts exactly at
/// the committed offsets, nothing is lost, and re-read lines update their alerts (same ids,
/// counted once).
#[test]
fn a_restarted_consumer_resumes_at_the_committed_offset_without_loss() {
    let cluster = mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    let lines = single_fetches(20_000, 1_550_448_000);
    let (first, second) = lines.split_at(10_000);
    let producer = producer(&bootstrap);
    produce(&producer, first, |_| Wrap::Raw);
    let observer = GroupObserver::new(&bootstrap, "restart");

    // Commits every 2 s: the kill comes right after the second half is processed, before
    // its offsets are committed.
    let env = Env::new(&bootstrap, "restart", &format!("{FAST_GROUP}\"auto.commit.interval.ms\" = 2000\n"));
    let d = env.start();
    observer.wait_committed(first.len());
    produce(&producer, second, |_| Wrap::Raw);
    d.wait_metric("recwatch_kafka_messages_total", "", lines.len() as f64);
    d.kill9();
    let committed_at_kill = observer.committed_total();
    assert!(committed_at_kill >= first.len() as i64);

    let d = env.start();
    d.wait_ready();
    observer.wait_committed(lines.len());
    // Caught up: the statistics show no lag on any assigned partition.
    wait_until("the restarted consumer to catch up", Duration::from_secs(60), || {
        (d.metric("recwatch_kafka_consumer_lag", "") == Some(0.0)).then_some(())
    });
    // Exactly the uncommitted messages were read again: the restart began at the commits.
    assert_eq!(
        d.metric("recwatch_kafka_messages_total", "").unwrap_or(0.0),
        (lines.len() as i64 - committed_at_kill) as f64,
        "resumed at the committed offsets"
    );
    assert!(d.terminate().success(), "SIGTERM exits 0");

    let stored = keyed(&env.stored_alerts());
    assert_eq!(stored.len(), lines.len(), "one alert per line: none lost, none doubled");
    assert!(stored.values().all(|a| a.4 == 1), "re-read lines are not counted twice");
    assert_same_alerts(&stored, &keyed(&replay_alerts(&env, &lines)));
}

/// Two consumers in one group: B joins while A consumes, later leaves. Together they find
/// exactly the alerts one instance finds. The stream has three parts two hours apart (more
/// than any rule's memory); the middle part is read while the group changes, and its clients
/// fetch once each, so a client whose partition moves mid-part cannot change its alerts.
#[test]
fn two_consumers_in_one_group_together_find_what_one_finds() {
    let cluster = mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    let (part1, stats1) = synth_lines(30_000, 11, 1_550_448_000);
    let part2_all = single_fetches(20_000, stats1.last_unix + 7200);
    let (part2, part2b) = part2_all.split_at(10_000);
    let part2_end = stats1.last_unix + 7200 + 20_000;
    let (part3, _) = synth_lines(30_000, 12, part2_end + 7200);
    let producer = producer(&bootstrap);
    let observer = GroupObserver::new(&bootstrap, "pair");

    let env_a = Env::new(&bootstrap, "pair", FAST_GROUP);
    let env_b = Env::new(&bootstrap, "pair", FAST_GROUP);
    produce(&producer, &part1, |_| Wrap::Raw);
    let a = env_a.start();
    observer.wait_committed(part1.len());

    // B joins while part 2 is being produced and consumed (A may be mid-part when its
    // partitions move); then part 2b is read by both.
    let b = env_b.start();
    produce(&producer, part2, |_| Wrap::Raw);
    b.wait_ready();
    wait_until("the partitions to be shared by A and B", DEADLINE, || {
        let (na, nb) =
            (a.metric("recwatch_kafka_assigned_partitions", "")?, b.metric("recwatch_kafka_assigned_partitions", "")?);
        (na >= 1.0 && nb >= 1.0 && na + nb == f64::from(PARTITIONS)).then_some(())
    });
    produce(&producer, part2b, |_| Wrap::Raw);
    observer.wait_committed(part1.len() + part2_all.len());
    assert!(b.metric("recwatch_kafka_messages_total", "").unwrap() > 0.0, "B consumed a share");

    // B leaves (final commit); A takes every partition back.
    assert!(b.terminate().success(), "SIGTERM exits 0");
    wait_until("A to own every partition", DEADLINE, || {
        (a.metric("recwatch_kafka_assigned_partitions", "")? == f64::from(PARTITIONS)).then_some(())
    });
    produce(&producer, &part3, |_| Wrap::Raw);
    observer.wait_committed(part1.len() + part2_all.len() + part3.len());
    assert!(a.terminate().success(), "SIGTERM exits 0");

    let all: Vec<String> = [part1, part2_all.clone(), part3].concat();
    let single = keyed(&replay_alerts(&env_a, &all));
    let (from_a, from_b) = (keyed(&env_a.stored_alerts()), keyed(&env_b.stored_alerts()));
    assert!(!from_b.is_empty(), "B raised alerts of its own");
    // An alert both stores hold was re-read by the partition's next owner: same id, and
    // counts that agree (each read the same lines once).
    let mut union = from_a.clone();
    for (id, alert) in from_b {
        if let Some(other) = union.get(&id) {
            assert_eq!(other, &alert, "alert {id} held by both instances differs");
        }
        union.insert(id, alert);
    }
    assert_same_alerts(&union, &single);
    let clients = |m: &BTreeMap<String, AlertKey>| m.values().map(|a| a.1.clone()).collect::<BTreeSet<_>>();
    assert_eq!(clients(&union), clients(&single), "no client missing");
}

/// `recwatch kafka-key` prints the key the tests produce with: the client address of each
/// line, canonical (`::ffff:a.b.c.d` is the IPv4 client), `-` for a line without one; and the
/// shipper snippets.
#[test]
fn kafka_key_prints_each_lines_client_and_the_shipper_snippets() {
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_recwatch"))
            .arg("kafka-key")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let lines = [
        "203.0.113.7 - - [18/Feb/2019:10:00:01 +0100] \"GET /recordings/a.wav HTTP/1.1\" 200 5 \"-\" \"curl/8\"",
        "::ffff:10.1.2.3 - - [18/Feb/2019:10:00:01 +0100] \"GET / HTTP/1.1\" 200 5 \"-\" \"curl/8\"",
        "not a log line",
        "[2001:db8:0::7] - - [18/Feb/2019:10:00:01 +0100] \"GET / HTTP/1.1\" 200 5 \"-\" \"curl/8\"",
    ];
    assert_eq!(run(&[], &(lines.join("\n") + "\n")), "203.0.113.7\n10.1.2.3\n-\n2001:db8::7\n");
    assert_eq!(run(&[lines[0]], ""), "203.0.113.7\n");
    assert!(run(&["--snippet", "vector"], "").contains("key_field = \"client_key\""));
    assert!(run(&["--snippet", "filebeat", "--format", "vhost_combined"], "").contains("%{?vhost} %{client_key}"));
}

/// A real Kafka-compatible broker process (tansu, installed by scripts/lib/setup.sh; its path
/// in RECWATCH_TANSU): a topic with partitions, lines produced by rdkafka, consumed by the
/// daemon in a group, committed, and the same alerts as replay.
#[test]
fn real_broker_tansu_consumed_alerts_equal_replay() {
    let tansu = std::env::var_os("RECWATCH_TANSU").map(PathBuf::from).expect(
        "RECWATCH_TANSU must name the tansu broker binary (scripts/test installs it with scripts/lib/setup.sh)",
    );
    assert!(tansu.is_file(), "RECWATCH_TANSU={} is not a file", tansu.display());
    let broker = Broker::start(&tansu);
    let bootstrap = broker.bootstrap.clone();
    let (lines, _) = synth_lines(20_000, 21, 1_550_448_000);
    let producer = producer(&bootstrap);
    produce(&producer, &lines, |i| if i % 3 == 0 { Wrap::Vector } else { Wrap::Raw });

    let env = Env::new(&bootstrap, "real", FAST_GROUP);
    let d = env.start();
    d.wait_ready();
    let observer = GroupObserver::new(&bootstrap, "real");
    observer.wait_committed(lines.len());
    d.wait_metric("recwatch_kafka_messages_total", "", lines.len() as f64);
    assert!(d.terminate().success(), "SIGTERM exits 0");
    assert_same_alerts(&keyed(&env.stored_alerts()), &keyed(&replay_alerts(&env, &lines)));
}

/// A tansu broker on 127.0.0.1 with in-memory storage, killed when dropped.
struct Broker {
    child: Child,
    bootstrap: String,
    _dir: tempfile::TempDir,
    /// tansu needs its port up front: held for the broker's life (see common::ReservedPort).
    _port: ReservedPort,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    fn start(tansu: &Path) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let reserved = reserve_port();
        let port = reserved.port;
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("tansu.log")).unwrap();
        let child = Command::new(tansu)
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut broker = Broker { child, bootstrap: format!("127.0.0.1:{port}"), _dir: dir, _port: reserved };
        wait_until("tansu to create the topic", DEADLINE, || {
            if let Some(status) = broker.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(broker._dir.path().join("tansu.log")).unwrap_or_default();
                panic!("tansu exited: {status}\n{log}");
            }
            let out = Command::new(tansu)
                .args(["topic", "create", TOPIC, "--broker", &url, "--partitions", &PARTITIONS.to_string()])
                .output()
                .ok()?;
            out.status.success().then_some(())
        });
        broker
    }
}

/// SIGHUP with the Kafka settings unchanged (first nothing changed, then a rule): the
/// consumer keeps its group membership (the rebalance counter does not move), reads nothing
/// twice, and the changed rule judges exactly the messages consumed after the swap.
#[test]
fn a_sighup_with_unchanged_kafka_settings_keeps_the_consumer_in_its_group() {
    let cluster = mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    let lines = single_fetches(2_000, 1_550_448_000);
    let (first, second) = lines.split_at(1_000);
    let producer = producer(&bootstrap);
    produce(&producer, first, |_| Wrap::Raw);
    let env = Env::new(&bootstrap, "reload", FAST_GROUP);
    // Logging at info: the consumer's swap is awaited in its log line.
    let mut command = common::run_command(&env.config());
    command.env("RECWATCH_LOG", "info");
    let d = Daemon::start(command, None);
    d.wait_ready();
    d.wait_metric("recwatch_kafka_messages_total", "", first.len() as f64);
    let rebalances = d.metric("recwatch_kafka_rebalances_total", "").unwrap();
    let pid = d.pid().to_string();
    for n in 1..=3 {
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
        d.wait_metric("recwatch_config_reloads_total", "", n as f64);
    }
    // R1's severity changes: swapped into the consumer's pipeline, the consumer stays.
    let text = std::fs::read_to_string(env.config()).unwrap();
    std::fs::write(env.config(), text.replacen("severity = \"critical\"", "severity = \"warning\"", 1)).unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    d.wait_metric("recwatch_config_reloads_total", "", 4.0);
    wait_until("the consumer to take the new rules", Duration::from_secs(60), || {
        d.stderr().contains("rules swapped; consumer kept").then_some(())
    });
    produce(&producer, second, |_| Wrap::Raw);
    d.wait_metric("recwatch_kafka_messages_total", "", lines.len() as f64);
    assert_eq!(d.metric("recwatch_kafka_rebalances_total", ""), Some(rebalances), "a reload rebalanced the group");
    assert_eq!(d.metric("recwatch_kafka_messages_total", ""), Some(lines.len() as f64), "messages read twice");
    assert!(d.terminate().success());
    // Every message raised one alert: the first half under the old severity, the second
    // under the new one; none twice.
    let alerts = env.stored_alerts();
    let count = |severity: &str| alerts.iter().filter(|a| a["severity"] == severity).count();
    assert_eq!((count("critical"), count("warning")), (first.len(), second.len()));
}
