//! The scope report of a replay: what a breach notification needs — which clients fetched
//! which recordings, how many distinct, how many bytes, when — as JSON, CSV or Markdown.
//! Owns the report shape and its renderings. Never reads logs or the store itself. Paths and
//! user agents in it come from alerts, where personnummer and phone numbers were already
//! replaced by pseudonyms ([`crate::privacy`]); nothing else in it comes from log content but
//! client addresses. Every rendering writes text through [`crate::escape`]'s one rule, so a
//! crafted path or user agent cannot act on a terminal, leave its Markdown code span or become
//! a spreadsheet formula.

use std::fmt::Write as _;

use serde::Serialize;

use crate::classify::client::ClientKind;
use crate::detect::alert::Alert;
use crate::detect::worker::ClientScope;
use crate::escape;
use crate::parse::time::format_rfc3339;
use crate::parse::{parse_line, LogFormat, SkipReason};
use crate::telemetry::Telemetry;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Json,
    Csv,
    Markdown,
}

impl ReportFormat {
    pub fn from_name(s: &str) -> Option<ReportFormat> {
        match s {
            "json" => Some(ReportFormat::Json),
            "csv" => Some(ReportFormat::Csv),
            "md" | "markdown" => Some(ReportFormat::Markdown),
            _ => None,
        }
    }
}

#[derive(Serialize)]
pub struct Report {
    pub lines: u64,
    pub parsed: u64,
    /// Skipped lines by reason (every reason listed, zeros included).
    pub skipped: std::collections::BTreeMap<&'static str, u64>,
    /// Lines longer than the line bound, judged by their head (counted in `parsed` or
    /// `skipped` like any line).
    pub truncated: u64,
    /// Requests to any path under a sensitive prefix.
    pub sensitive_requests: u64,
    /// Of those, requests for recordings (prefix and extension).
    pub recording_requests: u64,
    pub inputs: Vec<InputSummary>,
    pub alerts: Vec<AlertRow>,
    pub clients: Vec<ClientRow>,
}

#[derive(Serialize, Clone, Debug)]
pub struct InputSummary {
    pub input: String,
    /// Lines read from it (decompressed).
    pub lines: u64,
    /// Bytes read from it (decompressed); only known when it was read to the end.
    pub bytes: u64,
    /// Why reading stopped early, if it did (lines before the error were processed).
    pub error: Option<String>,
    /// Set when most of its lines were skipped: probably the wrong `--format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Lines of it that did not parse (blank lines not counted); the report says it through
    /// `warning` when they are more than half.
    #[serde(skip)]
    pub skipped: u64,
}

impl InputSummary {
    /// A summary of `input` before anything was read from it.
    pub fn new(input: String) -> InputSummary {
        InputSummary { input, lines: 0, bytes: 0, error: None, warning: None, skipped: 0 }
    }
}

/// Lines the parsers skipped so far, except blank ones and lines recording no access (neither
/// is a sign of a wrong format).
pub fn unparsed_lines(telemetry: &Telemetry) -> u64 {
    SkipReason::ALL.iter().filter(|r| r.is_unparsed()).map(|r| telemetry.skipped(*r)).sum()
}

/// The warning for an input of which `skipped` of `lines` (more than half) could not be parsed
/// as `format`; `sample` is the input's first lines (empty when it cannot be read again, like
/// stdin), used to name the format that fits better. `None` when at most half were skipped.
pub fn skipped_lines_warning(format: LogFormat, lines: u64, skipped: u64, sample: &[Vec<u8>]) -> Option<String> {
    if lines == 0 || skipped * 2 <= lines {
        return None;
    }
    let head = format!("{skipped} of {lines} lines were skipped as not {}", format.as_str());
    Some(match likely_format(sample) {
        Some(f) if f != format => format!("{head}: they look like {} (try --format {})", f.as_str(), f.as_str()),
        _ => {
            format!("{head}: no known format fits them (formats: {})", LogFormat::ALL.map(LogFormat::as_str).join(", "))
        }
    })
}

