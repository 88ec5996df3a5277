//! Kubernetes resource quantities ("250m", "1.5", "512Mi", "1e3") to and from the plain
//! numbers plans carry: CPU in millicores, memory in bytes.
//!
//! In: quantity strings as the API server stores them. Out: whole millicores or bytes,
//! rounded to the nearest unit, and canonical strings for the values a plan sets. Hand
//! written because k8s-openapi keeps `Quantity` as an opaque string and no well-kept
//! crate parses it; the grammar is the API server's (decimal and binary SI suffixes,
//! decimal exponents).

/// What is wrong with a quantity string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Kubernetes quantity: {0:?}")]
pub struct BadQuantity(pub String);

/// The value of a quantity in its base unit (cores, bytes).
pub fn parse(text: &str) -> Result<f64, BadQuantity> {
    let bad = || BadQuantity(text.to_owned());
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => {
            let digits = exponent.strip_prefix(['e', 'E']).ok_or_else(bad)?;
            10f64.powi(digits.parse::<i32>().map_err(|_| bad())?)
        }
    };
    let value = value * scale;
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(bad())
    }
}

/// A CPU quantity in whole millicores.
pub fn cpu_millis(text: &str) -> Result<u64, BadQuantity> {
    parse(text).map(|cores| (cores * 1000.0).round() as u64)
}

/// A memory quantity in whole bytes.
pub fn memory_bytes(text: &str) -> Result<u64, BadQuantity> {
    parse(text).map(|bytes| bytes.round() as u64)
}

/// Millicores as the API server would print them.
pub fn format_cpu(millis: u64) -> String {
    format!("{millis}m")
}

/// Bytes in the largest binary unit that divides them exactly, so manifests stay legible.
pub fn format_memory(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    for (suffix, unit) in UNITS {
        if bytes != 0 && bytes % unit == 0 {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_api_servers_forms() {
        assert_eq!(cpu_millis("250m"), Ok(250));
        assert_eq!(cpu_millis("1.5"), Ok(1500));
        assert_eq!(cpu_millis("2"), Ok(2000));
        assert_eq!(cpu_millis("0.1"), Ok(100));
        assert_eq!(memory_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(memory_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(memory_bytes("1e3"), Ok(1000));
        assert_eq!(memory_bytes("128974848"), Ok(128_974_848));
    }

    #[test]
    fn rejects_what_is_not_a_quantity() {
        for text in ["", "abc", "12Q", "-1", "1e", "Mi"] {
            assert!(parse(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_cpu(1250), "1250m");
        assert_eq!(format_memory(589 << 20), "589Mi");
        assert_eq!(format_memory(2 << 30), "2Gi");
        assert_eq!(format_memory(1000), "1000");
        for bytes in [1000u64, 589 << 20, 3 << 30, 12345] {
            assert_eq!(memory_bytes(&format_memory(bytes)), Ok(bytes));
        }
    }
}
