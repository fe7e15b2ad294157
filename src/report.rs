//! The scope report of a replay: what a breach notification needs — which clients fetched
//! which recordings, how many distinct, how many bytes, when — as JSON, CSV or Markdown.
//! Owns the report shape and its renderings. Never reads logs or the store itself. Paths and
//! user agents in it come from alerts, where personnummer and phone numbers were already
//! replaced by pseudonyms ([`crate::privacy`]); nothing else in it comes from log content but
//! client addresses.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use crate::classify::client::ClientKind;
use crate::detect::alert::Alert;
use crate::detect::worker::ClientScope;
use crate::parse::time::format_rfc3339;
use crate::parse::SkipReason;
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
        clients: Vec<(IpAddr, ClientScope)>,
        partner_name: impl Fn(u16) -> Option<String>,
    ) -> Report {
        use std::sync::atomic::Ordering::Relaxed;
        let mut rows: Vec<(u8, ClientRow)> = clients
            .into_iter()
            .map(|(ip, s)| {
                let class = s.class.unwrap_or(crate::classify::client::ClientClass::UNKNOWN);
                let order = match class.kind {
                    ClientKind::Unknown => 0,
                    ClientKind::Partner => 1,
                    ClientKind::Internal => 2,
                };
                let partner = (class.kind == ClientKind::Partner).then(|| partner_name(class.partner)).flatten();
                let row = ClientRow {
                    client: ip.to_string(),
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
            ReportFormat::Json => serde_json::to_string_pretty(self).expect("report serialises") + "\n",
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
                csv_field(&c.client),
                c.kind,
                csv_field(c.partner.as_deref().unwrap_or("")),
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
                let _ = writeln!(s, "- Input {} stopped early: {}", md_cell(&i.input), md_cell(e));
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
                    "| {} | {} | {} | {} | {} | {} | {} | {} | `{}` |",
                    a.rule,
                    a.severity,
                    md_cell(&a.client),
                    a.first_seen,
                    a.last_seen,
                    a.requests,
                    a.distinct_resources,
                    a.bytes,
                    a.id
                );
            }
            s.push('\n');
            s += "Files fetched (a sample per alert; personnummer and phone numbers pseudonymised):\n\n";
            for a in self.alerts.iter().filter(|a| !a.sample.is_empty()) {
                let files: Vec<String> = a.sample.iter().map(|p| format!("`{}`", md_cell(p))).collect();
                let _ = writeln!(s, "- `{}` {} {}: {}", a.id, a.rule, md_cell(&a.client), files.join(", "));
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
                    md_cell(&c.client),
                    c.kind,
                    md_cell(c.partner.as_deref().unwrap_or("")),
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

/// Quotes a CSV field when needed, and defuses spreadsheet formulas (a log field is
/// attacker-controlled text).
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Escapes text for a Markdown table cell: pipes, backticks and control characters.
fn md_cell(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '|' => "\\|".to_string(),
            '`' => "\\`".to_string(),
            c if c.is_control() => format!("\\u{{{:x}}}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_markdown_escape_attacker_text() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(md_cell("a|b`c\u{1b}[31m"), "a\\|b\\`c\\u{1b}[31m");
    }
}
