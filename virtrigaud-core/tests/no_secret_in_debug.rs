//! cloud-init user data routinely carries passwords, keys and tokens: no `Debug` output of
//! the types that hold it shows the text (only its size).

use virtrigaud_core::cloudinit::NoCloudSeed;
use virtrigaud_core::{CloneOptions, Customization, VmCreateSpec};

const SECRET: &str = "#cloud-config\npassword: hunter2\n";

fn customization() -> Customization {
    let mut c = Customization::default();
    c.hostname = Some("web-1".into());
    c.cloud_init_user_data = Some(SECRET.into());
    c
}

#[test]
fn user_data_is_shown_by_size_only() {
    let mut spec = VmCreateSpec::new("web-1", 2, 2048);
    spec.cloud_init_user_data = Some(SECRET.into());
    let seed = NoCloudSeed::for_customization("web-1", &customization(), &[]).expect("seed");
    let shown = [
        format!("{:?}", customization()),
        format!(
            "{:?}",
            CloneOptions::new("web-1").with_customization(customization())
        ),
        format!("{spec:?}"),
        format!("{seed:?}"),
    ];
    for s in &shown {
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains(&format!("<{} bytes>", SECRET.len())), "{s}");
    }
    // What is not secret is still there to debug with.
    assert!(shown[0].contains("web-1") && shown[2].contains("2048"));
}
