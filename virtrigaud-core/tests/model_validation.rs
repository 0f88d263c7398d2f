//! Every validation rule rejects bad input with a typed error naming the path and the rule.
#![cfg(feature = "yaml")]
#![allow(clippy::unwrap_used)] // test helpers

use virtrigaud_core::model::*;
use virtrigaud_core::{Error, ErrorKind};

const HEADER: &str = "apiVersion: infra.virtrigaud.io/v1beta1\n";

fn doc(kind: &str, spec: &str) -> String {
    format!("{HEADER}kind: {kind}\nmetadata:\n  name: x\nspec:\n{spec}")
}

/// Parse expecting a field-shape error at `path` whose message contains `rule`.
fn field_error<T: serde::de::DeserializeOwned + Validate + std::fmt::Debug>(
    text: &str,
    path: &str,
    rule: &str,
) -> ParseError {
    let err = from_yaml_str::<T>(text).unwrap_err();
    match &err {
        ParseError::Field { path: p, message } => {
            assert_eq!(p, path, "{err}");
            assert!(message.contains(rule), "{message:?} lacks {rule:?}");
        }
        other => panic!("expected a field error at {path}, got {other:?}"),
    }
    err
}

/// Parse expecting validation to fail with a rule at `path` containing `rule`.
fn rule_error<T: serde::de::DeserializeOwned + Validate + std::fmt::Debug>(
    text: &str,
    path: &str,
    rule: &str,
) -> SpecErrors {
    let err = from_yaml_str::<T>(text).unwrap_err();
    let errors = err
        .spec_errors()
        .unwrap_or_else(|| panic!("not a rule error: {err}"))
        .clone();
    let e = errors
        .find(path)
        .unwrap_or_else(|| panic!("no error at {path}: {errors}"));
    assert!(e.rule.contains(rule), "{:?} lacks {rule:?}", e.rule);
    errors
}

#[test]
fn power_states_parse_and_unknown_lists_allowed_values() {
    for (s, want) in [
        ("On", VmPowerState::On),
        ("Off", VmPowerState::Off),
        ("OffGraceful", VmPowerState::OffGraceful),
    ] {
        let vm: VirtualMachine =
            from_yaml_str(&doc("VirtualMachine", &format!("  powerState: {s}\n"))).unwrap();
        assert_eq!(vm.spec.power_state, Some(want));
    }
    let err = field_error::<VirtualMachine>(
        &doc("VirtualMachine", "  powerState: Sleeping\n"),
        "spec.powerState",
        "unknown variant `Sleeping`",
    );
    for allowed in ["`On`", "`Off`", "`OffGraceful`"] {
        assert!(err.to_string().contains(allowed), "{err}");
    }
    // A YAML boolean is not a power state either.
    field_error::<VirtualMachine>(
        &doc("VirtualMachine", "  powerState: true\n"),
        "spec.powerState",
        "expected",
    );
}

#[test]
fn twelve_parsecs_is_not_a_duration() {
    let err = field_error::<VirtualMachine>(
        &doc(
            "VirtualMachine",
            "  lifecycle:\n    gracefulShutdownTimeout: 12 parsecs\n",
        ),
        "spec.lifecycle.gracefulShutdownTimeout",
        "unknown time unit",
    );
    assert!(err.to_string().contains(DURATION_RULE), "{err}");
    // Bare numbers are rejected, quoted or not.
    for bare in ["120", "\"120\""] {
        field_error::<VirtualMachine>(
            &doc(
                "VirtualMachine",
                &format!("  lifecycle:\n    gracefulShutdownTimeout: {bare}\n"),
            ),
            "spec.lifecycle.gracefulShutdownTimeout",
            "bare number",
        );
    }
    field_error::<VMSnapshot>(
        &doc(
            "VMSnapshot",
            "  vmRef: {name: a}\n  retentionPolicy: {maxAge: 7 fortnights}\n",
        ),
        "spec.retentionPolicy.maxAge",
        "unknown time unit",
    );
}

#[test]
fn unknown_fields_are_named() {
    field_error::<VirtualMachine>(
        &doc(
            "VirtualMachine",
            "  lifecycle:\n    gracefulShutdownTimout: 60s\n",
        ),
        "spec.lifecycle.gracefulShutdownTimout",
        "unknown field",
    );
}

