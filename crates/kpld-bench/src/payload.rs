//! What the records carry: the fixed pattern of the headline runs, or
//! realistic structured log lines (`--payload json-log`) for the
//! compression measurements.
//!
//! A payload is a pool of records built once before the run, so the load
//! generator still allocates nothing per record: record `id` of a
//! connection carries `pool[(offset + id) % pool.len()]`.
//!
//! The JSON log lines imitate a service's logs as shippers such as Fluent Bit
//! or Vector emit them, one JSON object per record, 200-1000 bytes:
//! - 75% HTTP access lines: ISO 8601 timestamp, level, service, host, pod
//!   and zone, a random request id and trace id (incompressible hex),
//!   method, path with ids in it, status, latency, bytes, client address,
//!   user agent (from a list of real ones), and optional fields (user id,
//!   referer, query, error and its message, upstream, session, tags);
//! - 10% health checks (short: no host, trace or optional fields);
//! - 15% application events (event name, message, duration, count).
//!
//! Everything comes from a seeded generator: the same seed gives the same
//! lines on every machine.

use std::fmt::Write;

/// Smallest and largest JSON log line, in bytes.
pub const JSON_LOG_MIN: usize = 200;
pub const JSON_LOG_MAX: usize = 1000;

/// splitmix64: small, fast, and the same on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5eed_1095_dead_beef)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An item of `items` chosen with the given weights.
    pub fn weighted<'a, T>(&mut self, items: &'a [(T, u32)]) -> &'a T {
        let total: u64 = items.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut x = self.below(total);
        for (item, w) in items {
            if x < u64::from(*w) {
                return item;
            }
            x -= u64::from(*w);
        }
        &items[items.len() - 1].0
    }

    fn hex(&mut self, out: &mut String, digits: usize) {
        for _ in 0..digits {
            out.push(char::from(b"0123456789abcdef"[self.below(16) as usize]));
        }
    }
}

/// The fixed pattern of the headline runs (`--payload fixed`).
pub fn fixed(record_size: usize) -> Vec<Vec<u8>> {
    vec![(0..record_size)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36])
        .collect()]
}

