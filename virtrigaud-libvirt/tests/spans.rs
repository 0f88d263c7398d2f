//! The caller's tracing span goes with every libvirt call onto the blocking thread that
//! makes it: a `libvirt_call` span whose parent is the caller's (the engine's, a layer's).
//! A process-wide subscriber, so this file holds one test.

use std::sync::{Arc, Mutex};

use tracing::span::{Attributes, Id};
use tracing::{Instrument, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use virtrigaud_core::{Provider, VmId};
use virtrigaud_libvirt::{LibvirtConfig, LibvirtProvider};

/// A span seen: its name, its parent's name, the thread it was made on.
type Seen = (String, Option<String>, String);

/// Records every new span.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Seen>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent().map(|p| p.name().to_owned()));
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        self.0
            .lock()
            .expect("spans")
            .push((attrs.metadata().name().to_owned(), parent, thread));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_libvirt_call_runs_inside_the_callers_span() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(
        spans
            .clone()
            .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
    );
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let dir = tempfile::tempdir().expect("tempdir");
    let node = dir.path().join("node.xml");
    std::fs::write(&node, "<node/>").expect("node xml");
    let p = LibvirtProvider::connect(
        LibvirtConfig::new(format!("test://{}", node.display())).with_events(false),
    )
    .await
    .expect("connect");
    let _ = p
        .power_state(&VmId::new("nobody"))
        .instrument(tracing::info_span!("engine_shutdown"))
        .await;
    let seen = spans.0.lock().expect("spans").clone();
    let call = seen.iter().find(|(name, parent, _)| {
        name == "libvirt_call" && parent.as_deref() == Some("engine_shutdown")
    });
    assert!(
        call.is_some(),
        "no libvirt_call span under the caller's: {seen:?}"
    );
}
