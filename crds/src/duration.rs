//! Durations as people write them, in flags and in manifests alike: `500us`,
//! `250ms`, `90s`, `5m`, `24h`, `90d`. One grammar: the flags of every role,
//! the catalog's validation (a WebhookSource's `tolerance`) and the webhook
//! receiver all parse with [`parse`], so what `aforo apply` accepts is what
//! the receiver reads, and the CRD's pattern ([`PATTERN`]) says the same.

use std::time::Duration;

/// The grammar as a regular expression, for the CRD schema.
pub const PATTERN: &str = r"^[0-9]+(us|ms|s|m|h|d)$";

/// Parses `<integer><unit>` with unit one of us, ms, s, m, h, d.
pub fn parse(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit; write e.g. 5m, 24h or 90d"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let seconds = match unit {
        "us" => return Ok(Duration::from_micros(n)),
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use us, ms, s, m, h or d"
            ));
        }
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse("90d").unwrap(), Duration::from_secs(90 * 86_400));
    }

    #[test]
    fn says_what_is_wrong() {
        assert!(parse("5").unwrap_err().contains("no unit"));
        assert!(parse(" 5m").unwrap_err().contains("whole number"));
        assert!(parse("1h30m").unwrap_err().contains("unknown unit"));
        assert!(parse("5y").unwrap_err().contains("unknown unit"));
        assert!(parse("m").unwrap_err().contains("whole number"));
    }
}
