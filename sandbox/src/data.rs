//! A deterministic data set: the same seed gives the same names, phones and
//! dates on every machine.

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

/// What a PHP server signs: `http_build_query(ksort($params))` of the
/// parameters as received, `sign` left out. `ksort` sorts top-level names
/// only; keys under one name (`site[url]`, `site[name]`) keep wire order.
pub fn php_signed_query(pairs: &[(String, String)]) -> String {
    let mut kept: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| k != "sign").collect();
    kept.sort_by(|a, b| a.0.split('[').next().cmp(&b.0.split('[').next()));
    kept.iter()
        .map(|(k, v)| format!("{}={}", php_urlencode(k), php_urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}