/// The format that parses the most of `sample`'s lines with a client address where it
/// expects one (ties: the richer format, one with a user agent, first); `None` when none
/// parses any.
pub fn likely_format(sample: &[Vec<u8>]) -> Option<LogFormat> {
    let fits = |f: LogFormat, line: &[u8]| {
        let rich = matches!(f, LogFormat::Combined | LogFormat::VhostCombined);
        parse_line(f, line).is_ok_and(|l| {
            crate::parse::parse_client_ip(l.client).is_some()
                && (!rich || l.user_agent().is_some() || l.referer().is_some())
        })
    };
    [LogFormat::Combined, LogFormat::VhostCombined, LogFormat::Common, LogFormat::VhostCommon]
        .into_iter()
        .map(|f| (sample.iter().filter(|l| fits(f, l)).count(), f))
        .filter(|(n, _)| *n > 0)
        .fold(None, |best: Option<(usize, LogFormat)>, (n, f)| match best {
            Some((b, _)) if b >= n => best,
            _ => Some((n, f)),
        })
        .map(|(_, f)| f)
}

#[derive(Serialize)]
pub struct AlertRow {
    pub id: String,
    pub rule: String,
    pub rule_id: String,
    pub severity: &'static str,
    pub client: String,
    pub client_kind: String,
    pub partner: Option<String>,
    pub source: String,
    pub first_seen: String,
    pub last_seen: String,
    pub requests: u64,
    pub distinct_resources: u64,
    pub bytes: u64,
    pub sample: Vec<String>,
    pub user_agents: Vec<String>,
    pub status: &'static str,
}

#[derive(Serialize)]
pub struct ClientRow {
    pub client: String,
    pub kind: &'static str,
    pub partner: Option<String>,
    /// Requests to sensitive paths (any status).
    pub requests: u64,
    /// Recordings served 2xx.
    pub successful: u64,
    /// Distinct recordings served 2xx.
    pub distinct_resources: u64,
    /// Body bytes of recordings served 2xx.
    pub bytes: u64,
    pub first_seen: String,
    pub last_seen: String,
}

impl Report {
    pub fn build(
        telemetry: &Telemetry,
        inputs: Vec<InputSummary>,
        alerts: &[Alert],
        clients: Vec<ClientScope>,
        partner_name: impl Fn(u16) -> Option<String>,
    ) -> Report {
        use std::sync::atomic::Ordering::Relaxed;
        let mut rows: Vec<(u8, ClientRow)> = clients
            .into_iter()
            .map(|s| {
                let class = s.class.unwrap_or(crate::classify::client::ClientClass::UNKNOWN);
                let order = match class.kind {
                    ClientKind::Unknown => 0,
                    ClientKind::Partner => 1,
                    ClientKind::Internal => 2,
                };
                let partner = (class.kind == ClientKind::Partner).then(|| partner_name(class.partner)).flatten();
                let row = ClientRow {
                    client: s.client,
                    kind: class.kind.as_str(),
                    partner,
                    requests: s.requests,
                    successful: s.successful,
                    distinct_resources: s.distinct_resources.len() as u64,
                    bytes: s.bytes,
                    first_seen: format_rfc3339(s.first_seen),
                    last_seen: format_rfc3339(s.last_seen),
                };
                (order, row)
            })
            .collect();
        // Unknown clients first, then partners, then internal; within each, most taken first.
        rows.sort_by(|(oa, a), (ob, b)| {
            (oa, std::cmp::Reverse(a.distinct_resources), std::cmp::Reverse(a.requests), &a.client).cmp(&(
                ob,
                std::cmp::Reverse(b.distinct_resources),
                std::cmp::Reverse(b.requests),
                &b.client,
            ))
        });
        Report {
            lines: telemetry.lines_read.load(Relaxed),
            parsed: telemetry.lines_parsed.load(Relaxed),
            skipped: SkipReason::ALL.iter().map(|r| (r.as_str(), telemetry.skipped(*r))).collect(),
            truncated: {
                let all = telemetry.lines_truncated.lock().unwrap_or_else(|e| e.into_inner());
                all.values().map(|c| c.load(Relaxed)).sum()
            },
            sensitive_requests: telemetry.sensitive_requests.load(Relaxed),
            recording_requests: telemetry.recording_requests.load(Relaxed),
            inputs,
            alerts: alerts.iter().map(AlertRow::from).collect(),
            clients: rows.into_iter().map(|(_, r)| r).collect(),
        }
    }

