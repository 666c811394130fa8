//! Rate-limit headroom: what a provider says, on each answer, of the requests and
//! tokens it will still take before its limits reset, read from the answer's headers
//! so that a coming 429 storm shows before its first 429.
//!
//! - **OpenAI**, and any server that sends these very names (Groq does):
//!   `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
//!   `x-ratelimit-reset-requests` and the same for `-tokens`; a reset is a Go-style
//!   duration (`6m0s`, `1s`, `20ms`, `1h2m3.5s`), a number of seconds, or (a bare
//!   number above 1e9) a time since the epoch in seconds, above 1e12 in milliseconds.
//!   Other names (`x-ratelimit-limit` without `-requests`) are not read. A server
//!   that sends what remains without the limit (Azure OpenAI, some OpenAI-compatible
//!   gateways) shows what remains but gives no headroom, so it cannot raise
//!   `LLMRateLimitNear` unless an earlier answer stated the limit.
//! - **Anthropic**: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
//!   {limit,remaining,reset}`; a reset is an RFC 3339 time
//!   (`2025-05-01T12:00:30Z`), taken relative to the answer's own `Date` (the
//!   provider's clock) when it has one, else to this host's clock.
//! - **Waits**: `retry-after-ms` (milliseconds), else `Retry-After` as seconds or an
//!   HTTP date.
//!
//! Every header is read on its own: one that is missing, repeated or does not parse
//! is left out, never guessed, and nothing here panics on any bytes (a property test
//! holds it to that).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::header::{HeaderMap, HeaderValue};

/// The longest reset or wait taken; longer ones are cut to it (a week).
pub const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a reading whose limit says nothing of its reset counts as current: the
/// providers' windows are a minute.
pub const UNDATED_READING: Duration = Duration::from_secs(60);

/// One of a provider's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// Requests (per minute, or per day).
    Requests,
    /// Tokens: OpenAI's tokens per minute; Anthropic's most restrictive token limit.
    Tokens,
    /// Anthropic's input tokens per minute.
    InputTokens,
    /// Anthropic's output tokens per minute.
    OutputTokens,
}

impl Resource {
    /// Every limit, in the order they are shown.
    pub const ALL: [Resource; 4] = [
        Resource::Requests,
        Resource::Tokens,
        Resource::InputTokens,
        Resource::OutputTokens,
    ];

    /// Its `limit` label: `requests`, `tokens`, `input_tokens`, `output_tokens`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Resource::Requests => "requests",
            Resource::Tokens => "tokens",
            Resource::InputTokens => "input_tokens",
            Resource::OutputTokens => "output_tokens",
        }
    }

    /// The headers that carry it, each a limit, what remains and the reset:
    /// OpenAI's (for requests and tokens), then Anthropic's.
    const fn names(self) -> (Option<[&'static str; 3]>, [&'static str; 3]) {
        match self {
            Resource::Requests => (
                Some([
                    "x-ratelimit-limit-requests",
                    "x-ratelimit-remaining-requests",
                    "x-ratelimit-reset-requests",
                ]),
                [
                    "anthropic-ratelimit-requests-limit",
                    "anthropic-ratelimit-requests-remaining",
                    "anthropic-ratelimit-requests-reset",
                ],
            ),
            Resource::Tokens => (
                Some([
                    "x-ratelimit-limit-tokens",
                    "x-ratelimit-remaining-tokens",
                    "x-ratelimit-reset-tokens",
                ]),
                [
                    "anthropic-ratelimit-tokens-limit",
                    "anthropic-ratelimit-tokens-remaining",
                    "anthropic-ratelimit-tokens-reset",
                ],
            ),
            Resource::InputTokens => (
                None,
                [
                    "anthropic-ratelimit-input-tokens-limit",
                    "anthropic-ratelimit-input-tokens-remaining",
                    "anthropic-ratelimit-input-tokens-reset",
                ],
            ),
            Resource::OutputTokens => (
                None,
                [
                    "anthropic-ratelimit-output-tokens-limit",
                    "anthropic-ratelimit-output-tokens-remaining",
                    "anthropic-ratelimit-output-tokens-reset",
                ],
            ),
        }
    }
}