#[test]
fn lifecycle_action_rules() {
    // Negative grace.
    let text = "action: stop\ngracePeriodSeconds: -1\n";
    let errors = from_yaml_str::<LifecycleAction>(text).unwrap_err();
    let e = errors
        .spec_errors()
        .unwrap()
        .find("gracePeriodSeconds")
        .unwrap();
    assert_eq!(e.rule, "must not be negative");
    assert_eq!(e.value.as_deref(), Some("-1"));

    // Force with a positive grace contradicts itself; force with 0 is KubeVirt's
    // `--force --grace-period=0` and is accepted.
    let errors =
        from_yaml_str::<LifecycleAction>("action: stop\nforce: true\ngracePeriodSeconds: 30\n")
            .unwrap_err();
    assert!(
        errors
            .spec_errors()
            .unwrap()
            .find("gracePeriodSeconds")
            .unwrap()
            .rule
            .contains("force")
    );
    let ok: LifecycleAction =
        from_yaml_str("action: stop\nforce: true\ngracePeriodSeconds: 0\n").unwrap();
    assert_eq!(
        ok.grace_period(DEFAULT_STOP_GRACE_PERIOD),
        std::time::Duration::ZERO
    );

    // force / grace only apply to stop.
    let errors =
        from_yaml_str::<LifecycleAction>("action: start\nforce: true\ngracePeriodSeconds: 5\n")
            .unwrap_err();
    let errors = errors.spec_errors().unwrap();
    assert_eq!(errors.len(), 2);
    assert!(
        errors
            .find("force")
            .unwrap()
            .rule
            .contains("only applies to action stop")
    );

    // Unknown action lists the allowed ones.
    let err = from_yaml_str::<LifecycleAction>("action: restart\n").unwrap_err();
    assert_eq!(err.path(), Some("action"));
    assert!(
        err.to_string().contains("`start`") && err.to_string().contains("`stop`"),
        "{err}"
    );
}

#[test]
fn vmset_rules() {
    let base =
        "  template:\n    metadata: {labels: {app: web}}\n  selector: {matchLabels: {app: web}}\n";
    rule_error::<VMSet>(
        &doc("VMSet", &format!("  replicas: -2\n{base}")),
        "spec.replicas",
        "must not be negative",
    );

    let both_zero = format!(
        "{base}  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate: {{maxUnavailable: 0, maxSurge: \"0%\"}}\n"
    );
    rule_error::<VMSet>(
        &doc("VMSet", &both_zero),
        "spec.updateStrategy.rollingUpdate.maxUnavailable",
        "maxUnavailable and maxSurge must not both be 0",
    );

    let over =
        format!("{base}  updateStrategy:\n    rollingUpdate: {{maxUnavailable: \"150%\"}}\n");
    let errors = rule_error::<VMSet>(
        &doc("VMSet", &over),
        "spec.updateStrategy.rollingUpdate.maxUnavailable",
        "must not exceed 100%",
    );
    assert_eq!(errors.errors()[0].value.as_deref(), Some("150%"));
    // maxSurge may exceed 100 % (as in Kubernetes).
    let surge = format!("{base}  updateStrategy:\n    rollingUpdate: {{maxSurge: \"200%\"}}\n");
    from_yaml_str::<VMSet>(&doc("VMSet", &surge)).unwrap();

    field_error::<VMSet>(
        &doc(
            "VMSet",
            &format!("{base}  updateStrategy:\n    rollingUpdate: {{maxSurge: -1}}\n"),
        ),
        "spec.updateStrategy.rollingUpdate.maxSurge",
        INT_OR_PERCENT_RULE,
    );
    field_error::<VMSet>(
        &doc(
            "VMSet",
            &format!("{base}  updateStrategy:\n    rollingUpdate: {{maxSurge: \"a lot\"}}\n"),
        ),
        "spec.updateStrategy.rollingUpdate.maxSurge",
        INT_OR_PERCENT_RULE,
    );
    field_error::<VMSet>(
        &doc(
            "VMSet",
            &format!("{base}  updateStrategy:\n    type: BlueGreen\n"),
        ),
        "spec.updateStrategy.type",
        "`Recreate`",
    );

    rule_error::<VMSet>(
        &doc(
            "VMSet",
            "  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: web}}\n",
        ),
        "spec.selector.matchLabels",
        "must match",
    );
    // The template spec is validated like a VM spec.
    rule_error::<VMSet>(
        &doc(
            "VMSet",
            "  template:\n    spec:\n      disks: [{name: d, sizeGiB: 0}]\n",
        ),
        "spec.template.spec.disks[0].sizeGiB",
        "must be at least 1",
    );
}

#[test]
fn vm_rules() {
    let errors = rule_error::<VirtualMachine>(
        &doc(
            "VirtualMachine",
            "  disks:\n    - {name: data, sizeGiB: 0, expandPolicy: Offline}\n    - {name: '', sizeGiB: 10}\n    - {name: data, sizeGiB: 5}\n",
        ),
        "spec.disks[0].sizeGiB",
        "must be at least 1",
    );
    assert!(
        errors
            .find("spec.disks[1].name")
            .unwrap()
            .rule
            .contains("must not be empty")
    );
    assert!(
        errors
            .find("spec.disks[2].name")
            .unwrap()
            .rule
            .contains("unique")
    );
    assert_eq!(errors.len(), 3);

    field_error::<VirtualMachine>(
        &doc(
            "VirtualMachine",
            "  disks: [{name: d, sizeGiB: 1, expandPolicy: Sometimes}]\n",
        ),
        "spec.disks[0].expandPolicy",
        "`Online`",
    );
    rule_error::<VirtualMachine>(
        &doc("VirtualMachine", "  resources: {cpu: 0, memoryMiB: 1024}\n"),
        "spec.resources.cpu",
        "must be at least 1",
    );
    rule_error::<VirtualMachine>(
        &doc(
            "VirtualMachine",
            "  lifecycle:\n    preStop: {exec: {command: []}}\n",
        ),
        "spec.lifecycle.preStop.exec.command",
        "must not be empty",
    );
    rule_error::<VirtualMachine>(
        &doc("VirtualMachine", "  providerRef: {name: ''}\n"),
        "spec.providerRef.name",
        "must not be empty",
    );
    rule_error::<VirtualMachine>(
        &doc("VirtualMachine", "  snapshot: {revertToRef: {name: ' '}}\n"),
        "spec.snapshot.revertToRef.name",
        "must not be empty",
    );
    // Empty object name, wrong kind.
    let errors = rule_error::<VirtualMachine>(
        &format!("{HEADER}kind: VMSet\nmetadata: {{name: ''}}\nspec: {{}}\n"),
        "kind",
        "\"VirtualMachine\"",
    );
    assert!(errors.find("metadata.name").is_some());
}

