//! Kubernetes resource quantities (`"2Gi"`, `"1536Mi"`, `"1G"`) ↔ MiB.

/// Parses a quantity into MiB (rounded up). `None` for malformed input.
pub(crate) fn quantity_to_mib(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        _ => return None,
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes < 0.0 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some((bytes / (1024.0 * 1024.0)).ceil() as u64)
}

/// Formats MiB as a quantity (`Gi` when whole, else `Mi`).
pub(crate) fn mib_to_quantity(mib: u64) -> String {
    if mib.is_multiple_of(1024) {
        format!("{}Gi", mib / 1024)
    } else {
        format!("{mib}Mi")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_and_decimal_suffixes() {
        assert_eq!(quantity_to_mib("2Gi"), Some(2048));
        assert_eq!(quantity_to_mib("1536Mi"), Some(1536));
        assert_eq!(quantity_to_mib("1G"), Some(954));
        assert_eq!(quantity_to_mib("1048576"), Some(1));
        assert_eq!(quantity_to_mib("1.5Gi"), Some(1536));
        assert_eq!(quantity_to_mib("x"), None);
        assert_eq!(quantity_to_mib("1Xi"), None);
        assert_eq!(mib_to_quantity(2048), "2Gi");
        assert_eq!(mib_to_quantity(1536), "1536Mi");
    }
}