/// One limit as an answer stated it; each figure when the answer gave it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limit {
    /// The limit itself (requests or tokens per window).
    pub limit: Option<u64>,
    /// What is left of it.
    pub remaining: Option<u64>,
    /// How long until it is whole again, from the answer.
    pub reset: Option<Duration>,
}

impl Limit {
    /// What is left over the limit (0 to 1), when both are known and the limit is
    /// above zero.
    pub fn fraction(&self) -> Option<f64> {
        let (remaining, limit) = (self.remaining?, self.limit?);
        (limit > 0).then(|| (remaining as f64 / limit as f64).min(1.0))
    }

    fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset.is_none()
    }
}

/// What one answer said of its provider's rate limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Headroom {
    /// Each limit the answer stated, in [`Resource::ALL`]'s order.
    pub limits: Vec<(Resource, Limit)>,
    /// The wait the answer asked for (`retry-after-ms`, `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Headroom {
    /// The headroom an answer's headers state, taking times relative to `now` (the
    /// answer's own `Date` when it has one); `None` when they state no limit and no
    /// wait.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use hyper::header::{HeaderMap, HeaderValue};
    /// use loopwatch::llm::headroom::{Headroom, Resource};
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("x-ratelimit-limit-requests", HeaderValue::from_static("500"));
    /// headers.insert("x-ratelimit-remaining-requests", HeaderValue::from_static("20"));
    /// headers.insert("x-ratelimit-reset-requests", HeaderValue::from_static("6m0s"));
    /// let headroom = Headroom::read(&headers, UNIX_EPOCH).unwrap();
    /// let requests = headroom.limit(Resource::Requests).unwrap();
    /// assert_eq!(requests.reset, Some(Duration::from_secs(360)));
    /// assert_eq!(headroom.fraction(), Some(0.04));
    /// ```
    pub fn read(headers: &HeaderMap, now: SystemTime) -> Option<Headroom> {
        // A header is read when it is there once; ask no more of an answer without
        // any of them (most answers of most servers).
        if !headers.keys().any(|name| {
            let name = name.as_str();
            name.starts_with("x-ratelimit-")
                || name.starts_with("anthropic-ratelimit-")
                || name == "retry-after"
                || name == "retry-after-ms"
        }) {
            return None;
        }
        // The answer's own clock, read only for a time it states (Anthropic's resets,
        // a dated Retry-After).
        let mut reference = None;
        let mut now = || {
            *reference.get_or_insert_with(|| {
                one(headers, "date")
                    .and_then(|date| httpdate::parse_http_date(date).ok())
                    .unwrap_or(now)
            })
        };
        let mut limits = Vec::new();
        for resource in Resource::ALL {
            let (openai, [limit_of, remaining_of, reset_of]) = resource.names();
            let mut limit = Limit::default();
            if let Some([limit_of, remaining_of, reset_of]) = openai {
                limit.limit = one(headers, limit_of).and_then(count);
                limit.remaining = one(headers, remaining_of).and_then(count);
                limit.reset = one(headers, reset_of).and_then(|text| match epoch(text) {
                    Some(at) => Some(until(now(), at)),
                    None => go_duration(text),
                });
            }
            limit.limit = limit
                .limit
                .or_else(|| one(headers, limit_of).and_then(count));
            limit.remaining = limit
                .remaining
                .or_else(|| one(headers, remaining_of).and_then(count));
            if limit.reset.is_none() {
                limit.reset = one(headers, reset_of)
                    .and_then(rfc3339)
                    .map(|at| until(now(), at));
            }
            if !limit.is_empty() {
                limits.push((resource, limit));
            }
        }
        let retry_after = wait_asked(headers, &mut now);
        (!limits.is_empty() || retry_after.is_some()).then_some(Headroom {
            limits,
            retry_after,
        })
    }

    /// The figures of one limit, when the answer stated any.
    pub fn limit(&self, resource: Resource) -> Option<&Limit> {
        self.limits
            .iter()
            .find(|(r, _)| *r == resource)
            .map(|(_, limit)| limit)
    }

    /// The least headroom of its limits (remaining over limit, 0 to 1).
    pub fn fraction(&self) -> Option<f64> {
        self.limits
            .iter()
            .filter_map(|(_, limit)| limit.fraction())
            .min_by(f64::total_cmp)
    }

    /// The same, `elapsed` later: each reset that much nearer (none below zero); the
    /// wait asked for stays as it was asked. A call is booked when its answer ends;
    /// its headers came before.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use hyper::header::{HeaderMap, HeaderValue};
    /// use loopwatch::llm::headroom::{Headroom, Resource};
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("x-ratelimit-reset-requests", HeaderValue::from_static("6s"));
    /// let later = Headroom::read(&headers, UNIX_EPOCH).unwrap().aged(Duration::from_secs(4));
    /// assert_eq!(later.limit(Resource::Requests).unwrap().reset, Some(Duration::from_secs(2)));
    /// ```
    pub fn aged(mut self, elapsed: Duration) -> Headroom {
        for (_, limit) in &mut self.limits {
            limit.reset = limit.reset.map(|reset| reset.saturating_sub(elapsed));
        }
        self
    }

    /// The least headroom of the limits that still hold `age` after the answer:
    /// those whose reset has not come (or, stated without a reset, for
    /// [`UNDATED_READING`]). A limit past its reset is whole again.
    pub fn fraction_after(&self, age: Duration) -> Option<f64> {
        self.limits
            .iter()
            .filter(|(_, limit)| age < limit.reset.unwrap_or(UNDATED_READING))
            .filter_map(|(_, limit)| limit.fraction())
            .min_by(f64::total_cmp)
    }
}