#[test]
fn snapshot_clone_image_placement_rules() {
    rule_error::<VMSnapshot>(
        &doc(
            "VMSnapshot",
            "  vmRef: {name: ''}\n  retentionPolicy: {maxCount: 0, maxAge: 0s}\n",
        ),
        "spec.vmRef.name",
        "must not be empty",
    );
    field_error::<VMSnapshot>(
        &doc("VMSnapshot", "  memory: true\n"),
        "spec",
        "missing field `vmRef`",
    );

    let errors = rule_error::<VMClone>(
        &doc(
            "VMClone",
            "  sourceRef: {name: a}\n  target: {name: ''}\n  customization:\n    hostname: 'bad_host!'\n    networks: [{name: n, ipAddress: 300.1.1.1, gateway: gw, dns: [8.8.8.8, x]}]\n",
        ),
        "spec.target.name",
        "must not be empty",
    );
    assert!(errors.find("spec.customization.hostname").is_some());
    assert!(
        errors
            .find("spec.customization.networks[0].ipAddress")
            .is_some()
    );
    assert!(
        errors
            .find("spec.customization.networks[0].gateway")
            .is_some()
    );
    assert!(
        errors
            .find("spec.customization.networks[0].dns[1]")
            .is_some()
    );
    assert!(
        errors
            .find("spec.customization.networks[0].dns[0]")
            .is_none()
    );

    // Malformed checksums: wrong length, unknown algorithm, non-hex.
    for (sum, rule) in [
        ("sha256:abcd", "exactly 64 hex digits"),
        ("md5:d41d8cd98f00b204e9800998ecf8427e", "unknown algorithm"),
        (
            &*format!("sha512:{}", "zz".repeat(64)),
            "exactly 128 hex digits",
        ),
        ("abcdef", "sha256 or sha512"),
    ] {
        field_error::<VMImage>(
            &doc(
                "VMImage",
                &format!("  libvirt: {{url: 'http://x/i.img', checksum: '{sum}'}}\n"),
            ),
            "spec.libvirt.checksum",
            rule,
        );
    }
    rule_error::<VMImage>(
        &doc("VMImage", "  prepare: {onMissing: Fail}\n"),
        "spec",
        "at least one image source",
    );
    field_error::<VMImage>(
        &doc(
            "VMImage",
            "  libvirt: {url: u}\n  prepare: {onMissing: Ignore}\n",
        ),
        "spec.prepare.onMissing",
        "`Import`",
    );
    rule_error::<VMPlacementPolicy>(
        &doc("VMPlacementPolicy", "  hard: {hosts: [esxi-01, '']}\n"),
        "spec.hard.hosts[1]",
        "must not be empty",
    );
}

#[test]
fn syntax_errors_and_error_conversion() {
    let err = from_yaml_str::<VirtualMachine>("apiVersion: [unclosed\n").unwrap_err();
    assert!(
        matches!(err, ParseError::Syntax { format: "YAML", .. }),
        "{err}"
    );
    let err = from_json_str::<VirtualMachine>("{").unwrap_err();
    assert!(
        matches!(err, ParseError::Syntax { format: "JSON", .. }),
        "{err}"
    );

    let err =
        from_yaml_str::<LifecycleAction>("action: stop\ngracePeriodSeconds: -3\n").unwrap_err();
    let e: Error = err.into();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    assert!(!e.is_retryable());
    assert!(
        e.to_string()
            .contains("gracePeriodSeconds: must not be negative"),
        "{e}"
    );

    let errors: SpecErrors =
        std::iter::once(SpecError::new("spec.replicas", "must not be negative").with_value(-1))
            .collect();
    assert_eq!(
        errors.to_string(),
        "invalid spec: spec.replicas: must not be negative (got \"-1\")"
    );
    let e: Error = errors.into();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
}

#[test]
fn alias_bombs_are_refused_by_the_yaml_budget() {
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = (b'a' + i - 1) as char;
        let cur = (b'a' + i) as char;
        bomb.push_str(&format!(
            "{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        ));
    }
    let err = from_yaml_str::<VirtualMachine>(&bomb).unwrap_err();
    assert!(matches!(err, ParseError::Syntax { .. }), "{err}");
}
