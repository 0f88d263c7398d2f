//! Number formatting for the report, shared by every comparison (a leaf: it uses nothing
//! else of the harness).

use std::time::Duration;

/// Milliseconds with one decimal (`226.4`).
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// [`ms`], or `n/a`.
pub(crate) fn opt_ms(d: Option<Duration>) -> String {
    d.map(ms).unwrap_or_else(|| "n/a".into())
}

/// Seconds with two decimals (`10.23`), or `—`.
pub(crate) fn opt_secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2}", d.as_secs_f64()))
        .unwrap_or_else(|| "—".into())
}

/// Nearest-rank percentile `p` (0-100) of `v`.
pub(crate) fn pct(v: &[Duration], p: f64) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// `p50 / max` in ms, or `—`.
pub(crate) fn p50_max(v: &[Duration]) -> String {
    match (pct(v, 50.0), v.iter().max()) {
        (Some(a), Some(b)) => format!("{} / {}", ms(a), ms(*b)),
        _ => "—".into(),
    }
}

/// p50 and p99 of a method's total times and of its detection times.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stats {
    pub total_p50: Option<Duration>,
    pub total_p99: Option<Duration>,
    pub detect_p50: Option<Duration>,
    pub detect_p99: Option<Duration>,
    /// How many samples have a detection time.
    pub detected: usize,
}

/// [`Stats`] of `total` and `detect`.
pub(crate) fn stats(total: &[Duration], detect: &[Duration]) -> Stats {
    Stats {
        total_p50: pct(total, 50.0),
        total_p99: pct(total, 99.0),
        detect_p50: pct(detect, 50.0),
        detect_p99: pct(detect, 99.0),
        detected: detect.len(),
    }
}

/// `b / a` as `12×`, or `n/a`.
pub(crate) fn ratio(a: Option<Duration>, b: Option<Duration>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if !a.is_zero() => format!("{:.0}×", b.as_secs_f64() / a.as_secs_f64()),
        _ => "n/a".into(),
    }
}

/// A target's verdict: `met` or `NOT met`.
pub(crate) fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmt_percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(pct(&v, 50.0), Some(Duration::from_millis(5)));
        assert_eq!(pct(&v, 99.0), Some(Duration::from_millis(10)));
        assert_eq!(pct(&[], 50.0), None);
        assert_eq!(p50_max(&v), "5.0 / 10.0");
        assert_eq!(p50_max(&[]), "—");
    }

    #[test]
    fn fmt_numbers() {
        let d = Duration::from_micros(226_449);
        assert_eq!(ms(d), "226.4");
        assert_eq!(opt_ms(None), "n/a");
        assert_eq!(opt_secs(Some(d)), "0.23");
        assert_eq!(opt_secs(None), "—");
        let a = Some(Duration::from_millis(2));
        assert_eq!(ratio(a, Some(Duration::from_millis(50))), "25×");
        assert_eq!(ratio(Some(Duration::ZERO), a), "n/a");
        assert_eq!(met(true), "met");
        assert_eq!(met(false), "NOT met");
    }
}