impl Headroom {
    /// The last word on each limit once `newer` has come, `elapsed` after `self`:
    /// limit by limit, each figure `newer` states replaces the older one; a figure it
    /// does not state keeps the older one until that limit's reset passes (an older
    /// limit stated without a reset, until [`UNDATED_READING`] after it). So a 429
    /// that carries only a wait, or an answer that states what remains but not the
    /// limit, leaves the limits known before in force. The wait is `newer`'s.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use hyper::header::{HeaderMap, HeaderValue};
    /// use loopwatch::llm::headroom::Headroom;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("x-ratelimit-limit-requests", HeaderValue::from_static("100"));
    /// headers.insert("x-ratelimit-remaining-requests", HeaderValue::from_static("3"));
    /// headers.insert("x-ratelimit-reset-requests", HeaderValue::from_static("20s"));
    /// let low = Headroom::read(&headers, UNIX_EPOCH).unwrap();
    /// let mut wait = HeaderMap::new();
    /// wait.insert("retry-after-ms", HeaderValue::from_static("500"));
    /// let only_a_wait = Headroom::read(&wait, UNIX_EPOCH).unwrap();
    /// let merged = low.merged(&only_a_wait, Duration::from_secs(1));
    /// assert_eq!(merged.fraction_after(Duration::ZERO), Some(0.03));
    /// assert_eq!(merged.retry_after, Some(Duration::from_millis(500)));
    /// ```
    pub fn merged(&self, newer: &Headroom, elapsed: Duration) -> Headroom {
        let mut limits = Vec::new();
        for resource in Resource::ALL {
            // The older figures of this limit, as of the newer answer, while in force.
            let older = self
                .limit(resource)
                .filter(|limit| elapsed < limit.reset.unwrap_or(UNDATED_READING))
                .map(|limit| Limit {
                    reset: Some(
                        limit
                            .reset
                            .unwrap_or(UNDATED_READING)
                            .saturating_sub(elapsed),
                    ),
                    ..*limit
                });
            let merged = match (older, newer.limit(resource)) {
                (None, None) => continue,
                (Some(older), None) => older,
                (None, Some(newer)) => *newer,
                (Some(older), Some(newer)) => Limit {
                    limit: newer.limit.or(older.limit),
                    remaining: newer.remaining.or(older.remaining),
                    reset: newer.reset.or(older.reset),
                },
            };
            limits.push((resource, merged));
        }
        Headroom {
            limits,
            retry_after: newer.retry_after,
        }
    }
}

