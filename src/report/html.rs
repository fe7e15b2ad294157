//! The scope report as one self-contained HTML page: inline CSS and SVG only — no script, no
//! font, image or style from elsewhere (a Content-Security-Policy says so too), so it works
//! offline and as a mail attachment. Owns the page layout: summary numbers, a timeline of
//! fetches per client with alerts marked, a client table sortable without a script (one
//! pre-sorted copy per column, chosen by radio buttons in CSS), the Art. 33 section, the calls
//! per client behind `<details>`. Never builds numbers ([`Report`] does); every text from a
//! log goes through [`escape::html`].

use std::fmt::Write as _;

use super::{ClientRow, Report};
use crate::escape;
use crate::parse::time::format_rfc3339;

/// Client rows in each sorted copy of the table; the rest are counted in a note.
const MAX_TABLE_ROWS: usize = 500;
/// Clients drawn in the timeline (most calls first); the rest are counted in a note.
const MAX_TIMELINE_CLIENTS: usize = 60;

const CSS: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
main{max-width:1150px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid #d5d9e0;padding-bottom:4px}
.muted{color:#5b6472}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:#fff;border:1px solid #d5d9e0;border-radius:8px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:26px}.card.alert{border-color:#c62828}.card.alert b{color:#c62828}
table{border-collapse:collapse;background:#fff;width:100%;margin:6px 0}
th,td{border:1px solid #d5d9e0;padding:4px 8px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#eef0f4}th label{cursor:pointer;text-decoration:underline dotted}
code{font:12px ui-monospace,monospace;word-break:break-all}
td:first-child code{word-break:normal;white-space:nowrap}
.sort-choice{position:absolute;left:-9999px}
.sorted{display:none}
details{background:#fff;border:1px solid #d5d9e0;border-radius:6px;margin:6px 0;padding:4px 10px}
summary{cursor:pointer}
svg{background:#fff;border:1px solid #d5d9e0;border-radius:6px}
.kind-unknown{color:#c62828}.kind-partner{color:#8a5a00}.kind-internal{color:#2e7d32}
";

/// The whole page.
pub fn page(r: &Report) -> String {
    let mut s = String::with_capacity(16 * 1024);
    s += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
    s += "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n";
    s += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
    s += "<title>recwatch scope report</title>\n<style>";
    s += CSS;
    s += "</style>\n</head>\n<body>\n<main>\n<h1>recwatch scope report</h1>\n";
    let open = |v: &Option<String>, none: &str| v.clone().unwrap_or_else(|| none.to_string());
    let _ = writeln!(
        s,
        "<p class=\"muted\">From the {}; period asked for: {} to {}; examined: {} to {}.</p>",
        if r.origin == "store" { "evidence ledger" } else { "logs replayed" },
        escape::html(&open(&r.period.since, "open")),
        escape::html(&open(&r.period.until, "open")),
        escape::html(&open(&r.art33.period_examined.since, "unknown")),
        escape::html(&open(&r.art33.period_examined.until, "unknown")),
    );
    summary(&mut s, r);
    timeline(&mut s, r);
    clients(&mut s, r);
    art33(&mut s, r);
    calls(&mut s, r);
    alerts(&mut s, r);
    s += "</main>\n</body>\n</html>\n";
    s
}

fn summary(s: &mut String, r: &Report) {
    let t = &r.totals;
    let a = &r.art33;
    *s += "<section id=\"summary\" class=\"cards\">\n";
    let cards: [(&str, &str, u64, bool); 8] = [
        ("data-subjects", "data subjects (approx.)", a.data_subjects_approx, a.data_subjects_approx > 0),
        ("records", "records taken by unknown clients", a.records, a.records > 0),
        ("calls", "calls taken (all clients)", t.calls, false),
        ("files", "files taken (all clients)", t.files, false),
        ("partial-transfers", "partial transfers", t.partial_transfers, false),
        ("clients-outside", "clients outside known networks", a.clients_outside_known_networks.len() as u64, false),
        ("clients-taking", "clients that took recordings", t.clients_taking, false),
        ("alerts", "alerts", r.alerts.len() as u64, !r.alerts.is_empty()),
    ];
    for (id, label, n, alarm) in cards {
        let _ = writeln!(
            s,
            "<div class=\"card{}\"><b id=\"total-{id}\" data-total=\"{id}\">{n}</b>{label}</div>",
            if alarm { " alert" } else { "" }
        );
    }
    let _ = writeln!(
        s,
        "<div class=\"card\"><b data-total=\"bytes\">{}</b>bytes of recordings served</div>\n</section>",
        t.bytes
    );
}

/// Fetches per client over time: one row (`<g class="tl-client">`) per client that fetched
/// recordings, a bar per hour with transfers (height by count), a triangle per alert.
fn timeline(s: &mut String, r: &Report) {
    *s += "<h2 id=\"timeline\">Timeline of fetches</h2>\n";
    let fetching: Vec<&ClientRow> = r.clients.iter().filter(|c| !c.fetch_hours.is_empty()).collect();
    if fetching.is_empty() {
        *s += "<p>No recording was fetched in the period.</p>\n";
        return;
    }
    let shown = &fetching[..fetching.len().min(MAX_TIMELINE_CLIENTS)];
    let start = shown.iter().filter_map(|c| c.fetch_hours.first().map(|h| h.0)).min().unwrap_or(0);
    let end = shown.iter().filter_map(|c| c.fetch_hours.last().map(|h| h.0 + 3_600)).max().unwrap_or(start + 3_600);
    let span = (end - start).max(3_600) as f64;
    let (left, width, row_h, top) = (190.0, 900.0, 26.0, 24.0);
    let height = top + row_h * shown.len() as f64 + 22.0;
    let most = shown.iter().flat_map(|c| c.fetch_hours.iter().map(|h| h.1)).max().unwrap_or(1).max(1) as f64;
    let x = |t: i64| left + (t - start) as f64 / span * width;
    let _ = writeln!(
        s,
        "<svg id=\"timeline-svg\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {:.0} {height:.0}\" role=\"img\" aria-label=\"fetches per client over time\">",
        left + width + 20.0,
        left + width + 20.0
    );
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"14\" font-size=\"11\" fill=\"#5b6472\">{}</text>\
         <text x=\"{:.0}\" y=\"14\" font-size=\"11\" fill=\"#5b6472\" text-anchor=\"end\">{}</text>",
        format_rfc3339(start),
        left + width,
        format_rfc3339(end)
    );
    for (i, c) in shown.iter().enumerate() {
        let y = top + row_h * i as f64;
        let colour = match c.kind {
            "unknown" => "#c62828",
            "partner" => "#8a5a00",
            _ => "#2e7d32",
        };
        let _ = write!(
            s,
            "<g class=\"tl-client\" data-client=\"{}\"><title>{} ({}): {} calls, {} files</title>\
             <text x=\"4\" y=\"{:.0}\" font-size=\"11\" font-family=\"monospace\">{}</text>\
             <line x1=\"{left}\" x2=\"{:.0}\" y1=\"{:.0}\" y2=\"{:.0}\" stroke=\"#d5d9e0\"/>",
            escape::html(&c.client),
            escape::html(&c.client),
            c.kind,
            c.calls,
            c.files,
            y + 16.0,
            escape::html(&shorten(&c.client, 26)),
            left + width,
            y + 20.0,
            y + 20.0
        );
        for (hour, n) in &c.fetch_hours {
            let h = 2.0 + 16.0 * (*n as f64 / most);
            let _ = write!(
                s,
                "<rect class=\"tl-fetch\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{colour}\"/>",
                x(*hour),
                y + 20.0 - h,
                (width * 3_600.0 / span).max(2.0)
            );
        }
        for (t, rule, severity) in &c.alert_marks {
            let ax = x(*t).clamp(left, left + width);
            let _ = write!(
                s,
                "<path class=\"tl-alert\" d=\"M{ax:.1} {:.1} l-5 -8 h10 z\" fill=\"{}\" stroke=\"#000\" \
                 stroke-width=\"0.5\"><title>{} ({severity}) at {}</title></path>",
                y + 10.0,
                if *severity == "critical" { "#ffb300" } else { "#90caf9" },
                escape::html(rule),
                format_rfc3339(*t)
            );
        }
        *s += "</g>\n";
    }
    *s += "</svg>\n";
    if fetching.len() > shown.len() {
        let _ = writeln!(
            s,
            "<p class=\"muted\">{} more clients fetched recordings (see the table).</p>",
            fetching.len() - shown.len()
        );
    }
    *s += "<p class=\"muted\">Bars: transfers of recordings per hour (height by count); triangles: alerts \
           (yellow critical, blue warning).</p>\n";
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    s.chars().take(n - 1).collect::<String>() + "…"
}

/// The sort keys of the client table: (id, header, numeric).
const COLUMNS: [(&str, &str, bool); 9] = [
    ("client", "client", false),
    ("kind", "kind", false),
    ("calls", "calls", true),
    ("files", "files", true),
    ("partial", "partial transfers", true),
    ("bytes", "bytes", true),
    ("first", "first seen", false),
    ("last", "last seen", false),
    ("alerts", "alerts", true),
];

/// The client table, once per sort column; radio buttons (the column headers are their
/// labels) show one copy. The default copy is the report's own order.
fn clients(s: &mut String, r: &Report) {
    let _ = writeln!(s, "<h2 id=\"clients\">Clients ({})</h2>", r.clients.len());
    if r.clients.is_empty() {
        *s += "<p>No client requested a sensitive path in the period.</p>\n";
        return;
    }
    *s += "<p class=\"muted\">Click a column header to sort (descending for numbers).</p>\n<style>";
    for (id, _, _) in std::iter::once(&("report", "", false)).chain(COLUMNS.iter()) {
        let _ = write!(s, "#sort-{id}:checked~#by-{id}{{display:block}}");
    }
    *s += "</style>\n<input class=\"sort-choice\" type=\"radio\" name=\"sort\" id=\"sort-report\" checked>\n";
    for (id, _, _) in COLUMNS {
        let _ = writeln!(s, "<input class=\"sort-choice\" type=\"radio\" name=\"sort\" id=\"sort-{id}\">");
    }
    let mut order: Vec<&ClientRow> = r.clients.iter().collect();
    client_table(s, "report", &order);
    for (id, _, numeric) in COLUMNS {
        order.sort_by(|a, b| {
            let ord = match id {
                "client" => a.client.cmp(&b.client),
                "kind" => a.kind.cmp(b.kind),
                "calls" => a.calls.cmp(&b.calls),
                "files" => a.files.cmp(&b.files),
                "partial" => a.partial_transfers.cmp(&b.partial_transfers),
                "bytes" => a.bytes.cmp(&b.bytes),
                "first" => a.first_seen.cmp(&b.first_seen),
                "last" => a.last_seen.cmp(&b.last_seen),
                _ => a.alerts.len().cmp(&b.alerts.len()),
            };
            (if numeric { ord.reverse() } else { ord }).then_with(|| a.client.cmp(&b.client))
        });
        client_table(s, id, &order);
    }
    if r.clients.len() > MAX_TABLE_ROWS {
        let _ = writeln!(
            s,
            "<p class=\"muted\">Each order shows its first {MAX_TABLE_ROWS} of {} clients; the JSON or CSV report \
             has all.</p>",
            r.clients.len()
        );
    }
}

fn client_table(s: &mut String, id: &str, rows: &[&ClientRow]) {
    let _ = write!(s, "<div class=\"sorted\" id=\"by-{id}\"><table class=\"clients\" data-sort=\"{id}\"><thead><tr>");
    for (col, header, numeric) in COLUMNS {
        let _ = write!(
            s,
            "<th{}><label for=\"sort-{col}\">{header}</label></th>",
            if numeric { " class=\"n\"" } else { "" }
        );
    }
    *s += "<th>partner</th><th>user agents</th></tr></thead><tbody>\n";
    for c in rows.iter().take(MAX_TABLE_ROWS) {
        let uas: Vec<String> = c.user_agents.iter().map(|u| format!("<code>{}</code>", escape::html(u))).collect();
        let _ = writeln!(
            s,
            "<tr data-client=\"{}\"><td><code>{}</code></td><td class=\"kind-{}\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td>\
             <td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            escape::html(&c.client),
            escape::html(&c.client),
            c.kind,
            c.kind,
            c.calls,
            c.files,
            c.partial_transfers,
            c.bytes,
            c.first_seen,
            c.last_seen,
            if c.alerts.is_empty() { String::new() } else { escape::html(&c.alerts.join(" ")) },
            escape::html(c.partner.as_deref().unwrap_or("")),
            uas.join("<br>")
        );
    }
    *s += "</tbody></table></div>\n";
}

fn art33(s: &mut String, r: &Report) {
    let a = &r.art33;
    let open = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
    *s += "<h2 id=\"art33\">For an Art. 33 notification</h2>\n<table class=\"art33\">\n";
    let outside: Vec<String> =
        a.clients_outside_known_networks.iter().map(|c| format!("<code>{}</code>", escape::html(c))).collect();
    let rows: [(&str, String); 5] = [
        (
            "Period examined",
            format!(
                "{} to {}",
                escape::html(&open(&a.period_examined.since)),
                escape::html(&open(&a.period_examined.until))
            ),
        ),
        (
            "Data subjects affected (approx.: distinct calls taken by clients outside the known networks)",
            format!("<b data-art33=\"data-subjects\">{}</b>", a.data_subjects_approx),
        ),
        (
            "Records concerned (distinct recordings they took completely)",
            format!("<b data-art33=\"records\">{}</b>", a.records),
        ),
        ("Recordings they got only partially", a.partial_records.to_string()),
        ("Clients outside the known networks", if outside.is_empty() { "none".into() } else { outside.join(", ") }),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    *s += "</table>\n<h3>Sources and their coverage</h3>\n<table class=\"sources\"><thead><tr><th>source</th>\
           <th class=\"n\">lines</th><th>first line</th><th>last line</th><th>skipped</th><th>gaps (silent &gt; 1 h)</th>\
           <th>error</th></tr></thead><tbody>\n";
    for i in &r.inputs {
        let skipped: Vec<String> = i.skipped_by_reason.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let gaps: Vec<String> = i.gaps.iter().map(|g| format!("{} – {}", g.from, g.to)).collect();
        let _ = writeln!(
            s,
            "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape::html(&i.input),
            i.lines,
            i.first_line.map(format_rfc3339).unwrap_or_default(),
            i.last_line.map(format_rfc3339).unwrap_or_default(),
            if skipped.is_empty() { "none".into() } else { skipped.join(", ") },
            if gaps.is_empty() { "none".into() } else { gaps.join("<br>") },
            escape::html(i.error.as_deref().unwrap_or("")),
        );
    }
    *s += "</tbody></table>\n";
    for g in &a.gaps_between_sources {
        let _ = writeln!(s, "<p>No source has lines from {} to {} ({} s).</p>", g.from, g.to, g.secs);
    }
    *s += "<h3>What this report cannot know</h3>\n<ul>\n";
    for c in &a.cannot_know {
        let _ = writeln!(s, "<li>{}</li>", escape::html(c));
    }
    *s += "</ul>\n";
}

/// The calls per client behind `<details>`, and the calls taken by more than one client.
fn calls(s: &mut String, r: &Report) {
    *s += "<h2 id=\"calls\">Calls per client</h2>\n";
    let with_calls: Vec<&ClientRow> = r.clients.iter().filter(|c| !c.call_list.is_empty()).collect();
    if with_calls.is_empty() {
        *s += "<p>No call was taken in the period.</p>\n";
    }
    for c in with_calls {
        let _ = writeln!(
            s,
            "<details class=\"client-calls\" data-client=\"{}\"><summary><code>{}</code> ({}): {} calls, {} files \
             taken</summary>\n<table><thead><tr><th>call</th><th class=\"n\">files taken</th>\
             <th class=\"n\">files only partially</th></tr></thead><tbody>",
            escape::html(&c.client),
            escape::html(&c.client),
            c.kind,
            c.calls,
            c.files
        );
        for call in &c.call_list {
            let _ = writeln!(
                s,
                "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                escape::html(&call.call),
                call.files,
                call.partial_files
            );
        }
        *s += "</tbody></table></details>\n";
    }
    let _ = writeln!(s, "<h2 id=\"shared\">Calls taken by more than one client ({})</h2>", r.shared_calls.len());
    if !r.shared_calls.is_empty() {
        *s += "<table class=\"shared\"><thead><tr><th>call</th><th>clients</th></tr></thead><tbody>\n";
        for shared in &r.shared_calls {
            let clients: Vec<String> =
                shared.clients.iter().map(|c| format!("<code>{}</code>", escape::html(c))).collect();
            let _ = writeln!(
                s,
                "<tr><td><code>{}</code></td><td>{}</td></tr>",
                escape::html(&shared.call),
                clients.join(", ")
            );
        }
        *s += "</tbody></table>\n";
    }
}

fn alerts(s: &mut String, r: &Report) {
    let _ = writeln!(s, "<h2 id=\"alerts\">Alerts ({})</h2>", r.alerts.len());
    if r.alerts.is_empty() {
        return;
    }
    *s += "<table class=\"alerts\"><thead><tr><th>rule</th><th>severity</th><th>client</th><th>first seen</th>\
           <th>last seen</th><th class=\"n\">requests</th><th class=\"n\">distinct</th><th class=\"n\">bytes</th>\
           <th>status</th><th>sample</th></tr></thead><tbody>\n";
    for a in &r.alerts {
        let sample: Vec<String> = a.sample.iter().map(|p| format!("<code>{}</code>", escape::html(p))).collect();
        let _ = writeln!(
            s,
            "<tr><td>{} {}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            escape::html(&a.rule_id),
            escape::html(&a.rule),
            a.severity,
            escape::html(&a.client),
            a.first_seen,
            a.last_seen,
            a.requests,
            a.distinct_resources,
            a.bytes,
            a.status,
            sample.join(" ")
        );
    }
    *s += "</tbody></table>\n";
}
