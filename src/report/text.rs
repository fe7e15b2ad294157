//! The scope report as CSV (one row per client, then a total row) and as a readable
//! Markdown summary with its Art. 33 section. Owns those two layouts. Never builds numbers:
//! everything comes from [`Report`]; every log-derived text goes through [`crate::escape`].

use std::fmt::Write as _;

use super::{ClientRow, Report};
use crate::escape;

const CSV_HEADER: &str = "client,kind,partner,requests,calls,files,successful,partial_transfers,partial_files,bytes,\
first_seen,last_seen,alerts,user_agents\n";

/// One row per client (the report's order), then `TOTAL` over all clients.
pub fn csv(r: &Report) -> String {
    let mut s = String::from(CSV_HEADER);
    for c in &r.clients {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            escape::csv_cell(&c.client),
            c.kind,
            escape::csv_cell(c.partner.as_deref().unwrap_or("")),
            c.requests,
            c.calls,
            c.files,
            c.successful,
            c.partial_transfers,
            c.partial_files,
            c.bytes,
            c.first_seen,
            c.last_seen,
            escape::csv_cell(&c.alerts.join(" ")),
            escape::csv_cell(&c.user_agents.join(" | ")),
        );
    }
    let t = &r.totals;
    let _ = writeln!(
        s,
        "TOTAL,,,{},{},{},{},{},{},{},{},{},{},",
        r.clients.iter().map(|c| c.requests).sum::<u64>(),
        t.calls,
        t.files,
        r.clients.iter().map(|c| c.successful).sum::<u64>(),
        t.partial_transfers,
        t.partial_files,
        t.bytes,
        t.first_seen.as_deref().unwrap_or(""),
        t.last_seen.as_deref().unwrap_or(""),
        r.alerts.len(),
    );
    s
}

/// The Markdown summary: period and totals, the Art. 33 section, alerts, clients outside the
/// internal networks with their calls, calls taken by more than one client.
pub fn markdown(r: &Report) -> String {
    let mut s = String::from("# recwatch scope report\n\n");
    let skipped: u64 = r.skipped.values().sum();
    let period = |v: &Option<String>| v.clone().unwrap_or_else(|| "open".into());
    let _ = writeln!(
        s,
        "- Period asked for: {} to {} (from the {})",
        period(&r.period.since),
        period(&r.period.until),
        if r.origin == "store" { "evidence ledger" } else { "logs replayed" }
    );
    let _ = writeln!(
        s,
        "- Lines read: {} (parsed {}, skipped {})\n- Requests to sensitive paths: {} (recordings: {})",
        r.lines, r.parsed, skipped, r.sensitive_requests, r.recording_requests
    );
    for (reason, n) in r.skipped.iter().filter(|(_, n)| **n > 0) {
        let _ = writeln!(s, "  - skipped, {reason}: {n}");
    }
    if r.truncated > 0 {
        let _ = writeln!(s, "  - over the line-length bound, judged by their head: {}", r.truncated);
    }
    for i in &r.inputs {
        if let Some(e) = &i.error {
            let _ =
                writeln!(s, "- Input {} stopped early: {}", escape::markdown_code(&i.input), escape::markdown_text(e));
        }
        if let Some(w) = &i.warning {
            let _ =
                writeln!(s, "- **Warning:** input {}: {}", escape::markdown_code(&i.input), escape::markdown_text(w));
        }
    }
    let t = &r.totals;
    let _ = writeln!(
        s,
        "- All clients: {} with requests to sensitive paths, {} took recordings: **{} calls, {} files** taken \
         completely, {} partial transfers ({} files only partially), {} bytes",
        t.clients, t.clients_taking, t.calls, t.files, t.partial_transfers, t.partial_files, t.bytes
    );
    s.push('\n');
    art33(&mut s, r);
    let _ = writeln!(s, "## Alerts ({})\n", r.alerts.len());
    if !r.alerts.is_empty() {
        s += "| rule | severity | client | first seen | last seen | requests | distinct | bytes | id |\n";
        s += "|---|---|---|---|---|---|---|---|---|\n";
        for a in &r.alerts {
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
        for a in r.alerts.iter().filter(|a| !a.sample.is_empty()) {
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
    let outside: Vec<&ClientRow> = r.outside_clients().collect();
    let _ = writeln!(s, "## Non-internal clients ({})\n", outside.len());
    if !outside.is_empty() {
        s += "| client | kind | partner | requests | calls | files | partial transfers | bytes | first seen | last seen | alerts |\n";
        s += "|---|---|---|---|---|---|---|---|---|---|---|\n";
        for c in &outside {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                escape::markdown_code_cell(&c.client),
                c.kind,
                escape::markdown_text(c.partner.as_deref().unwrap_or("")),
                c.requests,
                c.calls,
                c.files,
                c.partial_transfers,
                c.bytes,
                c.first_seen,
                c.last_seen,
                escape::markdown_text(&c.alerts.join(" "))
            );
        }
        s.push('\n');
        for c in outside.iter().filter(|c| !c.call_list.is_empty() || !c.user_agents.is_empty()) {
            let _ = writeln!(s, "### {}\n", escape::markdown_code(&c.client));
            if !c.user_agents.is_empty() {
                let uas: Vec<String> = c.user_agents.iter().map(|u| escape::markdown_code(u)).collect();
                let _ = writeln!(s, "User agents: {}\n", uas.join(", "));
            }
            if !c.call_list.is_empty() {
                s += "| call | files taken | files only partially |\n|---|---|---|\n";
                for call in &c.call_list {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} |",
                        escape::markdown_code_cell(&call.call),
                        call.files,
                        call.partial_files
                    );
                }
                s.push('\n');
            }
        }
    }
    let _ = writeln!(s, "## Calls taken by more than one client ({})\n", r.shared_calls.len());
    for shared in &r.shared_calls {
        let clients: Vec<String> = shared.clients.iter().map(|c| escape::markdown_code(c)).collect();
        let _ = writeln!(s, "- {}: {}", escape::markdown_code(&shared.call), clients.join(", "));
    }
    if !r.shared_calls.is_empty() {
        s.push('\n');
    }
    let internal: Vec<&ClientRow> = r.clients.iter().filter(|c| c.kind == "internal").collect();
    let _ = writeln!(
        s,
        "## Internal clients\n\n{} internal clients made {} requests to sensitive paths ({} calls, {} files taken).",
        internal.len(),
        internal.iter().map(|c| c.requests).sum::<u64>(),
        internal.iter().map(|c| c.calls).sum::<u64>(),
        internal.iter().map(|c| c.files).sum::<u64>()
    );
    s
}