/// The wait an answer asks for: `retry-after-ms` (milliseconds, as the openai and
/// anthropic SDKs read it first), else `Retry-After` in seconds or as an HTTP date
/// (relative to `now`); at most [`MAX_WAIT`].
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use hyper::header::{HeaderMap, HeaderValue};
/// use loopwatch::llm::headroom::retry_after;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", HeaderValue::from_static("Thu, 01 Jan 1970 00:00:30 GMT"));
/// assert_eq!(retry_after(&headers, UNIX_EPOCH), Some(Duration::from_secs(30)));
/// headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
/// assert_eq!(retry_after(&headers, UNIX_EPOCH), Some(Duration::from_millis(1500)));
/// ```
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    wait_asked(headers, &mut || now)
}

/// [`retry_after`], its reference time asked for only for an HTTP date.
fn wait_asked(headers: &HeaderMap, now: &mut impl FnMut() -> SystemTime) -> Option<Duration> {
    if let Some(ms) = one(headers, "retry-after-ms").and_then(seconds_of) {
        return Some(capped(ms / 1000.0));
    }
    let text = one(headers, "retry-after")?;
    match seconds_of(text) {
        Some(seconds) => Some(capped(seconds)),
        None => httpdate::parse_http_date(text)
            .ok()
            .map(|at| until(now(), at)),
    }
}

/// The header's value when it is there once, as text.
fn one<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let value: &HeaderValue = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok().map(str::trim)
}

/// A count: a whole number, or a number with a fraction (rounded down).
fn count(text: &str) -> Option<u64> {
    if let Ok(n) = text.parse::<u64>() {
        return Some(n);
    }
    let n: f64 = text.parse().ok()?;
    (n.is_finite() && n >= 0.0 && n < u64::MAX as f64).then_some(n as u64)
}

/// A finite number of zero or more.
fn seconds_of(text: &str) -> Option<f64> {
    let n: f64 = text.parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some(n)
}

fn capped(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.min(MAX_WAIT.as_secs_f64()))
}

/// From `now` to `at`; zero when `at` has passed; at most [`MAX_WAIT`].
fn until(now: SystemTime, at: SystemTime) -> Duration {
    at.duration_since(now)
        .unwrap_or(Duration::ZERO)
        .min(MAX_WAIT)
}

/// Bare numbers above this are not a number of seconds to wait (over 31 years) but
/// a time: seconds since the epoch, as some servers write their resets.
const EPOCH_SECONDS: f64 = 1e9;
/// Bare numbers above this are milliseconds since the epoch.
const EPOCH_MILLIS: f64 = 1e12;

/// A reset written as a time since the epoch (a bare number above [`EPOCH_SECONDS`],
/// in milliseconds above [`EPOCH_MILLIS`]).
fn epoch(text: &str) -> Option<SystemTime> {
    let n = seconds_of(text.trim())?;
    let seconds = if n > EPOCH_MILLIS {
        n / 1000.0
    } else if n > EPOCH_SECONDS {
        n
    } else {
        return None;
    };
    // Beyond any clock: left out.
    (seconds < 1e13)
        .then(|| UNIX_EPOCH.checked_add(Duration::from_secs_f64(seconds)))
        .flatten()
}