const LEVELS: [(&str, u32); 4] = [("INFO", 80), ("DEBUG", 8), ("WARN", 9), ("ERROR", 3)];
const SERVICES: [&str; 12] = [
    "checkout-api",
    "cart-service",
    "catalog-api",
    "search-frontend",
    "payments-gateway",
    "user-profile",
    "inventory-sync",
    "recommendations",
    "auth-service",
    "notification-worker",
    "order-history",
    "shipping-quotes",
];
const REGIONS: [&str; 4] = ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d"];
const METHODS: [(&str, u32); 5] = [
    ("GET", 70),
    ("POST", 18),
    ("PUT", 6),
    ("DELETE", 3),
    ("PATCH", 3),
];
/// `{}` is replaced by a number.
const PATHS: [&str; 14] = [
    "/api/v1/users/{}",
    "/api/v1/users/{}/orders",
    "/api/v1/users/{}/orders/{}",
    "/api/v2/catalog/items/{}",
    "/api/v2/catalog/search",
    "/api/v1/cart/{}/items",
    "/api/v1/cart/{}/checkout",
    "/api/v1/payments/{}/capture",
    "/api/v1/inventory/sku/{}",
    "/api/v1/recommendations/{}",
    "/healthz",
    "/api/v1/sessions",
    "/api/v1/shipping/quotes/{}",
    "/static/js/app.{}.js",
];
const STATUSES: [(u16, u32); 12] = [
    (200, 700),
    (201, 60),
    (204, 40),
    (301, 10),
    (304, 50),
    (400, 30),
    (401, 20),
    (403, 10),
    (404, 50),
    (429, 10),
    (500, 15),
    (503, 5),
];
const USER_AGENTS: [&str; 10] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
    "okhttp/4.12.0",
    "python-requests/2.32.3",
    "Go-http-client/2.0",
    "aws-sdk-java/2.29.20 Linux/6.1.115 OpenJDK_64-Bit_Server_VM/21.0.5+11-LTS Java/21.0.5 vendor/Amazon.com_Inc. io/sync http/Apache cfg/retry-mode#standard",
    "curl/8.11.0",
];
const REFERERS: [&str; 5] = [
    "https://www.example.com/",
    "https://www.example.com/products?category=outdoor&sort=price_asc",
    "https://www.google.com/",
    "https://m.example.com/cart",
    "https://partner.example.net/widgets/embed?campaign=winter-sale",
];
/// (status it goes with, kind, message); 0: any 5xx.
const ERRORS: [(u16, &str, &str); 8] = [
    (
        0,
        "UpstreamTimeout",
        "upstream request to inventory-sync timed out after 2000 ms (attempt 3 of 3)",
    ),
    (
        0,
        "ConnectionReset",
        "connection reset by peer while reading response headers from 10.0.7.12:8443",
    ),
    (
        400,
        "ValidationError",
        "field 'quantity' must be a positive integer, got -1",
    ),
    (
        401,
        "Unauthorized",
        "bearer token expired at 2026-11-24T23:59:59Z; refresh and retry",
    ),
    (
        403,
        "Forbidden",
        "principal lacks permission orders:Write on tenant acme-eu",
    ),
    (
        404,
        "NotFound",
        "no item with the given id in catalog partition eu-west/7",
    ),
    (
        429,
        "RateLimited",
        "client exceeded 100 requests per second for key tier=free; retry after 1 s",
    ),
    (
        0,
        "PaymentDeclined",
        "card issuer declined the authorization: insufficient_funds (code 51)",
    ),
];
const TAGS: [&str; 8] = [
    "canary",
    "blue",
    "green",
    "beta-user",
    "mobile",
    "batch",
    "retry",
    "cache-miss",
];

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    // Howard Hinnant's algorithm: days since 1970-01-01 to (year, month, day).
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn push_timestamp(out: &mut String, ms: u64) {
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    let _ = write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms % 1000
    );
}

fn push_uuid(rng: &mut Rng, o: &mut String) {
    rng.hex(o, 8);
    o.push('-');
    rng.hex(o, 4);
    o.push_str("-4");
    rng.hex(o, 3);
    o.push('-');
    rng.hex(o, 4);
    o.push('-');
    rng.hex(o, 12);
}

/// `"host":…,"pod":…,"zone":…,` of a service's instance.
fn push_instance(rng: &mut Rng, o: &mut String, service: &str) {
    let _ = write!(
        o,
        "\"host\":\"ip-10-0-{}-{}.ec2.internal\",\"pod\":\"{service}-{:x}-{:05x}\",\"zone\":\"{}\",",
        rng.below(16),
        rng.below(256),
        0x5d4f7b6c_u64 + rng.below(4),
        rng.below(1 << 20),
        rng.pick(&REGIONS)
    );
}

/// What a line records.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An HTTP request served: the bulk of the lines, 400-1000 bytes.
    Access,
    /// A load balancer's or kubelet's health check: short, 200-300 bytes.
    Probe,
    /// An application event (cache refresh, job done, retry): 250-600 bytes.
    Event,
}

const KINDS: [(Kind, u32); 3] = [(Kind::Access, 75), (Kind::Probe, 10), (Kind::Event, 15)];
const EVENTS: [(&str, &str); 6] = [
    ("cache.refresh", "refreshed price cache from catalog snapshot"),
    ("job.finished", "nightly reconciliation batch finished"),
    ("consumer.lag", "kinesis consumer lag above threshold on shard"),
    ("db.slow_query", "query exceeded 250 ms: SELECT * FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 50"),
    ("retry.scheduled", "retrying webhook delivery to partner endpoint after HTTP 502"),
    ("config.reload", "reloaded feature flags from parameter store"),
];

