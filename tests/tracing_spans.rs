//! Tracing: what a shard logs sits inside a `shard{shard=N}` span, and what
//! a session logs inside `session{session=ID}` too; and plain traffic logs
//! nothing at info or above (quiet by default). A small recording
//! subscriber stands in for a real one, installed for the whole process
//! because the shards log from their own threads.

mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use common::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One recorded event: its level, its fields, and the spans around it
/// (outermost first) as `name{fields}`.
#[derive(Debug, Clone)]
struct Logged {
    level: Level,
    fields: String,
    spans: Vec<String>,
}

#[derive(Default)]
struct Recorder {
    next: AtomicU64,
    spans: Mutex<HashMap<u64, String>>,
    events: Mutex<Vec<Logged>>,
}

thread_local! {
    static ENTERED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = write!(self.0, "{}={:?}", field.name(), value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

impl Subscriber for &'static Recorder {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        *meta.level() <= Level::DEBUG
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut f = Fields(String::new());
        attrs.record(&mut f);
        let name = format!("{}{{{}}}", attrs.metadata().name(), f.0);
        self.spans.lock().unwrap().insert(id, name);
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        let spans = ENTERED.with(|e| {
            let names = self.spans.lock().unwrap();
            e.borrow().iter().filter_map(|id| names.get(id).cloned()).collect()
        });
        self.events.lock().unwrap().push(Logged {
            level: *event.metadata().level(),
            fields: f.0,
            spans,
        });
    }
    fn enter(&self, span: &Id) {
        ENTERED.with(|e| e.borrow_mut().push(span.into_u64()));
    }
    fn exit(&self, span: &Id) {
        ENTERED.with(|e| {
            let mut e = e.borrow_mut();
            if let Some(i) = e.iter().rposition(|s| *s == span.into_u64()) {
                e.remove(i);
            }
        });
    }
}

/// The process-wide recorder (installed before any server starts).
fn recorder() -> &'static Recorder {
    static R: OnceLock<&'static Recorder> = OnceLock::new();
    R.get_or_init(|| {
        let r: &'static Recorder = Box::leak(Box::default());
        tracing::subscriber::set_global_default(r).expect("no other global subscriber");
        r
    })
}

fn events_since(r: &Recorder, from: usize) -> Vec<Logged> {
    r.events.lock().unwrap()[from..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_and_session_logs_carry_their_spans_and_traffic_is_quiet_at_info() {
    let r = recorder();
    let server = start_inline_echo(builder()).await;
    let mut events = pump_events(&server);
    let mut c = RawClient::connect(addr(&server)).await;
    let id = events.established(c.local_addr()).await;

    let before = r.events.lock().unwrap().len();
    let p = one_way(1, 0, b"", vec![1u8; 32]);
    for _ in 0..200 {
        c.send(&p).await;
        c.recv().await;
    }
    let loud: Vec<_> = events_since(r, before)
        .into_iter()
        .filter(|e| e.level <= Level::INFO)
        .collect();
    assert!(loud.is_empty(), "traffic logged at info or above: {loud:#?}");

    drop(c);
    events.closed(id).await;
    let closed = events_since(r, before)
        .into_iter()
        .find(|e| e.fields.contains("session closed") && e.fields.contains(&id.to_string()))
        .expect("the close is logged at debug");
    assert_eq!(
        closed.spans.first().map(String::as_str),
        Some(format!("shard{{shard={}}}", id.shard()).as_str()),
        "{closed:?}"
    );
    let session = closed
        .spans
        .iter()
        .find(|s| s.starts_with("session{"))
        .unwrap_or_else(|| panic!("no session span around {closed:?}"));
    assert!(session.contains(&format!("session={id}")), "{session}");
    assert!(session.contains("protocol=tcp"), "{session}");
    server.stop().await;
}