/// A Go-style duration as OpenAI writes its resets: numbers, each with a unit
/// (`h`, `m`, `s`, `ms`, `us`, `µs`, `ns`, and `d`), one after another (`1h2m3.5s`,
/// `6m0s`, `20ms`); or a bare number of seconds, up to 1e9 (a larger one is a time,
/// not a duration, and is left out). At most [`MAX_WAIT`].
///
/// ```
/// use std::time::Duration;
/// use loopwatch::llm::headroom::go_duration;
/// assert_eq!(go_duration("6m0s"), Some(Duration::from_secs(360)));
/// assert_eq!(go_duration("20ms"), Some(Duration::from_millis(20)));
/// assert_eq!(go_duration("1h2m3.5s"), Some(Duration::from_secs_f64(3723.5)));
/// assert_eq!(go_duration("7"), Some(Duration::from_secs(7)));
/// assert_eq!(go_duration("1714560000"), None, "a time, not a duration");
/// assert_eq!(go_duration("soon"), None);
/// assert_eq!(go_duration("-1s"), None);
/// ```
pub fn go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Some(seconds) = seconds_of(text) {
        return (seconds <= EPOCH_SECONDS).then(|| capped(seconds));
    }
    let mut rest = text;
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * seconds;
    }
    (total.is_finite() && total >= 0.0 && !text.is_empty()).then(|| capped(total))
}