/// One log line: the fields of its kind, then optional ones while they fit
/// under [`JSON_LOG_MAX`], then a note if still under [`JSON_LOG_MIN`].
fn json_log_line(rng: &mut Rng, ts_ms: u64) -> String {
    let mut o = String::with_capacity(JSON_LOG_MAX);
    o.push_str("{\"timestamp\":\"");
    push_timestamp(&mut o, ts_ms);
    let kind = *rng.weighted(&KINDS);
    let service = *rng.pick(&SERVICES);
    let mut optional: Vec<String> = Vec::new();
    match kind {
        Kind::Probe => {
            let _ = write!(
                o,
                "\",\"level\":\"DEBUG\",\"service\":\"{service}\",\"request_id\":\""
            );
            push_uuid(rng, &mut o);
            let _ = write!(
                o,
                "\",\"http\":{{\"method\":\"GET\",\"path\":\"/healthz\",\"status\":200,\"latency_ms\":{:.3},\"user_agent\":\"kube-probe/1.31\"}}",
                0.05 + rng.unit()
            );
        }
        Kind::Event => {
            let (event, msg) = *rng.pick(&EVENTS);
            let level = if rng.chance(0.2) { "WARN" } else { "INFO" };
            let _ = write!(o, "\",\"level\":\"{level}\",\"service\":\"{service}\",");
            push_instance(rng, &mut o, service);
            o.push_str("\"request_id\":\"");
            push_uuid(rng, &mut o);
            let _ = write!(
                o,
                "\",\"event\":\"{event}\",\"message\":\"{msg}\",\"duration_ms\":{:.3},\"count\":{}",
                rng.unit() * 5000.0,
                rng.below(100_000)
            );
            if rng.chance(0.3) {
                let _ = write!(o, ",\"shard_id\":\"shardId-{:012}\"", rng.below(64));
            }
        }
        Kind::Access => {
            let level = *rng.weighted(&LEVELS);
            let status = *rng.weighted(&STATUSES);
            let level = match status {
                500.. => "ERROR",
                400.. if level == "INFO" => "WARN",
                _ => level,
            };
            let _ = write!(o, "\",\"level\":\"{level}\",\"service\":\"{service}\",");
            push_instance(rng, &mut o, service);
            o.push_str("\"request_id\":\"");
            push_uuid(rng, &mut o);
            o.push_str("\",\"trace_id\":\"");
            rng.hex(&mut o, 32);
            let method = *rng.weighted(&METHODS);
            let _ = write!(o, "\",\"http\":{{\"method\":\"{method}\",\"path\":\"");
            let path = *rng.pick(&PATHS);
            for (i, part) in path.split("{}").enumerate() {
                if i > 0 {
                    let _ = write!(o, "{}", rng.below(10_000_000));
                }
                o.push_str(part);
            }
            // Latency: mostly tens of ms, a long tail.
            let latency = 2.0 + 40.0 * (-(1.0 - rng.unit()).ln()).powf(1.5);
            let _ = write!(
                o,
                "\",\"status\":{status},\"latency_ms\":{latency:.3},\"bytes_sent\":{},\"client_ip\":\"{}.{}.{}.{}\",\"user_agent\":\"{}\"}}",
                if status == 204 || status == 304 { 0 } else { 120 + rng.below(48_000) },
                rng.below(223) + 1,
                rng.below(256),
                rng.below(256),
                rng.below(254) + 1,
                rng.pick(&USER_AGENTS)
            );
            if rng.chance(0.6) {
                optional.push(format!(",\"user_id\":\"u-{:08}\"", rng.below(100_000_000)));
            }
            if rng.chance(0.4) {
                optional.push(format!(",\"referer\":\"{}\"", rng.pick(&REFERERS)));
            }
            if method == "GET" && rng.chance(0.3) {
                optional.push(format!(
                    ",\"query\":{{\"page\":{},\"per_page\":{},\"q\":\"{}\"}}",
                    rng.below(50) + 1,
                    [10, 20, 50, 100][rng.below(4) as usize],
                    [
                        "winter jacket",
                        "usb-c cable",
                        "running shoes",
                        "coffee grinder"
                    ][rng.below(4) as usize]
                ));
            }
            if status >= 400 || level == "ERROR" {
                let fits: Vec<_> = ERRORS
                    .iter()
                    .filter(|(st, _, _)| *st == status || (*st == 0 && status >= 500))
                    .collect();
                let (_, kind, msg) = if fits.is_empty() {
                    rng.pick(&ERRORS)
                } else {
                    *rng.pick(&fits)
                };
                optional.push(format!(
                    ",\"error\":{{\"kind\":\"{kind}\",\"message\":\"{msg}\",\"retryable\":{}}}",
                    status >= 500 || status == 429
                ));
            }
            if rng.chance(0.35) {
                optional.push(format!(
                    ",\"upstream\":{{\"name\":\"{}\",\"latency_ms\":{:.3},\"attempts\":{}}}",
                    rng.pick(&SERVICES),
                    latency * rng.unit(),
                    1 + rng.below(3)
                ));
            }
            if rng.chance(0.25) {
                optional.push(format!(
                    ",\"session\":{{\"id\":\"{:016x}\",\"new\":{},\"ab_bucket\":\"exp-{}-{}\"}}",
                    rng.next_u64(),
                    rng.chance(0.1),
                    rng.below(40),
                    ["control", "variant-a", "variant-b"][rng.below(3) as usize]
                ));
            }
            if rng.chance(0.2) {
                optional.push(format!(
                    ",\"message\":\"{method} request served by {service} in {latency:.1} ms (cache {})\"",
                    if rng.chance(0.7) { "hit" } else { "miss" }
                ));
            }
        }
    }
    if kind != Kind::Probe && rng.chance(0.5) {
        let n = 1 + rng.below(3) as usize;
        let tags: Vec<String> = (0..n).map(|_| format!("\"{}\"", rng.pick(&TAGS))).collect();
        optional.push(format!(",\"tags\":[{}]", tags.join(",")));
    }
    for f in optional {
        if o.len() + f.len() < JSON_LOG_MAX {
            o.push_str(&f);
        }
    }
    // `,"note":"` + dashes + `"` and the closing brace: 11 bytes and the dashes.
    if o.len() + 1 < JSON_LOG_MIN {
        o.push_str(",\"note\":\"");
        o.push_str(&"-".repeat((JSON_LOG_MIN - 11).saturating_sub(o.len() - 9)));
        o.push('"');
    }
    o.push('}');
    o
}

