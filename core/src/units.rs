//! Human-written quantities in files: durations (`30s`, `1.5m`, `250ms`) and
//! byte sizes (`64MiB`, `10MB`, or a plain number of bytes).

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration as StdDuration;

/// A duration written as a number with a unit: `ms`, `s`, `m`, `h`, `d`; a
/// bare number is seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[schemars(
    with = "String",
    description = "A duration such as `500ms`, `30s`, `5m`, `1h`; a bare number is seconds."
)]
pub struct Duration(pub StdDuration);

impl Duration {
    /// Parses `30s`, `250ms`, `1.5m`, `2h`, `1d` or `45`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{text}` is not a duration; write it like `500ms`, `30s`, `5m` or `1h`"))?;
        let secs = match unit.trim() {
            "" | "s" | "sec" | "secs" => value,
            "ms" => value / 1000.0,
            "m" | "min" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86400.0,
            other => return Err(format!("`{other}` is not a duration unit; use ms, s, m, h or d")),
        };
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("`{text}` is not a duration"));
        }
        // A deadline that far is no deadline, and past what clocks can add.
        const YEAR: f64 = 365.0 * 86400.0;
        if secs > YEAR {
            return Err(format!(
                "`{text}` is longer than a year, the longest duration flow takes"
            ));
        }
        Ok(Duration(StdDuration::from_secs_f64(secs)))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_yaml::Value::deserialize(d)?;
        let text = match v {
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::String(s) => s,
            _ => return Err(serde::de::Error::custom("expected a duration such as `30s`")),
        };
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

/// A size in bytes: `64MiB`, `512KiB`, `10MB` or a plain number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[schemars(
    with = "String",
    description = "A size such as `64MiB`, `512KiB` or a number of bytes."
)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `64MiB`, `1GB`, `4096`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{text}` is not a size; write it like `64MiB`"))?;
        let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "kib" => 1024.0,
            "m" | "mb" => 1e6,
            "mib" => 1024.0 * 1024.0,
            "g" | "gb" => 1e9,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            _ => return Err(format!("`{}` is not a size unit; use KiB, MiB or GiB", unit.trim())),
        };
        let bytes = value * factor;
        // (Also what `as` would quietly cut to the largest u64.)
        if !bytes.is_finite() || bytes > 1e15 {
            return Err(format!("`{text}` is larger than flow takes (at most 1 PB)"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_yaml::Value::deserialize(d)?;
        let text = match v {
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::String(s) => s,
            _ => return Err(serde::de::Error::custom("expected a size such as `64MiB`")),
        };
        ByteSize::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("30s").unwrap().0, StdDuration::from_secs(30));
        assert_eq!(Duration::parse("250ms").unwrap().0, StdDuration::from_millis(250));
        assert_eq!(Duration::parse("1.5m").unwrap().0, StdDuration::from_secs(90));
        assert_eq!(Duration::parse("2").unwrap().0, StdDuration::from_secs(2));
        assert!(Duration::parse("soon").is_err());
        assert!(Duration::parse("5 weeks").is_err());
        assert_eq!(Duration::parse("365d").unwrap().0, StdDuration::from_secs(365 * 86400));
        for huge in ["99999999999999999999s", "9999999999999999h", "366d", "1e400"] {
            assert!(Duration::parse(huge).is_err(), "{huge}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("64MiB").unwrap().0, 64 * 1024 * 1024);
        assert_eq!(ByteSize::parse("10kb").unwrap().0, 10_000);
        assert_eq!(
            ByteSize::parse("9TiB").unwrap_err(),
            "`TiB` is not a size unit; use KiB, MiB or GiB"
        );
        assert!(ByteSize::parse("99999999999999999999GiB").is_err());
        assert_eq!(ByteSize::parse("4096").unwrap().0, 4096);
        assert!(ByteSize::parse("lots").is_err());
    }
}