    pub fn render(&self, format: ReportFormat) -> String {
        match format {
            ReportFormat::Json => escape::json_pretty(self).expect("report serialises") + "\n",
            ReportFormat::Csv => self.render_csv(),
            ReportFormat::Markdown => self.render_markdown(),
        }
    }

    fn render_csv(&self) -> String {
        let mut s =
            String::from("client,kind,partner,requests,successful,distinct_resources,bytes,first_seen,last_seen\n");
        for c in &self.clients {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{}",
                escape::csv_cell(&c.client),
                c.kind,
                escape::csv_cell(c.partner.as_deref().unwrap_or("")),
                c.requests,
                c.successful,
                c.distinct_resources,
                c.bytes,
                c.first_seen,
                c.last_seen
            );
        }
        s
    }

    fn render_markdown(&self) -> String {
        let mut s = String::from("# recwatch scope report\n\n");
        let skipped: u64 = self.skipped.values().sum();
        let _ = writeln!(
            s,
            "- Lines read: {} (parsed {}, skipped {})\n- Requests to sensitive paths: {} (recordings: {})",
            self.lines, self.parsed, skipped, self.sensitive_requests, self.recording_requests
        );
        for (reason, n) in self.skipped.iter().filter(|(_, n)| **n > 0) {
            let _ = writeln!(s, "  - skipped, {reason}: {n}");
        }
        if self.truncated > 0 {
            let _ = writeln!(s, "  - over the line-length bound, judged by their head: {}", self.truncated);
        }
        for i in &self.inputs {
            if let Some(e) = &i.error {
                let _ = writeln!(
                    s,
                    "- Input {} stopped early: {}",
                    escape::markdown_code(&i.input),
                    escape::markdown_text(e)
                );
            }
            if let Some(w) = &i.warning {
                let _ = writeln!(
                    s,
                    "- **Warning:** input {}: {}",
                    escape::markdown_code(&i.input),
                    escape::markdown_text(w)
                );
            }
        }
        let outside: Vec<&ClientRow> = self.clients.iter().filter(|c| c.kind != "internal").collect();
        let taken: Vec<&&ClientRow> = outside.iter().filter(|c| c.successful > 0).collect();
        let _ = writeln!(
            s,
            "- Non-internal clients that were served recordings: {} ({} distinct recordings, {} bytes)\n",
            taken.len(),
            taken.iter().fold(0u64, |n, c| n.saturating_add(c.distinct_resources)),
            // Saturating: logged sizes are attacker-influenced (`%b` may be u64::MAX).
            taken.iter().fold(0u64, |n, c| n.saturating_add(c.bytes))
        );
        let _ = writeln!(s, "## Alerts ({})\n", self.alerts.len());
        if !self.alerts.is_empty() {
            s += "| rule | severity | client | first seen | last seen | requests | distinct | bytes | id |\n";
            s += "|---|---|---|---|---|---|---|---|---|\n";
            for a in &self.alerts {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    escape::markdown_text(&a.rule),
                    a.severity,
                    escape::markdown_code_cell(&a.client),
                    a.first_seen,
                    a.last_seen,
                    a.requests,
                    a.distinct_resources,
                    a.bytes,
                    escape::markdown_code_cell(&a.id)
                );
            }
            s.push('\n');
            s += "Files fetched (a sample per alert; personnummer and phone numbers pseudonymised):\n\n";
            for a in self.alerts.iter().filter(|a| !a.sample.is_empty()) {
                let files: Vec<String> = a.sample.iter().map(|p| escape::markdown_code(p)).collect();
                let _ = writeln!(
                    s,
                    "- {} {} {}: {}",
                    escape::markdown_code(&a.id),
                    escape::markdown_text(&a.rule),
                    escape::markdown_code(&a.client),
                    files.join(", ")
                );
            }
            s.push('\n');
        }
        let _ = writeln!(s, "## Non-internal clients ({})\n", outside.len());
        if !outside.is_empty() {
            s += "| client | kind | partner | requests | recordings served | distinct | bytes | first seen | last seen |\n";
            s += "|---|---|---|---|---|---|---|---|---|\n";
            for c in &outside {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    escape::markdown_code_cell(&c.client),
                    c.kind,
                    escape::markdown_text(c.partner.as_deref().unwrap_or("")),
                    c.requests,
                    c.successful,
                    c.distinct_resources,
                    c.bytes,
                    c.first_seen,
                    c.last_seen
                );
            }
            s.push('\n');
        }
        let internal: Vec<&ClientRow> = self.clients.iter().filter(|c| c.kind == "internal").collect();
        let _ = writeln!(
            s,
            "## Internal clients\n\n{} internal clients made {} requests to sensitive paths ({} distinct recordings served).",
            internal.len(),
            internal.iter().map(|c| c.requests).sum::<u64>(),
            internal.iter().map(|c| c.distinct_resources).sum::<u64>()
        );
        s
    }
}

