//! The checks behind recwatch's fuzz targets, one function per target: each feeds bytes to one
//! parser and asserts what must hold for any input. Owns those assertions. Never runs a
//! fuzzer itself: `fuzz_targets/*.rs` hand them to libFuzzer, and `tests/fuzz_corpus.rs` of
//! the main crate replays the committed corpora through them on stable Rust (the smoke pass
//! that needs no nightly build). Uses nothing but recwatch's public API and axum.

use axum::extract::Query;
use axum::http::Uri;
use recwatch::classify::path::{normalize_target, PathSemantics, MAX_NORMALIZED_LEN};
use recwatch::config::Config;
use recwatch::http::api::{parse_since, ListQuery};
use recwatch::parse::json::{JsonPlan, JsonProducer};
use recwatch::parse::samba::SambaPlan;
use recwatch::parse::{client_key, parse_client_ip, FieldPlan, LineFormat, LogFormat};
use recwatch::source::kafka::{PayloadFormat, Unwrapper};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Every line format a source can be configured with, built once: the named formats, a
/// compiled nginx `log_format` and Apache `LogFormat` plan, the S3 server-access plan, every
/// JSON producer's default map (and a custom `json_fields` map), FTP xferlog and Samba's
/// full_audit records (default prefix and a longer one).
fn every_line_format() -> &'static [LineFormat] {
    static FORMATS: OnceLock<Vec<LineFormat>> = OnceLock::new();
    FORMATS.get_or_init(|| {
        let mut formats: Vec<LineFormat> = LogFormat::ALL.into_iter().map(LineFormat::from).collect();
        let nginx = "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\" $scheme \"$http_x_forwarded_for\" $request_time";
        let apache = "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\" %{HTTPS}e %v:%p %D";
        formats.push(LineFormat::Plan(Arc::new(FieldPlan::nginx(nginx).expect("nginx plan"))));
        formats.push(LineFormat::Plan(Arc::new(FieldPlan::apache(apache).expect("apache plan"))));
        formats.push(LineFormat::Plan(Arc::new(FieldPlan::s3())));
        for (producer, _) in JsonProducer::ALL {
            let overrides: Vec<(String, String)> = match producer {
                JsonProducer::Custom => [("client", "ip"), ("target", "req.uri"), ("status", "code"), ("time", "ts")]
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .to_vec(),
                _ => Vec::new(),
            };
            formats.push(LineFormat::Json(Arc::new(JsonPlan::new(producer, &overrides).expect("json plan"))));
        }
        formats.push(LineFormat::Xferlog);
        for prefix in ["%u|%I", "%u|%I|%m|%S"] {
            formats.push(LineFormat::Samba(Arc::new(SambaPlan::new(prefix, "nobody").expect("samba plan"))));
        }
        formats
    })
}

/// Fuzzes the access-log line parser in every format ([`every_line_format`]), the head
/// parser of a line cut at the length bound, and the lazy accessors a matching line is asked
/// for (bytes, referer, user agent, forwarded-for, time, transport, client address, Kafka
/// key). Never panics on any bytes.
pub fn line_parser(line: &[u8]) {
    for format in every_line_format() {
        for parsed in [format.parse(line), format.parse_head(line)].into_iter().flatten() {
            let _ = parsed.body_bytes();
            let _ = parsed.referer();
            let _ = parsed.user_agent();
            let _ = parsed.forwarded_for();
            let _ = parsed.unix_time();
            let _ = parsed.transport();
            let _ = parse_client_ip(parsed.client);
        }
    }
    for format in LogFormat::ALL {
        let _ = client_key(format, line);
    }
}

/// Fuzzes the request-target normaliser: any bytes give a path that starts with `/`, fits
/// the length bound, and normalising that path again changes nothing (so a second decoding
/// pass, as a proxy might make, cannot reveal a different path). Exempt, by design: a path cut
/// at the length bound, one holding a decoded `?` or `#` (read as a query by a second pass),
/// and one still holding a `%XX` escape (double encoding is decoded once, as nginx and Apache
/// do), or a `\` (undone as log escaping by a second pass). Both path semantics (Linux,
/// Windows), with and without case folding.
pub fn path_normaliser(target: &[u8]) {
    for semantics in PathSemantics::ALL {
        for case_fold in [false, true] {
            let mut once = Vec::new();
            normalize_target(target, semantics, case_fold, &mut once);
            assert!(once.starts_with(b"/"), "{target:?} -> {once:?}");
            assert!(once.len() <= MAX_NORMALIZED_LEN);
            let cut = once.len() == MAX_NORMALIZED_LEN;
            let still_encoded =
                once.windows(3).any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
            // A `\` in the result would be read as log escaping by a second pass (found by this
            // target: `\\` halves on every pass), like `%XX` as percent escaping.
            let log_escape = once.contains(&b'\\');
            if cut || still_encoded || log_escape || once.contains(&b'?') || once.contains(&b'#') {
                continue;
            }
            let mut twice = Vec::new();
            normalize_target(&once, semantics, case_fold, &mut twice);
            assert_eq!(once, twice, "normalising {target:?} twice differs ({semantics:?}, case_fold {case_fold})");
        }
    }
}

/// Fuzzes the config loader (TOML → validated Config) with arbitrary text: it answers with a
/// Config or a ConfigError whose message names file and key, never a panic. The file name is
/// in a directory that does not exist, so relative paths in the text resolve to nothing.
pub fn config_loader(text: &[u8]) {
    let Ok(text) = std::str::from_utf8(text) else { return };
    let file = Path::new("/nonexistent-recwatch-fuzz/recwatch.toml");
    match Config::from_toml(file, text) {
        Ok(config) => {
            let _ = config.describe();
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("/nonexistent-recwatch-fuzz/recwatch.toml"), "{message}");
        }
    }
}

/// Fuzzes what the alert API reads from a request: the query of `GET /api/v1/alerts`
/// (extracted exactly as the handler does, then validated into a store filter) and the
/// `since` parameter's time parser. Any bytes give a filter or a 400 message, never a panic.
pub fn api_request(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_since(text);
    }
    let mut uri = b"/api/v1/alerts?".to_vec();
    uri.extend_from_slice(data);
    let Ok(uri) = Uri::try_from(uri) else { return };
    if let Ok(Query(query)) = Query::<ListQuery>::try_from_uri(&uri) {
        let _ = query.build();
    }
}

/// Fuzzes the Kafka payload decoder (raw lines or Vector/Filebeat JSON envelopes) in every
/// payload mode, with one reused Unwrapper as the consumer keeps it: any bytes give lines and
/// an origin, or a counted reason to skip, never a panic.
pub fn kafka_envelope(payload: &[u8]) {
    let mut unwrapper = Unwrapper::default();
    for format in PayloadFormat::ALL {
        if let Ok(unwrapped) = unwrapper.unwrap(payload, format) {
            // At most 200 bytes of names and the `:` between host and file.
            assert!(unwrapped.origin.len() <= 201, "origin is bounded: {:?}", unwrapped.origin);
            assert!(!unwrapped.origin.chars().any(char::is_control), "{:?}", unwrapped.origin);
        }
    }
}
