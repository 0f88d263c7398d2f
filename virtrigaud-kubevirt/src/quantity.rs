//! Kubernetes resource quantities (`"2Gi"`, `"1536Mi"`, `"1G"`) ↔ MiB.

use virtrigaud_core::model::Quantity;

/// Parses a quantity into MiB (rounded up) with core's exact [`Quantity`] parser. `None` for
/// malformed input.
pub(crate) fn quantity_to_mib(q: &str) -> Option<u64> {
    let q: Quantity = q.parse().ok()?;
    Some(q.bytes().div_ceil(1 << 20))
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
        // Exact, with every suffix core accepts.
        assert_eq!(quantity_to_mib("1Ei"), Some(1 << 40));
        assert_eq!(quantity_to_mib("16384001Ki"), Some(16001));
        assert_eq!(mib_to_quantity(2048), "2Gi");
        assert_eq!(mib_to_quantity(1536), "1536Mi");
    }
}
