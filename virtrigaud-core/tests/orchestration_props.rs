//! Properties of the pure retention rule.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use virtrigaud_core::SnapshotInfo;
use virtrigaud_core::orchestration::{RetentionRules, plan_retention};

fn snaps(ages: &[Option<u64>], now: SystemTime) -> Vec<SnapshotInfo> {
    ages.iter()
        .enumerate()
        .map(|(i, a)| {
            let mut s = SnapshotInfo::new(format!("s{i}"), format!("n{i}"));
            s.created_at = a.map(|h| now - Duration::from_secs(h * 3600));
            s
        })
        .collect()
}

proptest! {
    #[test]
    fn retention_never_deletes_protected_and_meets_max_count_when_it_can(
        ages in proptest::collection::vec(proptest::option::weighted(0.9, 0u64..1000), 0..30),
        protected_idx in proptest::collection::hash_set(0usize..30, 0..5),
        max_age_h in proptest::option::of(1u64..500),
        max_count in proptest::option::of(0u32..10),
    ) {
        let now = SystemTime::now();
        let list = snaps(&ages, now);
        let protected: HashSet<String> = protected_idx.iter().filter(|i| **i < list.len()).map(|i| format!("s{i}")).collect();
        let rules = RetentionRules::new(max_age_h.map(|h| Duration::from_secs(h * 3600)), max_count);
        let doomed = plan_retention(&list, rules, now, &protected);
        let ids: HashSet<&str> = doomed.iter().map(|s| s.id.as_str()).collect();
        prop_assert_eq!(ids.len(), doomed.len(), "no duplicates");
        for d in &doomed {
            prop_assert!(!protected.contains(&d.id));
            prop_assert!(d.created_at.is_some());
        }
        if let Some(h) = max_age_h {
            for s in &list {
                let old = s.created_at.is_some_and(|t| now.duration_since(t).unwrap() > Duration::from_secs(h * 3600));
                if old && !protected.contains(&s.id) {
                    prop_assert!(ids.contains(s.id.as_str()), "{} is too old", s.id);
                }
            }
        }
        if let Some(m) = max_count {
            let kept = list.len() - doomed.len();
            let undeletable = list.iter().filter(|s| protected.contains(&s.id) || s.created_at.is_none()).count();
            prop_assert!(kept <= (m as usize).max(undeletable), "kept {} > max {} (undeletable {})", kept, m, undeletable);
            // Whatever maxCount deleted is older than every dated, unprotected snapshot it kept.
            let newest_deleted = doomed.iter().filter_map(|s| s.created_at).max();
            for s in list.iter().filter(|s| !ids.contains(s.id.as_str()) && !protected.contains(&s.id)) {
                if let (Some(t), Some(nd)) = (s.created_at, newest_deleted) && max_age_h.is_none() {
                    prop_assert!(t >= nd, "kept {} older than a deleted one", s.id);
                }
            }
        }
    }
}
