//! Tests of the whole path text → raw → built `Config`: values, errors with file:line:key,
//! and the shipped configs. Never starts a stage.

use std::path::Path;

use super::*;
use crate::alerting::ReceiverKind;
use crate::detect::rule::Severity;
use crate::source::kafka::PayloadFormat;
use crate::source::SourceInput;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(Path::new("/etc/recwatch/recwatch.toml"), text)
}

#[test]
fn empty_config_gets_the_default_rules() {
    let c = load("").unwrap();
    let ids: Vec<&str> = c.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["R1", "R2", "R3", "R4", "R5", "R6"]);
    assert_eq!(c.store.dir, Path::new("/var/lib/recwatch"));
    assert!(c.engine.workers >= 1);
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let e =
        load("[networks]\ninternal = [\"10.0.0.0/8\"]\n\n[[rule]]\nid = \"X\"\nname = \"x\"\nagregate = \"count\"\n")
            .unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("/etc/recwatch/recwatch.toml:7: rule[0]"), "{msg}");
    assert!(msg.contains("agregate"), "{msg}");
}

#[test]
fn bad_values_name_their_line() {
    let e = load("[networks]\ninternal = [\n  \"10.0.0.0/8\",\n  \"10.0.0.1/8\",\n]\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(4), "networks.internal[1]"), "{e}");
    let e = load("[[source]]\npath = \"/var/log/nginx/access.log\"\nformat = \"combind\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(3), "source[0].format"), "{e}");
    assert!(e.message.contains("combined"), "{e}");
    let e = load("[[rule]]\nid = \"R9\"\nname = \"n\"\naggregate = \"distinct\"\n").unwrap_err();
    assert_eq!(e.key, "rule[0].threshold", "{e}");
    let e = load("[[rule]]\nid = \"R9\"\nname = \"n\"\nuser_agent = \"(\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(4), "rule[0].user_agent"), "{e}");
    let e = load("[sensitive]\nprefixes = [\"recordings/\"]\n").unwrap_err();
    assert_eq!(e.key, "sensitive.prefixes[0]", "{e}");
    let e = load("[[source]]\npath = \"/var/log/a.log\"\npath_semantics = \"posix\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(3), "source[0].path_semantics"), "{e}");
    assert!(e.message.contains("linux, windows"), "{e}");
    let e = load("[[rule]]\nid = \"R9\"\nname = \"n\"\nmethod_kind = \"get\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(4), "rule[0].method_kind"), "{e}");
    let e = load("[engine]\nworkers = 1\nfuture_tolerance_secs = -1\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(3), "engine.future_tolerance_secs"), "{e}");
}

#[test]
fn path_semantics_and_method_kind_are_read() {
    use crate::classify::path::PathSemantics;
    use crate::detect::rule::MethodKind;
    let text = "[[source]]\npath = \"/a.log\"\n\n[[source]]\npath = \"/b.log\"\npath_semantics = \"windows\"\n";
    let c = load(text).unwrap();
    let semantics: Vec<PathSemantics> = c.sources.iter().map(|s| s.path_semantics).collect();
    assert_eq!(semantics, [PathSemantics::Linux, PathSemantics::Windows]);
    let c = load("").unwrap();
    let kinds: Vec<(&str, MethodKind)> = c.rules.iter().map(|r| (r.id.as_str(), r.method_kind)).collect();
    let want = [
        ("R1", MethodKind::Body),
        ("R2", MethodKind::Any),
        ("R3", MethodKind::Body),
        ("R4", MethodKind::Body),
        ("R5", MethodKind::Any),
        ("R6", MethodKind::Body),
    ];
    assert_eq!(kinds, want);
}

#[test]
fn syntax_errors_have_a_line() {
    let e = load("[store]\npath = \n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
}

#[test]
fn relative_store_path_is_relative_to_the_config_file() {
    let c = load("[store]\npath = \"state\"\n").unwrap();
    assert_eq!(c.store.dir, Path::new("/etc/recwatch/state"));
}

const KAFKA: &str = "[[source]]\nname = \"fleet\"\nkind = \"kafka\"\n[source.kafka]\nbrokers = [\"k1:9092\", \"[::1]:9093\"]\ntopics = [\"logs\"]\ngroup_id = \"recwatch\"\n";

#[test]
fn kafka_sources_are_built_with_their_options() {
    let c = load(&format!("{KAFKA}payload = \"envelope\"\n[source.kafka.options]\n\"security.protocol\" = \"SASL_SSL\"\n\"session.timeout.ms\" = 6000\n\"enable.partition.eof\" = false\n")).unwrap();
    let SourceInput::Kafka(k) = &c.sources[0].input else { panic!("not kafka: {:?}", c.sources[0]) };
    assert_eq!(
        (k.topics.as_slice(), k.group_id.as_str(), k.payload),
        (&["logs".to_string()][..], "recwatch", PayloadFormat::Envelope)
    );
    assert_eq!(k.brokers, ["k1:9092", "[::1]:9093"]);
    let options: Vec<(&str, &str)> = k.options.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        options,
        [("enable.partition.eof", "false"), ("security.protocol", "SASL_SSL"), ("session.timeout.ms", "6000")]
    );
    assert_eq!(c.sources[0].path(), None);
    assert!(c.describe().contains("kafka topics [\"logs\"]"), "{}", c.describe());
}

#[test]
fn kafka_errors_name_their_line_and_key() {
    let e = load(&format!("{KAFKA}[source.kafka.options]\n\"group.id\" = \"other\"\n")).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(9), "source[0].kafka.options.group.id"), "{e}");
    assert!(e.message.contains("group_id"), "{e}");
    let e = load(&format!("{KAFKA}[source.kafka.options]\n\"no.such.thing\" = 1\n")).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(9), "source[0].kafka.options.no.such.thing"), "{e}");
    let e = load(&format!("{KAFKA}[source.kafka.options]\n\"enable.auto.offset.store\" = true\n")).unwrap_err();
    assert!(e.message.contains("durable"), "{e}");
    let e = load(&KAFKA.replace("\"k1:9092\"", "\"k1\"")).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(5), "source[0].kafka.brokers[0]"), "{e}");
    let e = load(&KAFKA.replace("topics = [\"logs\"]", "topics = []")).unwrap_err();
    assert_eq!(e.key, "source[0].kafka.topics", "{e}");
    let e = load(&format!("{KAFKA}payload = \"xml\"\n")).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(8), "source[0].kafka.payload"), "{e}");
    let e = load("[[source]]\nkind = \"kafka\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(2), "source[0].kind"), "{e}");
    let e = load("[[source]]\nkind = \"kafka\"\npath = \"/x\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(3), "source[0].path"), "{e}");
    let e = load("[[source]]\nkind = \"pipe\"\n").unwrap_err();
    assert!(e.message.contains("file, kafka"), "{e}");
    let e = load("[[source]]\nname = \"x\"\n").unwrap_err();
    assert_eq!(e.key, "source[0].path", "{e}");
    let e = load(&format!("{KAFKA}[source.kafka.options]\n\"fetch.wait.max.ms\" = \"soon\"\n")).unwrap_err();
    assert_eq!(e.line, Some(9), "{e}");
}

#[test]
fn the_commented_kafka_example_is_valid() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/recwatch.toml")).unwrap();
    let start = text.find("# [[source]]").expect("a commented Kafka example");
    let block: String = text[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{}\n", l.trim_start_matches('#').strip_prefix(' ').unwrap_or("")))
        .collect();
    let c = load(&block).unwrap_or_else(|e| panic!("{e}\n{block}"));
    assert!(matches!(c.sources[0].input, SourceInput::Kafka(_)));
}

#[test]
fn pseudonym_key_file_is_loaded_relative_to_the_config_and_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recwatch.toml");
    std::fs::write(dir.path().join("key"), "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::write(dir.path().join("short"), "short\n").unwrap();
    let c = Config::from_toml(&file, "[privacy]\npseudonym_key_file = \"key\"\n").unwrap();
    assert_eq!(c.pseudonym_key_file.as_deref(), Some(dir.path().join("key").as_path()));
    let expected = Pseudonymizer::new(b"0123456789abcdef0123456789abcdef");
    assert_eq!(c.pseudonyms.unwrap().pseudonymize("/r/121212-1212"), expected.pseudonymize("/r/121212-1212"));
    for (name, wanted) in [("short", "shorter than 16 bytes"), ("missing", "cannot read")] {
        let text = format!("[store]\npath = \"s\"\n\n[privacy]\npseudonym_key_file = \"{name}\"\n");
        let e = Config::from_toml(&file, &text).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(5), "privacy.pseudonym_key_file"), "{e}");
        assert!(e.message.contains(wanted), "{e}");
    }
    assert!(load("").unwrap().pseudonyms.is_none());
}

