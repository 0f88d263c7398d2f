//! Property tests: value types round-trip through text and serde; YAML output re-parses
//! to the same value even for strings that look like other scalars.
#![cfg(feature = "yaml")]
#![allow(clippy::unwrap_used)] // test helpers

use std::time::Duration;

use proptest::prelude::*;
use virtrigaud_core::model::*;

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..10_000_000).prop_map(Duration::from_secs),
        (0u64..1_000).prop_map(|d| Duration::from_secs(d * 86_400)),
        (0u64..100_000_000, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn int_or_percent() -> impl Strategy<Value = IntOrPercent> {
    prop_oneof![
        any::<u32>().prop_map(IntOrPercent::Count),
        (0u32..1000).prop_map(IntOrPercent::Percent),
    ]
}

proptest! {
    #[test]
    fn human_duration_round_trips(d in duration()) {
        let h = HumanDuration(d);
        let text = h.to_string();
        prop_assert_eq!(text.parse::<HumanDuration>().unwrap(), h, "{}", text);
        let json = serde_json::to_string(&h).unwrap();
        prop_assert_eq!(serde_json::from_str::<HumanDuration>(&json).unwrap(), h);
        // One token: a number and a unit.
        prop_assert!(!text.contains(' '));
    }

    #[test]
    fn bare_numbers_never_parse_as_durations(n in any::<u32>()) {
        prop_assert!(n.to_string().parse::<HumanDuration>().is_err());
    }

    #[test]
    fn int_or_percent_round_trips_and_rounds(v in int_or_percent(), total in 0u32..100_000) {
        let text = v.to_string();
        prop_assert_eq!(text.parse::<IntOrPercent>().unwrap(), v);
        let json = serde_json::to_value(v).unwrap();
        prop_assert_eq!(serde_json::from_value::<IntOrPercent>(json).unwrap(), v);
        let down = v.resolve_down(total);
        let up = v.resolve_up(total);
        prop_assert!(down <= up && up - down <= 1);
        if let IntOrPercent::Percent(p) = v {
            prop_assert_eq!(u64::from(down), u64::from(p) * u64::from(total) / 100);
            if p == 100 { prop_assert_eq!(down, total); }
        }
    }

    #[test]
    fn checksum_round_trips(bytes in prop::collection::vec(any::<u8>(), 32), long in any::<bool>(), upper in any::<bool>()) {
        let bytes = if long { [bytes.clone(), bytes].concat() } else { bytes };
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let algo = if long { "sha512" } else { "sha256" };
        let written = format!("{algo}:{}", if upper { hex.to_uppercase() } else { hex.clone() });
        let c: Checksum = written.parse().unwrap();
        prop_assert_eq!(c.hex(), hex.as_str());
        prop_assert!(c.matches(&bytes));
        prop_assert_eq!(c.to_string().parse::<Checksum>().unwrap(), c.clone());
        let json = serde_json::to_string(&c).unwrap();
        prop_assert_eq!(serde_json::from_str::<Checksum>(&json).unwrap(), c);
        // One digit fewer is malformed.
        let short = format!("{algo}:{}", &hex[1..]);
        prop_assert!(short.parse::<Checksum>().is_err());
    }

    #[test]
    fn quantity_from_bytes_round_trips(b in any::<u64>()) {
        let q = Quantity::from_bytes(b);
        let back: Quantity = q.to_string().parse().unwrap();
        prop_assert_eq!(back.bytes(), b);
    }

    #[test]
    fn yaml_round_trips_tricky_strings(
        name in prop_oneof![
            Just("On".to_owned()), Just("n".to_owned()), Just("yes".to_owned()),
            Just("true".to_owned()), Just("null".to_owned()), Just("~".to_owned()),
            Just("0x10".to_owned()), Just("012".to_owned()), Just("1e3".to_owned()),
            Just("- a".to_owned()), Just("a: b".to_owned()), Just("#x".to_owned()),
            "[ -~]{1,20}", "\\PC{1,12}",
        ],
        grace in duration(),
    ) {
        let mut spec = VirtualMachineSpec::default();
        spec.provider_ref = Some(ObjectRef::new(name.clone()));
        spec.lifecycle = Some(serde_json::from_value(serde_json::json!({
            "gracefulShutdownTimeout": HumanDuration(grace).to_string(),
            "preStop": {"exec": {"command": ["/bin/sh", "-c", name.clone()]}},
        })).unwrap());
        let vm: VirtualMachine = Object::new("vm", spec);
        let yaml = to_yaml_string(&vm).unwrap();
        let back: VirtualMachine = from_yaml_str_unvalidated(&yaml)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        prop_assert_eq!(back, vm, "{}", yaml);
    }
}
