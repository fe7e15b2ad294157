//! Deterministic synthetic web-server access logs ("combined" format) for tests, examples and
//! benchmarks (dev-only: included with `#[path]`, never part of the recwatch library).
//! Owns the traffic model (clients, pages/static/API/bots/scanners, recording fetches, burst
//! sessions, near-misses, optional evasion variants) and its own seeded PRNG: the same options
//! always give byte-identical output. It never reads files, the clock or the network; it only writes.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::{self, Write};

/// Names of the session kinds, in the order used by [`SynthStats::sessions`].
pub const SESSION_KINDS: [&str; 5] = ["scrape", "slow", "replay", "archive", "binge"];

/// Names of the evasion variants, in the order used by [`SynthStats::evasions`].
pub const EVASION_KINDS: [&str; 9] = [
    "pct_dot",       // `%2e` for a dot: `call-1-part1%2ewav`, `/recordings/%2e/2019/...`
    "pct_slash",     // `%2F` for a slash: `/recordings%2F2019/...`
    "double_slash",  // `//recordings/...`, `/recordings//2019/...`
    "dot_segment",   // `/./recordings/...`, `/recordings/2019/./02/...`
    "dot_dot",       // `/static/../recordings/...`, `/recordings/2019/../2019/...`
    "upper_case",    // `/Recordings/.../call-1-part1.WAV`
    "path_param",    // `/recordings/;jsessionid=0123.../../2019/...`: a name `..` pops (nginx, Apache)
    "absolute_form", // `GET http://nas.example/recordings/... HTTP/1.1`
    "mapped_v4",     // client written as `::ffff:a.b.c.d`
];