/// `n` JSON log lines, one record each, from `seed`; timestamps advance by
/// a few milliseconds per line from 2026-11-25T00:00:00Z.
pub fn json_log(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut ts = 1_795_564_800_000u64;
    (0..n.max(1))
        .map(|_| {
            ts += rng.below(7);
            json_log_line(&mut rng, ts).into_bytes()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_log_lines_are_json_in_bounds_and_deterministic() {
        let a = json_log(2000, 7);
        assert_eq!(a, json_log(2000, 7));
        assert_ne!(a, json_log(2000, 8));
        for line in &a {
            assert!(
                (JSON_LOG_MIN..=JSON_LOG_MAX).contains(&line.len()),
                "{} bytes: {}",
                line.len(),
                String::from_utf8_lossy(line)
            );
            let v: serde_json::Value = serde_json::from_slice(line).expect("valid JSON");
            for k in ["timestamp", "level", "service", "request_id"] {
                assert!(v.get(k).is_some(), "no {k}");
            }
            match (v.get("http"), v.get("event")) {
                (Some(h), None) => {
                    for k in ["method", "path", "status", "latency_ms", "user_agent"] {
                        assert!(h.get(k).is_some(), "no http.{k}");
                    }
                }
                (None, Some(_)) => assert!(v.get("duration_ms").is_some()),
                _ => panic!("neither a request nor an event: {v}"),
            }
        }
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(distinct.len(), a.len());
        // Sizes spread over the range: short probes, long requests.
        assert!(a.iter().any(|l| l.len() < 300));
        assert!(a.iter().any(|l| l.len() > 800));
    }

    #[test]
    fn timestamps_are_iso_8601() {
        let mut s = String::new();
        push_timestamp(&mut s, 1_795_564_800_123);
        assert_eq!(s, "2026-11-25T00:00:00.123Z");
    }
}
