//! A deterministic data set: the same seed gives the same names, phones and
//! dates on every machine; and the helpers several simulators share: dates
//! read and written strictly, md5, PHP's form encoding.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Utc};
use serde_json::{Map, Value};

/// A small, fast, seeded generator (xorshift64*); good enough for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for a seed and a stream name, so that each provider's
    /// data does not depend on the others'.
    pub fn new(seed: u64, stream: &str) -> Self {
        let mut h = seed ^ 0x9E37_79B9_7F4A_7C15;
        for b in stream.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01B3);
        }
        Rng(h | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// One of the items.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Анна",
    "Иван",
    "Ольга",
    "Дмитрий",
    "Мария",
    "Сергей",
    "Елена",
    "Алексей",
    "Наталья",
    "Павел",
];
const LAST: &[&str] = &[
    "Смирнов",
    "Петров",
    "Кузнецов",
    "Соколов",
    "Попов",
    "Лебедев",
    "Козлов",
    "Новиков",
    "Морозов",
    "Волков",
];
const COMPANIES: &[&str] = &[
    "ООО Ромашка",
    "ИП Петров",
    "Альфа",
    "Бета Групп",
    "Гамма",
    "Дельта",
    "СтройМир",
    "ТехноПарк",
];

/// A person's name.
pub fn name(r: &mut Rng) -> String {
    format!("{} {}", r.pick(FIRST), r.pick(LAST))
}

/// A company name.
pub fn company(r: &mut Rng) -> String {
    r.pick(COMPANIES).to_owned()
}

/// A Russian mobile number, `+79XXXXXXXXX`.
pub fn phone(r: &mut Rng) -> String {
    format!("+79{:09}", r.below(1_000_000_000))
}

/// A public-looking IPv4 address.
pub fn ip(r: &mut Rng) -> String {
    format!(
        "{}.{}.{}.{}",
        5 + r.below(200),
        r.below(256),
        r.below(256),
        1 + r.below(254)
    )
}

/// The phone of client number `n` of the shared client pool. The
/// simulators draw their clients' phones from it, so the same person shows
/// up in several systems (a Pozvonim call, an EyeNewton call request and a
/// solOS project), as one agency's clients do.
pub fn client_phone(n: usize) -> String {
    // splitmix64: distinct, well-spread numbers for consecutive `n`.
    let mut z = (n as u64).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!("+79{:09}", z % 1_000_000_000)
}

/// A date-time in 2024 as `YYYY-MM-DD HH:MM:SS`, increasing with `i`.
pub fn datetime(i: usize) -> String {
    let minutes = i as u64 * 97;
    let day = 1 + (minutes / 1440) % 28;
    let month = 1 + (minutes / (1440 * 28)) % 12;
    format!(
        "2024-{month:02}-{day:02} {:02}:{:02}:00",
        (minutes / 60) % 24,
        minutes % 60
    )
}

/// The date part of [`datetime`].
pub fn date(i: usize) -> String {
    datetime(i)[..10].to_owned()
}