impl From<&Alert> for AlertRow {
    fn from(a: &Alert) -> AlertRow {
        AlertRow {
            id: a.id.clone(),
            rule: a.rule.clone(),
            rule_id: a.rule_id.clone(),
            severity: a.severity.as_str(),
            client: a.client.clone(),
            client_kind: a.client_kind.clone(),
            partner: a.partner.clone(),
            source: a.source.clone(),
            first_seen: format_rfc3339(a.first_seen),
            last_seen: format_rfc3339(a.last_seen),
            requests: a.requests,
            distinct_resources: a.distinct_resources,
            bytes: a.bytes,
            sample: a.sample.clone(),
            user_agents: a.user_agents.clone(),
            status: a.status.as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_likely_format_is_the_one_that_parses_most_lines() {
        let combined = br#"203.0.113.9 - - [18/Feb/2019:10:00:01 +0100] "GET /r/a.wav HTTP/1.1" 200 5 "-" "curl/8""#;
        let vhost = br#"rec.example:443 203.0.113.9 - - [18/Feb/2019:10:00:01 +0100] "GET /r/a.wav HTTP/1.1" 200 5 "-" "curl/8""#;
        let common = br#"203.0.113.9 - - [18/Feb/2019:10:00:01 +0100] "GET /r/a.wav HTTP/1.1" 200 5"#;
        assert_eq!(likely_format(&[combined.to_vec(), combined.to_vec()]), Some(LogFormat::Combined));
        assert_eq!(likely_format(&[vhost.to_vec()]), Some(LogFormat::VhostCombined));
        assert_eq!(likely_format(&[common.to_vec()]), Some(LogFormat::Common));
        assert_eq!(likely_format(&[b"{\"json\": 1}".to_vec()]), None);
        let w = skipped_lines_warning(LogFormat::Combined, 10, 10, &[vhost.to_vec()]).unwrap();
        assert_eq!(
            w,
            "10 of 10 lines were skipped as not combined: they look like vhost_combined (try --format vhost_combined)"
        );
        assert_eq!(skipped_lines_warning(LogFormat::Combined, 10, 5, &[]), None, "half is not more than half");
        let none = skipped_lines_warning(LogFormat::Combined, 4, 3, &[]).unwrap();
        assert!(
            none.ends_with("no known format fits them (formats: combined, main, common, vhost_combined, vhost_common)"),
            "{none}"
        );
    }
}