fn art33(s: &mut String, r: &Report) {
    let a = &r.art33;
    let open = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
    *s += "## For an Art. 33 notification\n\n";
    let _ = writeln!(
        s,
        "- Period examined: {} to {}\n- Data subjects affected (approx., distinct calls taken by clients outside \
         the known networks): **{}**\n- Records concerned (distinct recordings they took completely): **{}**; \
         only partially: {}\n- Clients outside the known networks: {}",
        open(&a.period_examined.since),
        open(&a.period_examined.until),
        a.data_subjects_approx,
        a.records,
        a.partial_records,
        if a.clients_outside_known_networks.is_empty() {
            "none".to_string()
        } else {
            a.clients_outside_known_networks.iter().map(|c| escape::markdown_code(c)).collect::<Vec<_>>().join(", ")
        }
    );
    *s += "\nSources and their coverage:\n\n| source | lines | first line | last line | skipped | gaps |\n|---|---|---|---|---|---|\n";
    for i in &r.inputs {
        let skipped: Vec<String> = i.skipped_by_reason.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let gaps: Vec<String> = i.gaps.iter().map(|g| format!("{} – {}", g.from, g.to)).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            escape::markdown_code_cell(&i.input),
            i.lines,
            i.first_line.map(crate::parse::time::format_rfc3339).unwrap_or_default(),
            i.last_line.map(crate::parse::time::format_rfc3339).unwrap_or_default(),
            if skipped.is_empty() { "none".into() } else { skipped.join(", ") },
            if gaps.is_empty() { "none".into() } else { gaps.join("; ") },
        );
    }
    for g in &a.gaps_between_sources {
        let _ = writeln!(s, "\nNo source has lines from {} to {} ({} s).", g.from, g.to, g.secs);
    }
    *s += "\nWhat this report cannot know:\n\n";
    for c in &a.cannot_know {
        // Our own sentences, no log text: written as they are.
        let _ = writeln!(s, "- {c}");
    }
    s.push('\n');
}