#[test]
fn shipped_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["config/recwatch.toml", "config/examples/reference.toml"] {
        let c = Config::load(&root.join(f)).unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.rules.is_empty(), "{f}");
    }
    let reference = Config::load(&root.join("config/examples/reference.toml")).unwrap();
    let names: Vec<&str> = reference.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["unknown-client-fetch", "enumeration"]);
}

#[test]
fn receivers_are_validated_and_their_secrets_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hmac.key"), "0123456789abcdef0123\n").unwrap();
    std::fs::write(dir.path().join("short"), "abc").unwrap();
    let file = dir.path().join("recwatch.toml");
    let load = |text: &str| Config::from_toml(&file, text);
    let c = load(
        "[http]\nexternal_url = \"https://recwatch.example/\"\n[[receiver]]\nname = \"oncall\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:9093/\"\nseverities = [\"critical\"]\n[[receiver]]\nname = \"hook-1\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:8080/hook\"\nsecret_file = \"hmac.key\"\ntimeout_ms = 500\n",
    )
    .unwrap();
    assert_eq!(c.alerting.external_url, "https://recwatch.example");
    let (am, hook) = (&c.alerting.receivers[0], &c.alerting.receivers[1]);
    assert_eq!(
        (am.endpoint().as_str(), am.severities.as_slice()),
        ("http://127.0.0.1:9093/api/v2/alerts", &[Severity::Critical][..])
    );
    assert_eq!(hook.endpoint(), "http://127.0.0.1:8080/hook");
    assert_eq!(hook.secret.as_ref().unwrap().expose(), b"0123456789abcdef0123");
    assert_eq!(hook.severities, Severity::ALL);
    assert_eq!((hook.timeout.as_millis(), hook.resend.as_secs()), (500, 60));
    assert!(!format!("{c:?}").contains("0123456789abcdef"), "secrets are never printed");
    assert_eq!(load("").unwrap().alerting.external_url, "http://127.0.0.1:9898");

    let err = |text: &str| load(text).unwrap_err();
    let am = "[[receiver]]\nname = \"oncall\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\n";
    let e = err(&format!("{am}[[receiver]]\nname = \"oncall\"\nkind = \"alertmanager\"\nurl = \"http://h\"\n"));
    assert_eq!((e.line, e.key.as_str()), (Some(6), "receiver[1].name"), "{e}");
    let e = err("[[receiver]]\nname = \"On Call\"\nkind = \"webhook\"\nurl = \"http://h\"\n");
    assert_eq!((e.line, e.key.as_str()), (Some(2), "receiver[0].name"), "{e}");
    let e = err("[[receiver]]\nname = \"x\"\nkind = \"pager\"\nurl = \"http://h\"\n");
    assert_eq!((e.line, e.key.as_str()), (Some(3), "receiver[0].kind"), "{e}");
    let e = err("[[receiver]]\nname = \"x\"\nkind = \"alertmanager\"\nurl = \"https://h\"\n");
    assert_eq!((e.line, e.key.as_str()), (Some(4), "receiver[0].url"), "{e}");
    assert!(e.message.contains("https is not supported"), "{e}");
    let e = err(&format!("{am}severities = [\"critical\", \"urgent\"]\n"));
    assert_eq!((e.line, e.key.as_str()), (Some(5), "receiver[0].severities[1]"), "{e}");
    let e = err("[[receiver]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"http://h/x\"\n");
    assert_eq!(e.key, "receiver[0].secret_file", "{e}");
    let e = err("[[receiver]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"http://h/x\"\nsecret_file = \"short\"\n");
    assert_eq!((e.line, e.key.as_str()), (Some(5), "receiver[0].secret_file"), "{e}");
    let e = err(&format!("{am}token_file = \"missing\"\n"));
    assert_eq!((e.line, e.key.as_str()), (Some(5), "receiver[0].token_file"), "{e}");
    let e = err(&format!("{am}timeout_ms = 0\n"));
    assert_eq!(e.key, "receiver[0].timeout_ms", "{e}");
    let e = err(&format!("{am}retry_initial_ms = 5000\nretry_max_ms = 1000\n"));
    assert_eq!((e.line, e.key.as_str()), (Some(6), "receiver[0].retry_max_ms"), "{e}");
    let e = err(&format!("{am}secret = \"inline\"\n"));
    assert_eq!((e.line, e.key.as_str()), (Some(5), "receiver[0].secret"), "{e}");
}

#[test]
fn the_commented_receivers_of_the_shipped_config_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/recwatch.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "0123456789abcdef-0123456789").unwrap();
    let secret = dir.path().join("secret").display().to_string();
    let start = shipped.find("# [[receiver]]").expect("the shipped config documents receivers");
    let mut text = String::new();
    for line in shipped[start..].lines() {
        let line = line.strip_prefix("# ").unwrap_or("");
        let line = match line.split_once(" = ") {
            Some((k, _)) if k.ends_with("_file") => format!("{k} = {secret:?}"),
            _ => line.to_string(),
        };
        text += &line;
        text += "\n";
    }
    let c = Config::from_toml(&dir.path().join("recwatch.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let kinds: Vec<_> = c.alerting.receivers.iter().map(|r| (r.name.as_str(), r.kind)).collect();
    assert_eq!(kinds, [("oncall", ReceiverKind::Alertmanager), ("soc-webhook", ReceiverKind::Webhook)]);
}

#[test]
fn retention_days_0_is_refused_with_its_line() {
    let e = load("[store]\npath = \"s\"\nretention_days = 0\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(3), "store.retention_days"), "{e}");
    assert!(e.to_string().starts_with("/etc/recwatch/recwatch.toml:3: store.retention_days: "), "{e}");
    assert_eq!(load("[store]\nretention_days = 1\n").unwrap().store.retention_days, 1);
}

#[test]
fn rotated_drain_secs_0_is_refused_with_its_line() {
    let e = load("[tail]\npoll_interval_ms = 100\nrotated_drain_secs = 0\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(3), "tail.rotated_drain_secs"), "{e}");
    let c = load("[tail]\nrotated_drain_secs = 1\n").unwrap();
    assert_eq!(c.tail.rotated_drain, std::time::Duration::from_secs(1));
}

#[test]
fn defaults_of_an_empty_file_are_the_documented_ones() {
    let c = load("").unwrap();
    assert_eq!((c.store.retention_days, c.http.listen.to_string()), (90, "127.0.0.1:9898".to_string()));
    assert_eq!(c.classify.prefixes, ["/recordings/"]);
    assert_eq!(c.classify.extensions, ["wav", "mp3", "gsm", "ogg"]);
    assert!(c.classify.case_insensitive);
    assert_eq!((c.tail.poll_interval.as_millis(), c.tail.inotify, c.tail.rotated_drain.as_secs()), (250, true, 5));
    assert_eq!((c.engine.max_clients_per_worker, c.engine.client_idle_secs), (16_000, 3600));
    assert_eq!(c.engine.future_tolerance_secs, 300);
    assert!(c.alerting.receivers.is_empty() && c.http.token_file.is_none());
    // A table that is present but partial keeps the defaults of its other keys.
    let c = load("[tail]\ninotify = false\n[store]\npath = \"s\"\n").unwrap();
    assert_eq!((c.tail.poll_interval.as_millis(), c.tail.inotify, c.store.retention_days), (250, false, 90));
}

#[test]
fn listen_override_moves_the_default_external_url_with_it() {
    let overrides = Overrides {
        listen: Some("127.0.0.1:4321".parse().unwrap()),
        store_dir: Some("/tmp/state".into()),
        workers: Some(0),
        sources: vec![crate::source::SourceSettings {
            name: "extra".into(),
            format: crate::parse::LineFormat::Named(crate::parse::LogFormat::Common),
            path_semantics: Default::default(),
            timezone: Default::default(),
            input: SourceInput::File { path: "/var/log/x.log".into() },
        }],
    };
    let text = "[[source]]\nname = \"web\"\npath = \"/var/log/a.log\"\n";
    let c = Config::from_toml_with(Path::new("/etc/recwatch/recwatch.toml"), text, &overrides).unwrap();
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:4321");
    assert_eq!(c.alerting.external_url, "http://127.0.0.1:4321");
    assert_eq!(c.store.dir, Path::new("/tmp/state"));
    assert_eq!(c.engine.workers, 1);
    let names: Vec<&str> = c.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "extra"]);
    let text = format!("{text}[http]\nexternal_url = \"http://recwatch.example\"\n");
    let c = Config::from_toml_with(Path::new("/etc/recwatch/recwatch.toml"), &text, &overrides).unwrap();
    assert_eq!(c.alerting.external_url, "http://recwatch.example", "a configured URL is kept");
}

#[test]
fn a_daemon_bound_to_port_0_links_alerts_to_the_port_it_got() {
    let bound: std::net::SocketAddr = "127.0.0.1:40123".parse().unwrap();
    let mut c = load("[http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    assert_eq!(c.alerting.external_url, "http://127.0.0.1:0");
    c.bound_to(bound);
    assert_eq!((c.http.listen, c.alerting.external_url.as_str()), (bound, "http://127.0.0.1:40123"));
    let mut c = load("[http]\nlisten = \"127.0.0.1:0\"\nexternal_url = \"https://recwatch.example\"\n").unwrap();
    c.bound_to(bound);
    assert_eq!(c.alerting.external_url, "https://recwatch.example", "a configured URL is kept");
}

#[test]
fn log_format_strings_compile_into_plans_and_errors_name_their_key() {
    let text = "[[source]]\npath = \"/a.log\"\nnginx_log_format = '$remote_addr [$time_local] \"$request\" $status $geo_city'\n";
    let c = load(text).unwrap();
    assert!(matches!(c.sources[0].format, crate::parse::LineFormat::Plan(_)));
    let described = c.describe();
    assert!(described.contains("warning: source /a.log: $geo_city unknown to recwatch"), "{described}");
    let e = load("[[source]]\npath = \"/a.log\"\n\napache_log_format = '%h %t \"%r\"'\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(4), "source[0].apache_log_format"), "{e}");
    assert!(e.message.contains("status"), "{e}");
    let e = load("[[source]]\npath = \"/a.log\"\nformat = \"combined\"\nnginx_log_format = '$status'\n").unwrap_err();
    assert_eq!(e.key, "source[0].format", "{e}");
    let c = load(
        "[[source]]\npath = \"/a.log\"\nformat = \"caddy_json\"\njson_fields = { client = \"request.remote_ip\" }\n",
    )
    .unwrap();
    assert!(matches!(c.sources[0].format, crate::parse::LineFormat::Json(_)));
    let e = load("[[source]]\npath = \"/a.log\"\nformat = \"json\"\njson_fields = { client = \"ip\" }\n").unwrap_err();
    assert_eq!(e.key, "source[0].json_fields", "{e}");
    assert!(e.message.contains("time"), "{e}");
    let e = load("[[source]]\npath = \"/a.log\"\njson_fields = { client = \"ip\" }\n").unwrap_err();
    assert_eq!(e.key, "source[0].json_fields", "{e}");
    let e = load("[[source]]\npath = \"/a.log\"\nformat = \"jsn\"\n").unwrap_err();
    assert!(e.message.contains("caddy_json"), "{e}");
}

#[test]
fn samba_full_audit_sources_take_the_shares_prefix_and_errors_name_the_key() {
    let c =
        load("[[source]]\npath = \"/a.log\"\nformat = \"samba_full_audit\"\nsamba_prefix = \"%u|%I|%m|%S\"\n").unwrap();
    assert_eq!(c.sources[0].format.describe(), "samba_full_audit (full_audit:prefix %u|%I|%m|%S)");
    let c = load("[[source]]\npath = \"/a.log\"\nformat = \"samba_full_audit\"\n").unwrap();
    assert_eq!(c.sources[0].format.describe(), "samba_full_audit (full_audit:prefix %u|%I)");
    let e =
        load("[[source]]\npath = \"/a.log\"\nformat = \"samba_full_audit\"\nsamba_prefix = \"%u|%m\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(4), "source[0].samba_prefix"), "{e}");
    assert!(e.to_string().contains("no %I field"), "{e}");
    let e = load("[[source]]\npath = \"/a.log\"\nsamba_guest_account = \"smbguest\"\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(3), "source[0].samba_guest_account"), "{e}");
}

#[test]
fn call_id_needs_a_valid_regex_with_the_call_group_and_errors_name_file_line_key() {
    let c = load("[sensitive]\ncall_id = 'call-(?P<call>\\d+)-part\\d+'\n").unwrap();
    assert_eq!(c.classify.call_ids.call_of(b"/recordings/call-7-part2.wav"), b"7");
    assert_eq!(load("").unwrap().classify.call_ids.pattern(), None);
    let e = load("[sensitive]\nprefixes = [\"/r/\"]\ncall_id = 'call-(\\d+)'\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(3), "sensitive.call_id"), "{e}");
    assert!(e.to_string().starts_with("/etc/recwatch/recwatch.toml:3: sensitive.call_id: has no named group"), "{e}");
    let e = load("[sensitive]\ncall_id = '(?P<call>[a-'\n").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(2), "sensitive.call_id"), "{e}");
    assert!(e.message.starts_with("not a valid regex"), "{e}");
}