/// An RFC 3339 time (`2025-05-01T12:00:30Z`, `2025-05-01T12:00:30.5+02:00`), as
/// Anthropic writes its resets.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use loopwatch::llm::headroom::rfc3339;
/// assert_eq!(rfc3339("1970-01-01T00:01:00Z"), Some(UNIX_EPOCH + Duration::from_secs(60)));
/// assert_eq!(rfc3339("1970-01-01T02:00:00.5+01:00"), Some(UNIX_EPOCH + Duration::from_secs_f64(3600.5)));
/// assert_eq!(rfc3339("tomorrow"), None);
/// ```
pub fn rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.trim().as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let at = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !((1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second <= 60)
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if at(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        for (n, d) in b[start..i.min(start + 9)].iter().enumerate() {
            nanos += u32::from(d - b'0') * 10u32.pow(8 - n as u32);
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && at(i + 3, b":") => {
            let minutes = digits(i + 1, 2)? * 60 + digits(i + 4, 2)?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let seconds = u64::try_from(seconds).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn openai_headers_are_read_with_their_go_durations() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-requests", "9999"),
            ("x-ratelimit-reset-requests", "6ms"),
            ("x-ratelimit-limit-tokens", "30000000"),
            ("x-ratelimit-remaining-tokens", "29999000"),
            ("x-ratelimit-reset-tokens", "2m59.56s"),
        ]);
        let read = Headroom::read(&h, UNIX_EPOCH).unwrap();
        let requests = read.limit(Resource::Requests).unwrap();
        assert_eq!(
            (requests.limit, requests.remaining, requests.reset),
            (Some(10_000), Some(9_999), Some(Duration::from_millis(6)))
        );
        let tokens = read.limit(Resource::Tokens).unwrap();
        assert_eq!(tokens.reset, Some(Duration::from_secs_f64(179.56)));
        assert_eq!(read.fraction(), Some(9_999.0 / 10_000.0));
        assert_eq!(read.retry_after, None);
        assert!(read.limit(Resource::InputTokens).is_none());
    }

    #[test]
    fn anthropic_headers_are_read_against_the_answers_own_date() {
        let h = headers(&[
            ("date", "Thu, 01 May 2025 12:00:00 GMT"),
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "5"),
            ("anthropic-ratelimit-requests-reset", "2025-05-01T12:00:30Z"),
            ("anthropic-ratelimit-tokens-limit", "40000"),
            ("anthropic-ratelimit-tokens-remaining", "38000"),
            ("anthropic-ratelimit-tokens-reset", "2025-05-01T12:00:01.5Z"),
            ("anthropic-ratelimit-input-tokens-limit", "30000"),
            ("anthropic-ratelimit-input-tokens-remaining", "29000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2025-05-01T11:59:00Z",
            ),
            ("anthropic-ratelimit-output-tokens-limit", "8000"),
            ("anthropic-ratelimit-output-tokens-remaining", "7000"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2025-05-01T14:00:06+02:00",
            ),
            ("retry-after", "3"),
        ]);
        // This host's clock is far off; the answer's Date is the provider's.
        let read = Headroom::read(&h, UNIX_EPOCH).unwrap();
        let reset = |r| read.limit(r).unwrap().reset;
        assert_eq!(reset(Resource::Requests), Some(Duration::from_secs(30)));
        assert_eq!(reset(Resource::Tokens), Some(Duration::from_millis(1500)));
        assert_eq!(reset(Resource::InputTokens), Some(Duration::ZERO), "past");
        assert_eq!(reset(Resource::OutputTokens), Some(Duration::from_secs(6)));
        assert_eq!(read.fraction(), Some(0.1));
        assert_eq!(read.retry_after, Some(Duration::from_secs(3)));
        // A limit past its reset is whole again; without a reset, for a minute.
        assert_eq!(read.fraction_after(Duration::from_secs(29)), Some(0.1));
        assert_eq!(
            read.fraction_after(Duration::from_secs(31)),
            None,
            "every limit has reset"
        );
    }

    #[test]
    fn waits_come_from_retry_after_ms_then_seconds_or_a_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for (pairs, expected) in [
            (&[("retry-after", "2")][..], Some(Duration::from_secs(2))),
            (&[("retry-after", "0.5")], Some(Duration::from_millis(500))),
            (
                &[("retry-after", "2"), ("retry-after-ms", "250")],
                Some(Duration::from_millis(250)),
            ),
            (
                &[("retry-after", "Mon, 12 Jan 1970 13:46:50 GMT")],
                Some(Duration::from_secs(10)),
            ),
            (
                &[("retry-after", "Thu, 01 Jan 1970 00:00:00 GMT")],
                Some(Duration::ZERO),
            ),
            (&[("retry-after", "-3")], None),
            (&[("retry-after", "soon")], None),
            (&[("retry-after", "1"), ("retry-after", "2")], None),
            (&[("retry-after", "1e300")], Some(MAX_WAIT)),
        ] {
            assert_eq!(retry_after(&headers(pairs), now), expected, "{pairs:?}");
        }
    }

    #[test]
    fn garbage_is_left_out_never_guessed() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "many"),
            ("x-ratelimit-remaining-requests", "-1"),
            ("x-ratelimit-reset-requests", "1fortnight"),
            ("x-ratelimit-limit-tokens", "1000"),
            ("x-ratelimit-limit-tokens", "2000"),
            ("x-ratelimit-remaining-tokens", "1e3"),
            ("anthropic-ratelimit-requests-reset", "2025-13-01T00:00:00Z"),
        ]);
        let read = Headroom::read(&h, UNIX_EPOCH).unwrap();
        assert!(read.limit(Resource::Requests).is_none());
        let tokens = read.limit(Resource::Tokens).unwrap();
        assert_eq!((tokens.limit, tokens.remaining), (None, Some(1000)));
        assert_eq!(read.fraction(), None);
        assert_eq!(
            Headroom::read(&headers(&[("content-type", "x")]), UNIX_EPOCH),
            None
        );
        assert_eq!(
            Headroom::read(
                &headers(&[
                    ("x-ratelimit-limit-requests", "0"),
                    ("x-ratelimit-remaining-requests", "0")
                ]),
                UNIX_EPOCH
            )
            .unwrap()
            .fraction(),
            None,
            "a limit of zero has no fraction"
        );
    }

    /// A bare number that is a time since the epoch (in seconds or milliseconds) is
    /// read as one, against the answer's Date, never as decades capped to a week.
    #[test]
    fn epoch_resets_are_times_not_durations() {
        let date = "Wed, 01 May 2024 10:40:00 GMT"; // 1714560000
        for (reset, expected) in [
            ("1714560030", Some(Duration::from_secs(30))),
            ("1714560001500", Some(Duration::from_millis(1500))),
            ("1714559000", Some(Duration::ZERO)),
            ("1714560030.5", Some(Duration::from_secs_f64(30.5))),
            ("30", Some(Duration::from_secs(30))),
            ("1e300", None),
        ] {
            let h = headers(&[
                ("date", date),
                ("x-ratelimit-limit-requests", "100"),
                ("x-ratelimit-remaining-requests", "1"),
                ("x-ratelimit-reset-requests", reset),
            ]);
            let read = Headroom::read(&h, UNIX_EPOCH).unwrap();
            assert_eq!(
                read.limit(Resource::Requests).unwrap().reset,
                expected,
                "{reset}"
            );
        }
        // Without a Date, against this host's clock.
        let h = headers(&[("x-ratelimit-reset-tokens", "1714560060")]);
        let now = UNIX_EPOCH + Duration::from_secs(1_714_560_000);
        let read = Headroom::read(&h, now).unwrap();
        assert_eq!(
            read.limit(Resource::Tokens).unwrap().reset,
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn rfc3339_times_are_read_exactly() {
        for (text, seconds) in [
            ("1970-01-01T00:00:00Z", Some(0.0)),
            ("2000-02-29T23:59:59Z", Some(951_868_799.0)),
            (
                "2025-05-01t12:00:30.123456789z",
                Some(1_746_100_830.123_457),
            ),
            ("2025-05-01 12:00:30-00:30", Some(1_746_102_630.0)),
            ("1969-12-31T23:59:59Z", None),
            ("2025-05-01T12:00:30", None),
            ("2025-05-01T24:00:00Z", None),
            ("2025-05-01T12:00:30.Z", None),
            ("2025-05-01T12:00:30+0100", None),
            ("", None),
        ] {
            let read = rfc3339(text).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64());
            match (read, seconds) {
                (Some(a), Some(b)) => assert!((a - b).abs() < 1e-6, "{text}: {a} {b}"),
                (a, b) => assert_eq!(a, b, "{text}"),
            }
        }
    }

    proptest::proptest! {
        /// Any bytes in any of the headers, any clock: never a panic, and whatever is
        /// read is in range.
        #[test]
        fn any_header_values_never_panic(
            values in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 1..24),
            now in proptest::num::u64::ANY,
        ) {
            let names = [
                "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
                "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
                "anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-reset",
                "anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-output-tokens-limit",
                "retry-after", "retry-after-ms", "date",
            ];
            let mut h = HeaderMap::new();
            for (i, value) in values.iter().enumerate() {
                if let Ok(value) = HeaderValue::from_bytes(value) {
                    h.append(names[i % names.len()], value);
                }
            }
            let now = UNIX_EPOCH + Duration::from_secs(now % (400 * 365 * 86_400));
            if let Some(read) = Headroom::read(&h, now) {
                for (_, limit) in &read.limits {
                    proptest::prop_assert!(limit.reset.is_none_or(|r| r <= MAX_WAIT));
                    proptest::prop_assert!(limit.fraction().is_none_or(|f| (0.0..=1.0).contains(&f)));
                }
                proptest::prop_assert!(read.retry_after.is_none_or(|r| r <= MAX_WAIT));
            }
        }

        /// Text shaped like the durations and times the providers write, and near
        /// misses of it: never a panic.
        #[test]
        fn durations_and_times_of_any_shape_never_panic(text in "[0-9.:TZz+ µmsnhud-]{0,32}") {
            if let Some(d) = go_duration(&text) {
                proptest::prop_assert!(d <= MAX_WAIT);
            }
            let _ = rfc3339(&text);
            let _ = count(&text);
        }
    }
}