/// The day of `YYYY-MM-DD`, zero-padded, if that day exists: `2024-02-29`,
/// not `2023-02-29` nor `2024-2-29` (which chrono alone would take).
pub fn ymd(s: &str) -> Option<NaiveDate> {
    if !shaped(s, "9999-99-99") {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// The time of `HH:MM:SS`, zero-padded, from `00:00:00` to `23:59:59`.
pub fn hms(s: &str) -> Option<NaiveTime> {
    if !shaped(s, "99:99:99") {
        return None;
    }
    // Not `parse_from_str`: it takes `23:59:60` as a leap second.
    let n = |at: usize| s.get(at..at + 2)?.parse().ok();
    NaiveTime::from_hms_opt(n(0)?, n(3)?, n(6)?)
}

/// Whether `s` has the form of `shape` byte for byte, a `9` of the shape
/// standing for any ASCII digit.
fn shaped(s: &str, shape: &str) -> bool {
    s.len() == shape.len()
        && s.bytes().zip(shape.bytes()).all(|(c, want)| match want {
            b'9' => c.is_ascii_digit(),
            _ => c == want,
        })
}

/// `YYYY-MM-DD` or `YYYY-MM-DD HH:MM:SS`, of a day and time that exist.
pub fn valid_date_or_datetime(s: &str) -> bool {
    match s.len() {
        10 => ymd(s).is_some(),
        19 => s.get(10..11) == Some(" ") && s.get(..10).and_then(ymd).is_some() && s.get(11..).and_then(hms).is_some(),
        _ => false,
    }
}

/// A date or date-time (see [`valid_date_or_datetime`]) as a range bound,
/// `YYYY-MM-DD HH:MM:SS`: a bare date covers its whole day, `end` saying
/// which end is wanted.
pub fn range_bound(s: &str, end: bool) -> String {
    match (s.len(), end) {
        (10, false) => format!("{s} 00:00:00"),
        (10, true) => format!("{s} 23:59:59"),
        _ => s.to_owned(),
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    Utc::now().timestamp()
}

/// `YYYY-MM-DD HH:MM:SS` of a Unix time taken as UTC (add a zone's offset
/// first for that zone's wall clock). The year is written as `{:04}` writes
/// it (`10000`, `-001`), not as chrono's `%Y` does (`+10000`, `-0001`).
/// Empty past chrono's range (some 262,000 years either way), which no
/// caller reaches.
pub fn format_unix(unix: i64) -> String {
    let Some(t) = DateTime::from_timestamp(unix, 0) else {
        return String::new();
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// md5 as lower-case hex.
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// PHP's `urlencode`.
pub fn php_urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes `application/x-www-form-urlencoded` (or a query string) into
/// pairs in wire order, as PHP reads them.
pub fn form_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| {
                std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .flatten();
        match (bytes[i], hex) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a PHP server signs: it reads the parameters into arrays as
/// `parse_str` does (a key's later values replace earlier ones; `a[b][c]`
/// nests, keeping each key where it first appeared; `a[]` appends), leaves
/// out `sign`, sorts the top level (`ksort`) and writes the arrays back with
/// `http_build_query`.
pub fn php_signed_query(pairs: &[(String, String)]) -> String {
    let mut arrays = Map::new();
    for (key, value) in pairs {
        let (name, mut rest) = key.find('[').map_or((key.as_str(), ""), |i| key.split_at(i));
        let mut path = vec![name];
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(close) = inner.find(']') else { break };
            path.push(&inner[..close]);
            rest = &inner[close + 1..];
        }
        php_set(&mut arrays, &path, value);
    }
    arrays.remove("sign");
    let mut top: Vec<(String, Value)> = arrays.into_iter().collect();
    top.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (name, value) in &top {
        php_write(name, value, &mut out);
    }
    out.join("&")
}

/// Puts `value` at `path` in PHP's arrays (objects here, in key order).
fn php_set(level: &mut Map<String, Value>, path: &[&str], value: &str) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let name = if first.is_empty() {
        // Appended: one past the largest whole-number key.
        let next = level
            .keys()
            .filter_map(|k| k.parse::<u64>().ok().filter(|n| n.to_string() == *k))
            .max()
            .map_or(0, |n| n + 1);
        next.to_string()
    } else {
        (*first).to_owned()
    };
    if rest.is_empty() {
        level.insert(name, Value::String(value.to_owned()));
        return;
    }
    let slot = level.entry(name).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    if let Value::Object(inner) = slot {
        php_set(inner, rest, value);
    }
}

/// `http_build_query` of one top-level array entry.
fn php_write(key: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                php_write(&format!("{key}[{k}]"), v, out);
            }
        }
        Value::String(s) => out.push(format!("{}={}", php_urlencode(key), php_urlencode(s))),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_query_is_what_php_rebuilds_from_the_request() {
        // Checked against PHP 8.2: parse_str, unset sign, ksort,
        // http_build_query.
        let wire = "widget[schelude][saturday][enable]=0&sign=x&site[url]=u&widget[mobile_enable]=1\
                    &widget[schelude][monday][from]=9&widget[schelude][saturday][from]=10\
                    &managers[0][phone]=%2B7&ids[]=1&ids[]=2&widget[algoritms][onenter][time]=30&uid=5&ids[0]=3";
        assert_eq!(
            php_signed_query(&form_pairs(wire)),
            "ids%5B0%5D=3&ids%5B1%5D=2&managers%5B0%5D%5Bphone%5D=%2B7&site%5Burl%5D=u&uid=5\
             &widget%5Bschelude%5D%5Bsaturday%5D%5Benable%5D=0&widget%5Bschelude%5D%5Bsaturday%5D%5Bfrom%5D=10\
             &widget%5Bschelude%5D%5Bmonday%5D%5Bfrom%5D=9&widget%5Bmobile_enable%5D=1\
             &widget%5Balgoritms%5D%5Bonenter%5D%5Btime%5D=30"
        );
    }

    #[test]
    fn dates_are_real_days_written_in_full() {
        assert!(ymd("2024-02-29").is_some());
        assert!(ymd("0000-02-29").is_some());
        for bad in [
            "2023-02-29",
            "2024-02-30",
            "2024-04-31",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
        ] {
            assert_eq!(ymd(bad), None, "{bad}");
        }
        for bad in [
            "2024-1-5",
            "2024-01-5",
            "+024-01-05",
            "2024/01/05",
            "2024-01-05 ",
            "20240-1-05",
        ] {
            assert_eq!(ymd(bad), None, "{bad}");
        }
        assert!(hms("00:00:00").is_some() && hms("23:59:59").is_some());
        for bad in ["24:00:00", "23:60:00", "23:59:60", "9:00:00", "09:00", "09-00-00"] {
            assert_eq!(hms(bad), None, "{bad}");
        }
        assert!(valid_date_or_datetime("2024-02-29"));
        assert!(valid_date_or_datetime("2024-02-29 23:59:59"));
        assert!(!valid_date_or_datetime("2024-02-29T23:59:59"));
        assert!(!valid_date_or_datetime("2023-02-29 10:00:00"));
        assert!(!valid_date_or_datetime("2024-02-2é 10:00:00"));
        assert_eq!(range_bound("2024-02-29", false), "2024-02-29 00:00:00");
        assert_eq!(range_bound("2024-02-29", true), "2024-02-29 23:59:59");
        assert_eq!(range_bound("2024-02-29 10:00:00", true), "2024-02-29 10:00:00");
    }

    #[test]
    fn unix_times_print_as_utc_wall_clock() {
        assert_eq!(format_unix(0), "1970-01-01 00:00:00");
        assert_eq!(format_unix(-1), "1969-12-31 23:59:59");
        assert_eq!(format_unix(1_709_251_199), "2024-02-29 23:59:59");
        assert_eq!(format_unix(253_402_300_800), "10000-01-01 00:00:00");
        assert_eq!(format_unix(-62_167_219_201), "-001-12-31 23:59:59");
        assert_eq!(format_unix(i64::MAX), "");
        assert!(unix_now() > 1_700_000_000);
    }
}