/// What to generate. Everything is derived from `seed`.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthOptions {
    /// Exact number of lines to write.
    pub lines: u64,
    pub seed: u64,
    /// Approximate fraction of lines that request recording files, in `[0, 0.9]`.
    pub rec_frac: f64,
    /// Unix time the simulated traffic starts at (the first line is at or just after it).
    pub start_unix: i64,
    /// Offset of the written local time from UTC, in minutes (`60` = `+0100`).
    pub tz_minutes: i32,
    /// Peak requests per simulated second (reached at 15:00 local; 20 % of it at 03:00).
    pub peak_rate: f64,
    /// Rewrite some recording fetches into encodings a naive matcher misses (see
    /// [`EVASION_KINDS`]). Uses its own random stream: timestamps, clients, statuses
    /// and all other lines stay exactly as with `evasions: false`.
    pub evasions: bool,
    /// Append ` seq/<n>` (n = 1-based line number) to every user agent.
    pub seq_ids: bool,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            lines: 1_000_000,
            seed: 42,
            rec_frac: 0.05,
            start_unix: 1_550_448_000, // 2019-02-18T00:00:00Z
            tz_minutes: 60,
            peak_rate: 50.0,
            evasions: false,
            seq_ids: false,
        }
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthStats {
    pub lines: u64,
    /// Lines that fetch a recording (single fetches, HEAD probes and session lines,
    /// evaded ones included; near-misses excluded).
    pub recording_requests: u64,
    /// Sessions started, by kind (order of [`SESSION_KINDS`]).
    pub sessions: [(&'static str, u64); 5],
    /// Recording lines rewritten, by evasion kind (order of [`EVASION_KINDS`]); all zero
    /// unless `evasions` is on.
    pub evasions: [(&'static str, u64); 9],
    /// Whole second (Unix time) of the first and last line; `start_unix` when no lines.
    pub first_unix: i64,
    pub last_unix: i64,
}

impl SynthStats {
    pub fn sessions_total(&self) -> u64 {
        self.sessions.iter().map(|s| s.1).sum()
    }
    pub fn evasions_total(&self) -> u64 {
        self.evasions.iter().map(|s| s.1).sum()
    }
}

// ---------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const BROWSER_UAS: [&str; 8] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/72.0.3626.109 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:65.0) Gecko/20100101 Firefox/65.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_3) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.0.3 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/71.0.3578.98 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.17763",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 12_1_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.0 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 9; SM-G960F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/72.0.3626.105 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 6.1; Win64; x64; Trident/7.0; rv:11.0) like Gecko",
];
const BOT_UAS: [&str; 4] = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/6.1; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
];
const TOOL_UAS: [&str; 7] = [
    "curl/7.64.0",
    "curl/7.52.1",
    "Wget/1.20.1 (linux-gnu)",
    "Wget/1.18 (linux-gnu)",
    "python-requests/2.21.0",
    "python-requests/2.18.4",
    "Go-http-client/1.1",
];
const SCANNER_UAS: [&str; 4] = [
    "Mozilla/5.0 zgrab/0.x",
    "masscan/1.0 (https://github.com/robertdavidgraham/masscan)",
    "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
    "-",
];
/// Basic-auth users; a few contain digits or dots, which some stock parsers reject.
const USERS: [&str; 22] = [
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "mallory",
    "oscar",
    "peggy",
    "trent",
    "victor",
    "walter",
    "j.smith",
    "m.mueller",
    "ops",
    "supervisor",
    "agent07",
    "agent12",
];
const PARTNER_USERS: [&str; 3] = ["partner-acme", "partner_globex", "qa.vendor"];
const STATIC: [&str; 14] = [
    "/static/css/main.3f2a1b9c.css",
    "/static/css/print.77e01a2d.css",
    "/static/js/app.9c8d7e6f.js",
    "/static/js/vendor.1a2b3c4d.js",
    "/static/js/player.5e6f7a8b.js",
    "/images/logo.png",
    "/images/hero.jpg",
    "/images/avatar-default.png",
    "/images/icons/play.svg",
    "/images/icons/pause.svg",
    "/images/icons/download.svg",
    "/fonts/roboto-regular.woff2",
    "/fonts/roboto-bold.woff2",
    "/favicon.ico",
];
const PAGES: [&str; 13] = [
    "/",
    "/index.html",
    "/login",
    "/dashboard",
    "/calls",
    "/settings",
    "/about.html",
    "/contact.html",
    "/docs/getting-started.html",
    "/docs/api.html",
    "/docs/faq.html",
    "/pricing.html",
    "/blog/2019/02/new-release",
];
const PROBES: [&str; 13] = [
    "/wp-login.php",
    "/.env",
    "/.git/config",
    "/phpmyadmin/index.php",
    "/admin/config.php",
    "/cgi-bin/luci",
    "/boaform/admin/formLogin",
    "/HNAP1/",
    "/xmlrpc.php",
    "/solr/admin/info/system?wt=json",
    "/recordings/",
    "/vtigercrm/graph.php",
    "/a2billing/admin/Public/index.php",
];
/// Audio that is NOT under /recordings/ (must not match).
const OTHER_AUDIO: [&str; 3] =
    ["/static/audio/hold-music.mp3", "/static/audio/beep.wav", "/media/ringtones/default.ogg"];
/// Recording extensions with their body-size range; picked 11:6:2:1.
const EXTS: [(&str, u64, u64); 4] =
    [("wav", 200_000, 8_000_000), ("mp3", 50_000, 2_000_000), ("gsm", 20_000, 800_000), ("ogg", 40_000, 1_500_000)];
const INTERNAL_REFERERS: [&str; 4] = [
    "https://pbx.example.com/calls",
    "https://pbx.example.com/dashboard",
    "https://pbx.example.com/calls?page=2",
    "https://pbx.example.com/",
];
const EXTERNAL_REFERERS: [&str; 7] = [
    "-",
    "-",
    "-",
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://duckduckgo.com/",
    "https://pbx.example.com/",
];
/// Public-looking first octets (none private, loopback or multicast).
const PUBLIC_A: [u8; 40] = [
    5, 23, 31, 37, 45, 46, 52, 62, 66, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 91, 93, 94, 95, 104, 109,
    141, 151, 176, 178, 185, 188, 193, 194, 195, 212, 213, 217,
];
const PUBLIC_V6_PREFIXES: [&str; 9] =
    ["2a01:4f8", "2a02:8108", "2001:41d0", "2600:1f18", "2a03:2880", "2003:e2", "2a00:1450", "2604:a880", "2c0f:f7f8"];
const DOT_DOT_PREFIXES: [&str; 3] = ["/static/..", "/images/..", "/docs/.."];

/// Share of recording lines that come from sessions, and their assumed mean length.
const SESSION_SHARE: f64 = 0.12;
const MEAN_SESSION_LINES: f64 = 45.0;
/// With `evasions` on: chance that a recording line is rewritten, normally (any kind)
/// and in an "evasive" scrape/replay session (half of them; one kind per session).
const EV_P_BASE: f64 = 0.10;
const EV_P_SESSION: f64 = 0.8;
const MAPPED_V4: usize = 8;
const OUT_CHUNK: usize = 1 << 16;

// ---------------------------------------------------------------------------
// PRNG: xoshiro256** seeded through SplitMix64
// ---------------------------------------------------------------------------

struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng { s: [next(), next(), next(), next()] }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` (multiply-high; the bias is negligible for small `n`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.index(xs.len())]
    }

    /// Exponential variate with the given rate (mean `1/rate`).
    fn exp(&mut self, rate: f64) -> f64 {
        -(1.0 - self.f64()).ln() / rate
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Client {
    ip: String,
    ua: &'static str,
    user: &'static str,
    /// The address is IPv4 text (so it can also be written IPv4-mapped).
    v4: bool,
}

impl Client {
    fn new(ip: String, ua: &'static str, user: &'static str) -> Client {
        let v4 = !ip.contains(':');
        Client { ip, ua, user, v4 }
    }
}

fn v4_public(rng: &mut Rng) -> String {
    format!("{}.{}.{}.{}", rng.pick(&PUBLIC_A), rng.below(256), rng.below(256), rng.range(1, 255))
}

fn v6_public(rng: &mut Rng) -> String {
    let n = rng.pick(&[2usize, 4, 6]);
    let mut s = String::from(rng.pick(&PUBLIC_V6_PREFIXES));
    for _ in 0..n {
        s.push_str(&format!(":{:x}", rng.below(0x10000)));
    }
    if n < 6 {
        // prefix (2 groups) + n + "::" + 1 < 8 groups
        s.push_str(&format!("::{:x}", rng.range(1, 0xffff)));
    }
    s
}

/// 10.0.0.0/8 or 192.168.0.0/16.
fn v4_internal(rng: &mut Rng) -> String {
    if rng.f64() < 0.5 {
        format!("10.{}.{}.{}", rng.below(256), rng.below(256), rng.range(1, 255))
    } else {
        format!("192.168.{}.{}", rng.below(256), rng.range(1, 255))
    }
}

/// External addresses that naive prefix tests get wrong: 100.10.x, 110.x, 192.169.x,
/// 172.16-31.x (private, but not in the allow-list) and `A.10.0.x`.
fn v4_near_miss(rng: &mut Rng) -> String {
    match rng.below(5) {
        0 => format!("100.10.{}.{}", rng.below(256), rng.range(1, 255)),
        1 => format!("110.{}.{}.{}", rng.below(256), rng.below(256), rng.range(1, 255)),
        2 => format!("192.169.{}.{}", rng.below(256), rng.range(1, 255)),
        3 => format!("172.{}.{}.{}", rng.range(16, 32), rng.below(256), rng.range(1, 255)),
        _ => format!("{}.10.0.{}", rng.pick(&PUBLIC_A), rng.range(1, 255)),
    }
}

struct Pools {
    staff: Vec<Client>,
    /// 0: monitoring, 1: cron jobs (API only); 2: CRM sync (also fetches recordings).
    services: [Client; 3],
    visitors: Vec<Client>,
    bots: Vec<Client>,
    scanners: Vec<Client>,
    partners: [Client; 3],
}

impl Pools {
    fn build(rng: &mut Rng) -> Pools {
        let staff = (0..180)
            .map(|_| {
                let ip = v4_internal(rng);
                let ua = rng.pick(&BROWSER_UAS);
                let user = if rng.f64() < 0.6 { rng.pick(&USERS) } else { "-" };
                Client::new(ip, ua, user)
            })
            .collect();
        let services = [
            Client::new("10.0.0.5".into(), "Go-http-client/1.1", "-"),
            Client::new("10.0.0.6".into(), "curl/7.64.0", "ops"),
            Client::new("192.168.1.10".into(), "python-requests/2.21.0", "-"),
        ];
        let mut visitors = Vec::with_capacity(5050);
        for i in 0..5050 {
            let ip = match i {
                0..=3999 => v4_public(rng),
                4000..=4899 => v6_public(rng),
                _ => v4_near_miss(rng),
            };
            visitors.push(Client::new(ip, rng.pick(&BROWSER_UAS), "-"));
        }
        let mut bots = Vec::with_capacity(24);
        for _ in 0..8 {
            let ip = format!("66.249.66.{}", rng.range(1, 255));
            bots.push(Client::new(ip, BOT_UAS[0], "-"));
        }
        for _ in 0..6 {
            let ip = format!("157.55.39.{}", rng.range(1, 255));
            bots.push(Client::new(ip, BOT_UAS[1], "-"));
        }
        for _ in 0..10 {
            let ip = v4_public(rng);
            bots.push(Client::new(ip, rng.pick(&BOT_UAS[2..]), "-"));
        }
        let scanners = (0..300)
            .map(|_| {
                let ip = if rng.f64() < 0.85 { v4_public(rng) } else { v6_public(rng) };
                Client::new(ip, rng.pick(&SCANNER_UAS), "-")
            })
            .collect();
        let partners = [
            Client::new(v4_public(rng), "curl/7.52.1", PARTNER_USERS[0]),
            Client::new(v4_public(rng), "python-requests/2.18.4", PARTNER_USERS[1]),
            Client::new(v6_public(rng), "Wget/1.20.1 (linux-gnu)", PARTNER_USERS[2]),
        ];
        Pools { staff, services, visitors, bots, scanners, partners }
    }
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Scrape = 0,
    Slow = 1,
    Replay = 2,
    Archive = 3,
    Binge = 4,
}

/// Who is asking, for the status/size of a recording fetch.
#[derive(Clone, Copy)]
enum Who {
    Staff,
    Partner,
    Scrape,
    Visitor,
    Bulk,
}

/// A client emitting recording fetches on its own clock.
struct Session {
    kind: Kind,
    client: Client,
    left: u32,
    /// Mean seconds between requests.
    gap: f64,
    next_id: u64,
    part: u64,
    /// Days back from "today" of the recordings it fetches.
    day: u64,
    ext: usize,
    /// Replay: the (call id, part) files it cycles through.
    files: Vec<(u64, u64)>,
    idx: usize,
    /// With `evasions` on, an "evasive" session: most of its lines are rewritten, all
    /// with this one evasion kind.
    style: Option<usize>,
}

/// A session waiting in the min-heap for its next request.
struct Pending {
    t: f64,
    seq: u64,
    s: Session,
}

impl Ord for Pending {
    fn cmp(&self, o: &Self) -> Ordering {
        // reversed: BinaryHeap is a max-heap, we want the earliest first
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Pending {}

// ---------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------

/// Everything of a line except client, target (in `Gen::target`) and timestamp.
struct Meta {
    method: &'static str,
    proto: &'static str,
    status: u16,
    bytes: u64,
    referer: &'static str,
    rec: bool,
    mapped: bool,
}

fn meta(method: &'static str, proto: &'static str, status: u16, bytes: u64, referer: &'static str) -> Meta {
    Meta { method, proto, status, bytes, referer, rec: false, mapped: false }
}

struct Gen {
    rng: Rng,
    /// Separate stream for evasion decisions, so `evasions` changes nothing else.
    ev: Rng,
    evasions: bool,
    seq_ids: bool,
    tz_sec: i64,
    tz_text: String,
    /// Cached `DD/Mon/YYYY:HH:MM:SS +ZZZZ` of `ts_sec`.
    ts_sec: i64,
    ts: Vec<u8>,
    /// `/recordings/YYYY/MM/DD/` for local day `dir_day` minus 0..14 days.
    dir_day: i64,
    dirs: Vec<Vec<u8>>,
    target: Vec<u8>,
    tmp: Vec<u8>,
    out: Vec<u8>,
    line_no: u64,
    first_sec: Option<i64>,
    sessions: [u64; 5],
    ev_counts: [u64; 9],
    heap_seq: u64,
    deck: Vec<Kind>,
    deck_pos: usize,
}

fn shuffle<T>(rng: &mut Rng, xs: &mut [T]) {
    for i in (1..xs.len()).rev() {
        xs.swap(i, rng.index(i + 1));
    }
}

fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Days since 1970-01-01 -> (year, month 1-12, day 1-31), proleptic Gregorian.
impl Gen {
    fn new(opts: &SynthOptions) -> Gen {
        let tz = opts.tz_minutes;
        let sign = if tz >= 0 { '+' } else { '-' };
        let a = tz.unsigned_abs();
        Gen {
            rng: Rng::new(opts.seed),
            ev: Rng::new(opts.seed ^ 0x6576_6173_696F_6E73), // "evasions"
            evasions: opts.evasions,
            seq_ids: opts.seq_ids,
            tz_sec: i64::from(tz) * 60,
            tz_text: format!("{sign}{:02}{:02}", a / 60, a % 60),
            ts_sec: i64::MIN,
            ts: Vec::with_capacity(32),
            dir_day: i64::MIN,
            dirs: (0..14).map(|_| Vec::with_capacity(24)).collect(),
            target: Vec::with_capacity(256),
            tmp: Vec::with_capacity(256),
            out: Vec::with_capacity(OUT_CHUNK + 4096),
            line_no: 0,
            first_sec: None,
            sessions: [0; 5],
            ev_counts: [0; 9],
            heap_seq: 0,
            deck: Vec::with_capacity(20),
            deck_pos: 0,
        }
    }

    fn set_target(&mut self, s: &str) {
        self.target.clear();
        self.target.extend_from_slice(s.as_bytes());
    }

    /// Appends `/recordings/YYYY/MM/DD/` of `back` days before the local day of `now`.
    fn push_rec_dir(&mut self, now: f64, back: u64) {
        let day = (now.floor() as i64 + self.tz_sec).div_euclid(86_400);
        if day != self.dir_day {
            self.dir_day = day;
            for (b, dir) in self.dirs.iter_mut().enumerate() {
                let (y, m, d) = recwatch::parse::time::civil_from_days(day - b as i64);
                dir.clear();
                // writing into a Vec cannot fail
                let _ = write!(dir, "/recordings/{y:04}/{m:02}/{d:02}/");
            }
        }
        self.target.extend_from_slice(&self.dirs[back as usize]);
    }

    /// Sets the target to a recording path, with an occasional query string.
    fn rec_target(&mut self, now: f64, back: u64, id: u64, part: u64, ext: usize, query: bool) {
        self.target.clear();
        self.push_rec_dir(now, back);
        self.target.extend_from_slice(b"call-");
        push_u64(&mut self.target, id);
        self.target.extend_from_slice(b"-part");
        push_u64(&mut self.target, part);
        self.target.push(b'.');
        self.target.extend_from_slice(EXTS[ext].0.as_bytes());
        if query {
            let r = self.rng.f64();
            if r < 0.05 {
                self.target.extend_from_slice(b"?download=1");
            } else if r < 0.08 {
                self.target.extend_from_slice(b"?t=");
                let t = self.rng.range(1_550_000_000, 1_551_000_000);
                push_u64(&mut self.target, t);
            }
        }
    }

    fn pick_ext(&mut self) -> usize {
        match self.rng.below(20) {
            0..=10 => 0,
            11..=16 => 1,
            17..=18 => 2,
            _ => 3,
        }
    }

    fn body(&mut self, ext: usize) -> u64 {
        let (_, lo, hi) = EXTS[ext];
        self.rng.range(lo, hi)
    }

    /// Status and body size of a recording fetch, by who is asking.
    fn rec_status(&mut self, ext: usize, who: Who) -> (u16, u64) {
        let r = self.rng.f64();
        match who {
            Who::Staff if r < 0.58 => (200, self.body(ext)),
            Who::Staff if r < 0.90 => (206, self.rng.range(16_384, EXTS[ext].2.min(1_048_576))),
            Who::Staff if r < 0.97 => (304, 0),
            Who::Staff => (404, 162),
            Who::Partner if r < 0.92 => (200, self.body(ext)),
            Who::Partner => (404, 162),
            Who::Scrape if r < 0.70 => (200, self.body(ext)),
            Who::Scrape if r < 0.94 => (404, 162),
            Who::Scrape => (403, 146),
            Who::Visitor if r < 0.80 => (403, 146),
            Who::Visitor if r < 0.95 => (404, 162),
            Who::Visitor | Who::Bulk => (200, self.body(ext)),
        }
    }

    /// With `evasions` on, rewrites the recording target (or marks the client to be
    /// written IPv4-mapped) with probability `p`. Draws only from `self.ev`.
    fn maybe_evade(&mut self, v4: bool, p: f64) -> bool {
        if !self.evasions || self.ev.f64() >= p {
            return false;
        }
        let k = self.ev.index(if v4 { 9 } else { 8 });
        self.evade_as(k)
    }

    /// Like `maybe_evade`, always with kind `k` (an evasive session's style).
    fn maybe_evade_as(&mut self, k: usize, p: f64) -> bool {
        self.evasions && self.ev.f64() < p && self.evade_as(k)
    }

    /// Applies evasion `k` to the target; returns whether the client is to be mapped.
    fn evade_as(&mut self, k: usize) -> bool {
        self.ev_counts[k] += 1;
        if k == MAPPED_V4 {
            return true;
        }
        self.tmp.clear();
        evade(k, &self.target, &mut self.tmp, &mut self.ev);
        std::mem::swap(&mut self.target, &mut self.tmp);
        false
    }

    /// Ordinary traffic: pages, static files, API calls, bots, scanners, near-misses.
    fn normal<'p>(&mut self, p: &'p Pools, now: f64) -> (&'p Client, Meta) {
        let rng = &mut self.rng;
        let r = rng.f64();
        let (c, internal) = if r < 0.45 {
            (&p.staff[rng.index(p.staff.len())], true)
        } else if r < 0.50 {
            // internal services polling the API
            let i = rng.index(2);
            let bytes = rng.range(80, 20_000);
            if i == 0 {
                self.set_target("/api/v1/status");
            } else {
                self.set_target("/api/v1/calls?since=");
                push_u64(&mut self.target, (now as i64 - 300).max(0) as u64);
                self.target.extend_from_slice(b"&limit=100");
            }
            return (&p.services[i], meta("GET", "HTTP/1.1", 200, bytes, "-"));
        } else if r < 0.93 {
            (&p.visitors[rng.index(p.visitors.len())], false)
        } else if r < 0.97 {
            let c = &p.bots[rng.index(p.bots.len())];
            if rng.f64() < 0.3 {
                self.set_target("/robots.txt");
                return (c, meta("GET", "HTTP/1.1", 200, 68, "-"));
            }
            let page = rng.pick(&PAGES);
            let st = if rng.f64() < 0.95 { 200 } else { 404 };
            let bytes = rng.range(2000, 40_000);
            self.set_target(page);
            return (c, meta("GET", "HTTP/1.1", st, bytes, "-"));
        } else {
            let c = &p.scanners[rng.index(p.scanners.len())];
            if rng.f64() < 0.4 {
                let proto = if c.ua.starts_with("masscan") { "HTTP/1.0" } else { "HTTP/1.1" };
                self.set_target("/");
                return (c, meta("GET", proto, 200, 5120, "-"));
            }
            let probe = rng.pick(&PROBES);
            let st = if probe == "/recordings/" { 403 } else { 404 };
            let m = if probe == "/xmlrpc.php" || probe == "/boaform/admin/formLogin" { "POST" } else { "GET" };
            self.set_target(probe);
            return (c, meta(m, "HTTP/1.1", st, 162, "-"));
        };

        // pages / static / API / near-misses, for staff and visitors
        let k = rng.f64();
        let referer = if internal { rng.pick(&INTERNAL_REFERERS) } else { rng.pick(&EXTERNAL_REFERERS) };
        let proto = if rng.f64() < 0.55 { "HTTP/2.0" } else { "HTTP/1.1" };
        if k < 0.46 {
            let path = rng.pick(&STATIC);
            let m = if rng.f64() < 0.3 {
                meta("GET", proto, 304, 0, referer)
            } else {
                meta("GET", proto, 200, rng.range(500, 250_000), referer)
            };
            self.set_target(path);
            return (c, m);
        }
        if k < 0.68 {
            let page = rng.pick(&PAGES);
            let m = if page == "/login" && rng.f64() < 0.3 {
                let st = if rng.f64() < 0.8 { 302 } else { 401 };
                let bytes = if rng.f64() < 0.8 { 0 } else { 512 };
                meta("POST", proto, st, bytes, referer)
            } else {
                let st = if rng.f64() < 0.97 { 200 } else { 404 };
                meta("GET", proto, st, rng.range(1500, 60_000), referer)
            };
            self.set_target(page);
            return (c, m);
        }
        if k < 0.95 {
            let x = rng.f64();
            let (a, b) = if x < 0.5 {
                ("/api/v1/calls?page=", Some((1 + rng.below(20), "&limit=50")))
            } else if x < 0.85 {
                ("/api/v1/calls/", Some((rng.range(100_000, 990_000), "")))
            } else {
                ("/api/v1/events", None)
            };
            let st = if internal || rng.f64() < 0.3 { 200 } else { 401 };
            let bytes = if st == 200 { rng.range(100, 30_000) } else { 58 };
            self.set_target(a);
            if let Some((n, tail)) = b {
                push_u64(&mut self.target, n);
                self.target.extend_from_slice(tail.as_bytes());
            }
            return (c, meta("GET", proto, st, bytes, referer));
        }
        // near-misses around recordings: must not match the rule
        let x = rng.f64();
        let back = rng.below(14);
        let cid = rng.range(100_000, 990_000);
        let (size, other) = if x < 0.35 {
            (rng.range(300, 4000), None)
        } else if x < 0.55 {
            (33, None)
        } else if x < 0.75 {
            (rng.range(2000, 30_000), None)
        } else {
            (rng.range(20_000, 900_000), Some(rng.pick(&OTHER_AUDIO)))
        };
        let st = if let Some(path) = other {
            self.set_target(path);
            200
        } else {
            self.target.clear();
            self.push_rec_dir(now, back);
            if x < 0.35 {
                self.target.extend_from_slice(b"call-");
                push_u64(&mut self.target, cid);
                self.target.extend_from_slice(b".json");
            } else if x < 0.55 {
                self.target.extend_from_slice(b"call-");
                push_u64(&mut self.target, cid);
                self.target.extend_from_slice(b"-part1.wav.md5");
            } // else: the directory listing itself
            if internal {
                200
            } else {
                403
            }
        };
        let bytes = if st == 200 { size } else { 146 };
        (c, meta("GET", proto, st, bytes, referer))
    }

    /// A single recording fetch outside any session.
    fn single<'p>(&mut self, p: &'p Pools, now: f64) -> (&'p Client, Meta) {
        let r = self.rng.f64();
        let id = self.rng.range(100_000, 990_000);
        let part = 1 + if self.rng.f64() < 0.4 { self.rng.below(4) } else { 0 };
        let ext = self.pick_ext();
        let back = if self.rng.f64() < 0.3 { self.rng.below(14) } else { 0 };
        self.rec_target(now, back, id, part, ext, true);
        let (c, mut m) = if r < 0.83 {
            // internal staff with the web player
            let c = &p.staff[self.rng.index(p.staff.len())];
            let (st, b) = self.rec_status(ext, Who::Staff);
            let proto = if self.rng.f64() < 0.5 { "HTTP/2.0" } else { "HTTP/1.1" };
            let referer = self.rng.pick(&INTERNAL_REFERERS);
            (c, meta("GET", proto, st, b, referer))
        } else if r < 0.88 {
            // internal service (CRM sync)
            let (st, b) = self.rec_status(ext, Who::Partner);
            (&p.services[2], meta("GET", "HTTP/1.1", st, b, "-"))
        } else if r < 0.94 {
            // authenticated external partners
            let c = &p.partners[self.rng.index(3)];
            let (st, b) = self.rec_status(ext, Who::Partner);
            (c, meta("GET", "HTTP/1.1", st, b, "-"))
        } else {
            // anonymous outsiders: mostly refused, sometimes a leak; HEAD probes refused
            let c = &p.visitors[self.rng.index(p.visitors.len())];
            if self.rng.f64() < 0.1 {
                let st = if self.rng.f64() < 0.7 { 403 } else { 404 };
                (c, meta("HEAD", "HTTP/1.1", st, 0, "-"))
            } else {
                let (st, b) = self.rec_status(ext, Who::Visitor);
                let referer = self.rng.pick(&EXTERNAL_REFERERS);
                (c, meta("GET", "HTTP/1.1", st, b, referer))
            }
        };
        m.rec = true;
        m.mapped = self.maybe_evade(c.v4, EV_P_BASE);
        (c, m)
    }

    /// Next session kind. Kinds come from shuffled decks of 20 in the proportions
    /// 8:5:3:2:2 (scrape, slow, replay, archive, binge) whose first five cards are one of
    /// each kind, so even a short log gets every kind once five sessions have started.
    fn next_kind(&mut self) -> Kind {
        const KINDS: [Kind; 5] = [Kind::Scrape, Kind::Slow, Kind::Replay, Kind::Archive, Kind::Binge];
        const REST: [(Kind, usize); 5] =
            [(Kind::Scrape, 7), (Kind::Slow, 4), (Kind::Replay, 2), (Kind::Archive, 1), (Kind::Binge, 1)];
        if self.deck_pos == self.deck.len() {
            self.deck.clear();
            self.deck.extend_from_slice(&KINDS);
            for (k, n) in REST {
                self.deck.extend(std::iter::repeat_n(k, n));
            }
            shuffle(&mut self.rng, &mut self.deck[..5]);
            shuffle(&mut self.rng, &mut self.deck[5..]);
            self.deck_pos = 0;
        }
        self.deck_pos += 1;
        self.deck[self.deck_pos - 1]
    }

    fn spawn(&mut self, p: &Pools, now: f64) -> Pending {
        let kind = self.next_kind();
        let day = self.rng.below(14);
        let next_id = self.rng.range(100_000, 990_000);
        let ext = self.pick_ext();
        let rng = &mut self.rng;
        let outsider = |rng: &mut Rng, p4: f64, uas: &[&'static str]| {
            let ip = if rng.f64() < p4 { v4_public(rng) } else { v6_public(rng) };
            Client::new(ip, rng.pick(uas), "-")
        };
        let mut files = Vec::new();
        let (client, left, gap) = match kind {
            Kind::Scrape => {
                let c = outsider(rng, 0.7, &TOOL_UAS);
                (c, rng.range(25, 150), 0.3 + 2.2 * rng.f64())
            }
            Kind::Slow => {
                let c = outsider(rng, 0.7, &TOOL_UAS);
                (c, rng.range(5, 60), 8.0 + 25.0 * rng.f64())
            }
            Kind::Replay => {
                // <= 20 distinct files, each fetched several times with range requests
                let c = outsider(rng, 0.6, &BROWSER_UAS);
                let n = rng.range(8, 21);
                files = (0..n).map(|i| (next_id + i, 1 + rng.below(3))).collect();
                (c, n * rng.range(2, 5), 0.4 + 0.8 * rng.f64())
            }
            Kind::Archive => {
                let ip = format!("192.168.10.{}", rng.range(20, 24));
                let c = Client::new(ip, "Wget/1.20.1 (linux-gnu)", "-");
                (c, rng.range(50, 300), 0.2 + 0.3 * rng.f64())
            }
            Kind::Binge => {
                let c = p.staff[rng.index(p.staff.len())].clone();
                (c, rng.range(4, 15), 5.0 + 20.0 * rng.f64())
            }
        };
        let t = now + rng.exp(1.0 / gap);
        let style = if self.evasions && matches!(kind, Kind::Scrape | Kind::Replay) && self.ev.f64() < 0.5 {
            Some(self.ev.index(if client.v4 { 9 } else { 8 }))
        } else {
            None
        };
        self.sessions[kind as usize] += 1;
        self.heap_seq += 1;
        Pending {
            t,
            seq: self.heap_seq,
            s: Session { kind, client, left: left as u32, gap, next_id, part: 1, day, ext, files, idx: 0, style },
        }
    }

    /// One request of session `s` at `now`.
    fn session_line(&mut self, s: &mut Session, now: f64) -> Meta {
        let mut m = if s.kind == Kind::Replay {
            let (id, part) = s.files[s.idx % s.files.len()];
            s.idx += 1;
            self.rec_target(now, s.day, id, part, s.ext, false);
            let (st, b) =
                if self.rng.f64() < 0.75 { (206, self.rng.range(16_384, 1_048_576)) } else { (200, self.body(s.ext)) };
            meta("GET", "HTTP/2.0", st, b, "https://pbx.example.com/calls")
        } else {
            // sequential enumeration: call ids go up, several parts per call
            self.rec_target(now, s.day, s.next_id, s.part, s.ext, true);
            if s.part < 3 && self.rng.f64() < 0.5 {
                s.part += 1;
            } else {
                s.part = 1;
                s.next_id += 1 + if s.kind == Kind::Archive { 0 } else { self.rng.below(3) };
            }
            match s.kind {
                Kind::Archive => {
                    let (st, b) = self.rec_status(s.ext, Who::Bulk);
                    meta("GET", "HTTP/1.1", st, b, "-")
                }
                Kind::Binge => {
                    let (st, b) = self.rec_status(s.ext, Who::Staff);
                    let referer = self.rng.pick(&INTERNAL_REFERERS);
                    meta("GET", "HTTP/2.0", st, b, referer)
                }
                _ => {
                    let (st, b) = self.rec_status(s.ext, Who::Scrape);
                    meta("GET", "HTTP/1.1", st, b, "-")
                }
            }
        };
        m.rec = true;
        m.mapped = match s.style {
            Some(k) => self.maybe_evade_as(k, EV_P_SESSION),
            None => self.maybe_evade(s.client.v4, EV_P_BASE),
        };
        m
    }

    fn refresh_ts(&mut self, sec: i64) {
        self.ts_sec = sec;
        let local = sec + self.tz_sec;
        let (y, mo, d) = recwatch::parse::time::civil_from_days(local.div_euclid(86_400));
        let s = local.rem_euclid(86_400);
        self.ts.clear();
        // writing into a Vec cannot fail
        let _ = write!(
            self.ts,
            "{d:02}/{}/{y:04}:{:02}:{:02}:{:02} {}",
            MONTHS[mo as usize - 1],
            s / 3600,
            s / 60 % 60,
            s % 60,
            self.tz_text
        );
    }

    /// Appends one combined-format line to the output buffer.
    fn emit(&mut self, c: &Client, now: f64, m: &Meta) {
        let sec = now.floor() as i64;
        if sec != self.ts_sec {
            self.refresh_ts(sec);
        }
        if self.first_sec.is_none() {
            self.first_sec = Some(sec);
        }
        self.line_no += 1;
        let o = &mut self.out;
        if m.mapped {
            o.extend_from_slice(b"::ffff:");
        }
        o.extend_from_slice(c.ip.as_bytes());
        o.extend_from_slice(b" - ");
        o.extend_from_slice(c.user.as_bytes());
        o.extend_from_slice(b" [");
        o.extend_from_slice(&self.ts);
        o.extend_from_slice(b"] \"");
        o.extend_from_slice(m.method.as_bytes());
        o.push(b' ');
        o.extend_from_slice(&self.target);
        o.push(b' ');
        o.extend_from_slice(m.proto.as_bytes());
        let st = m.status;
        o.extend_from_slice(&[
            b'"',
            b' ',
            b'0' + (st / 100 % 10) as u8,
            b'0' + (st / 10 % 10) as u8,
            b'0' + (st % 10) as u8,
            b' ',
        ]);
        push_u64(o, m.bytes);
        o.extend_from_slice(b" \"");
        o.extend_from_slice(m.referer.as_bytes());
        o.extend_from_slice(b"\" \"");
        o.extend_from_slice(c.ua.as_bytes());
        if self.seq_ids {
            o.extend_from_slice(b" seq/");
            push_u64(o, self.line_no);
        }
        o.extend_from_slice(b"\"\n");
    }
}

/// Writes evasion variant `k` of the canonical recording target `canon`
/// (`/recordings/YYYY/MM/DD/call-N-partK.ext[?query]`) to `out`.
fn evade(k: usize, canon: &[u8], out: &mut Vec<u8>, ev: &mut Rng) {
    let q = canon.iter().position(|&b| b == b'?').unwrap_or(canon.len());
    let dot = canon[..q].iter().rposition(|&b| b == b'.').unwrap_or(q);
    // slashes of the directory part: "/recordings/YYYY/MM/DD/" -> 5 of them
    let mut sl = [0usize; 8];
    let mut ns = 0;
    for (i, &b) in canon[..dot].iter().enumerate() {
        if b == b'/' && ns < sl.len() {
            sl[ns] = i;
            ns += 1;
        }
    }
    let rec_end = sl[1]; // index of the slash after "recordings"
    let mut splice = |at: usize, skip: usize, ins: &[u8]| {
        out.extend_from_slice(&canon[..at]);
        out.extend_from_slice(ins);
        out.extend_from_slice(&canon[at + skip..]);
    };
    match k {
        0 => {
            if ev.f64() < 0.5 {
                let enc: &[u8] = if ev.f64() < 0.5 { b"%2e" } else { b"%2E" };
                splice(dot, 1, enc);
            } else {
                splice(rec_end, 0, b"/%2e");
            }
        }
        1 => {
            let i = if ev.f64() < 0.6 { 1 } else { 2 + ev.index(ns - 2) };
            let enc: &[u8] = if ev.f64() < 0.5 { b"%2F" } else { b"%2f" };
            splice(sl[i], 1, enc);
        }
        2 => splice(sl[ev.index(ns)], 0, b"/"),
        3 => splice(sl[ev.index(ns)] + 1, 0, b"./"),
        4 => {
            if ev.f64() < 0.6 {
                out.extend_from_slice(ev.pick(&DOT_DOT_PREFIXES).as_bytes());
                out.extend_from_slice(canon);
            } else {
                // "/recordings/2019/../2019/02/..."
                let year = &canon[rec_end + 1..=sl[2]];
                out.extend_from_slice(&canon[..=rec_end]);
                out.extend_from_slice(year);
                out.extend_from_slice(b"../");
                out.extend_from_slice(&canon[rec_end + 1..]);
            }
        }
        5 => {
            out.extend_from_slice(canon);
            let v = ev.below(4);
            if v != 1 {
                out[1] = b'R';
            }
            if v == 3 {
                out[2..rec_end].make_ascii_uppercase();
            }
            if v != 0 {
                out[dot + 1..q].make_ascii_uppercase();
            }
        }
        6 => {
            // nginx and Apache on Linux serve no file named `x.wav;jsessionid=…`, but a
            // `;jsessionid=…` segment is a name, and `..` pops it.
            let at = sl[ev.index(ns)] + 1;
            out.extend_from_slice(&canon[..at]);
            out.extend_from_slice(b";jsessionid=");
            for _ in 0..32 {
                out.push(b"0123456789ABCDEF"[ev.index(16)]);
            }
            out.extend_from_slice(b"/../");
            out.extend_from_slice(&canon[at..]);
        }
        _ => {
            out.extend_from_slice(b"http://nas.example");
            out.extend_from_slice(canon);
        }
    }
}

/// Writes the log; returns counts (lines, recording requests, sessions by kind, ...).
pub fn generate<W: Write>(opts: &SynthOptions, mut out: W) -> io::Result<SynthStats> {
    let bad = |what: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, what.to_string()));
    if !(0.0..=0.9).contains(&opts.rec_frac) {
        return bad("rec_frac must be in [0, 0.9]");
    }
    if !(opts.peak_rate.is_finite() && opts.peak_rate > 0.0) {
        return bad("peak_rate must be a positive number");
    }
    if opts.tz_minutes.unsigned_abs() >= 24 * 60 {
        return bad("tz_minutes must be within (-1440, 1440)");
    }
    let mut g = Gen::new(opts);
    let pools = Pools::build(&mut g.rng);
    let p_spawn = opts.rec_frac * SESSION_SHARE / MEAN_SESSION_LINES;
    let p_single = opts.rec_frac * (1.0 - SESSION_SHARE);

    let mut heap: BinaryHeap<Pending> = BinaryHeap::new();
    let mut now = opts.start_unix as f64;
    let mut rate_hour = i64::MIN;
    let mut rate = opts.peak_rate;
    let mut rec_lines = 0u64;

    for _ in 0..opts.lines {
        // day/night curve, once per simulated hour: 20 % of peak at 03:00, 100 % at 15:00
        let h = (now.floor() as i64 + g.tz_sec).div_euclid(3600);
        if h != rate_hour {
            rate_hour = h;
            let hod = h.rem_euclid(24) as f64 + 0.5;
            let wave = 0.5 - 0.5 * (std::f64::consts::TAU * (hod - 3.0) / 24.0).cos();
            rate = opts.peak_rate * (0.2 + 0.8 * wave);
        }
        let t_bg = now + g.rng.exp(rate);
        if heap.peek().is_some_and(|p| p.t <= t_bg) {
            let mut p = heap.pop().expect("peeked");
            now = now.max(p.t);
            let m = g.session_line(&mut p.s, now);
            g.emit(&p.s.client, now, &m);
            rec_lines += 1;
            p.s.left -= 1;
            if p.s.left > 0 {
                // jitter around the mean gap (0.5x .. 1.5x) keeps bursts bursty
                p.t = now + p.s.gap * (0.5 + g.rng.f64());
                g.heap_seq += 1;
                p.seq = g.heap_seq;
                heap.push(p);
            }
        } else {
            now = t_bg;
            if g.rng.f64() < p_spawn {
                heap.push(g.spawn(&pools, now));
            }
            let (c, m) = if g.rng.f64() < p_single { g.single(&pools, now) } else { g.normal(&pools, now) };
            rec_lines += u64::from(m.rec);
            g.emit(c, now, &m);
        }
        if g.out.len() >= OUT_CHUNK {
            out.write_all(&g.out)?;
            g.out.clear();
        }
    }
    out.write_all(&g.out)?;
    out.flush()?;

    let mut sessions = [("", 0u64); 5];
    for (i, s) in sessions.iter_mut().enumerate() {
        *s = (SESSION_KINDS[i], g.sessions[i]);
    }
    let mut evasions = [("", 0u64); 9];
    for (i, e) in evasions.iter_mut().enumerate() {
        *e = (EVASION_KINDS[i], g.ev_counts[i]);
    }
    Ok(SynthStats {
        lines: g.line_no,
        recording_requests: rec_lines,
        sessions,
        evasions,
        first_unix: g.first_sec.unwrap_or(opts.start_unix),
        last_unix: if g.line_no > 0 { g.ts_sec } else { opts.start_unix },
    })
}
