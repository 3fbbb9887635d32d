//! Every RPC runs in a span named after it that carries who called (`principal`, `branch`)
//! and the request concerned (`request_id`), and a stream's log lines fall in its call's span.
//!
//! The capturing subscriber is the binary's global default, and keeps only what happens on
//! the thread of this test, whose runtime is current-thread: the server, its connections and
//! the engine all run on it. (A `set_default` subscriber would not do: while it is the only
//! dispatcher registered, tracing-core caches each callsite's interest from the thread that
//! first reaches it, so a span another test's thread reaches first is never sent to it.)

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use countersign::api::pb;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use crate::harness::*;

async fn every_rpc_span_names_the_caller_and_the_request() {
    let seen = Captured::install();
    CAPTURING.with(|c| c.set(true));

    let mut t = TestServer::start().await;
    let first = submit(&t, "teller-01", "SP-1").await.request_id;
    let mut sup = Console::open(&t, "sup-04").await;
    let o = sup.next_offer().await;
    assert_eq!(o.request_id, first);
    sup.approve(&o).await;
    t.auditor()
        .await
        .get_request(pb::GetRequestRequest {
            request_id: first.clone(),
        })
        .await
        .expect("audit get request");
    t.admin()
        .await
        .get_queue_status(pb::GetQueueStatusRequest {})
        .await
        .expect("queue status");
    // A second request, offered and watched, is left open so that stopping the server ends
    // both streams, each logging why in its own call's span.
    let second = submit(&t, "teller-01", "SP-2").await.request_id;
    assert_eq!(sup.next_offer().await.request_id, second);
    let mut watch = t
        .teller("teller-01")
        .await
        .watch(pb::WatchRequest {
            request_id: second.clone(),
            after_version: None,
        })
        .await
        .expect("watch")
        .into_inner();
    watch.message().await.expect("first state").expect("open");
    t.stop().await;
    assert_eq!(
        watch.message().await.expect_err("ends").code(),
        tonic::Code::Unavailable
    );
    assert_eq!(
        sup.stream.message().await.expect_err("ends").code(),
        tonic::Code::Unavailable
    );

    let teller = [("principal", "teller-01"), ("branch", "BR-0101")];
    let supervisor = [("principal", "sup-04"), ("branch", "BR-0202")];
    seen.span("Submit", &teller, Some(&first));
    seen.span("Submit", &teller, Some(&second));
    seen.span("Watch", &teller, Some(&second));
    seen.span("Attend", &supervisor, None);
    seen.span("Accept", &supervisor, Some(&first));
    seen.span("Decide", &supervisor, Some(&first));
    seen.span(
        "GetRequest",
        &[("principal", "audit-01"), ("branch", "AUDIT")],
        Some(&first),
    );
    seen.span(
        "GetQueueStatus",
        &[("principal", "admin-01"), ("branch", "CENTRE")],
        None,
    );
    // What the streams log when the engine ends them is in the span of the call that opened them.
    let watch_span = seen.event_span("watch ended before a final state");
    assert_eq!(watch_span.name, "Watch");
    assert_eq!(watch_span.fields["request_id"], second);
    let attend_span = seen.event_span("attend session ended by the engine");
    assert_eq!(attend_span.name, "Attend");
    assert_eq!(attend_span.fields["principal"], "sup-04");
}

/// One span as the layer saw it: its name and every field recorded on it.
#[derive(Clone, Debug)]
struct SpanSeen {
    name: &'static str,
    fields: BTreeMap<String, String>,
}

/// A layer that keeps every span and, for each event, the message and the innermost span.
#[derive(Clone, Default)]
struct Captured {
    spans: Arc<Mutex<Vec<SpanSeen>>>,
    events: Arc<Mutex<Vec<EventSeen>>>,
}

/// One event: its message and the place in `Captured::spans` of its innermost span.
type EventSeen = (String, Option<usize>);

/// A span's place in `Captured::spans`, kept in the registry's extensions of the span.
struct Index(usize);

thread_local! {
    /// Set on the thread whose spans and events are kept.
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
}

impl Captured {
    /// Installs the layer as the global default (once for the binary) and returns its store.
    fn install() -> Captured {
        static SEEN: OnceLock<Captured> = OnceLock::new();
        SEEN.get_or_init(|| {
            let seen = Captured::default();
            let subscriber = tracing_subscriber::registry().with(seen.clone().with_filter(
                tracing_subscriber::filter::filter_fn(|m| m.target().starts_with("countersign")),
            ));
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in the test binary");
            // Callsites another thread registered while the default was being set get their
            // interest again.
            tracing::callsite::rebuild_interest_cache();
            seen
        })
        .clone()
    }

    /// Asserts a span `name` exists with these fields and this request id (or none at all).
    fn span(&self, name: &str, fields: &[(&str, &str)], request: Option<&str>) {
        let spans = self.spans.lock().unwrap();
        let found = spans.iter().any(|s| {
            s.name == name
                && fields
                    .iter()
                    .all(|(k, v)| s.fields.get(*k).map(String::as_str) == Some(*v))
                && s.fields.get("request_id").map(String::as_str) == request
        });
        assert!(
            found,
            "no {name} span with {fields:?} and request {request:?}; spans: {spans:#?}"
        );
    }

    /// The innermost span of the event whose message is `message`.
    fn event_span(&self, message: &str) -> SpanSeen {
        let events = self.events.lock().unwrap();
        let (_, at) = events
            .iter()
            .find(|(m, _)| m == message)
            .unwrap_or_else(|| panic!("no event {message:?}; events: {events:?}"));
        let at = at.unwrap_or_else(|| panic!("event {message:?} is in no span"));
        self.spans.lock().unwrap()[at].clone()
    }
}

impl<S> Layer<S> for Captured
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !CAPTURING.with(Cell::get) {
            return;
        }
        let mut seen = SpanSeen {
            name: attrs.metadata().name(),
            fields: BTreeMap::new(),
        };
        attrs.record(&mut Fields(&mut seen.fields));
        let mut spans = self.spans.lock().unwrap();
        spans.push(seen);
        let span = ctx.span(id).expect("a new span is in the registry");
        span.extensions_mut().insert(Index(spans.len() - 1));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a recorded span is in the registry");
        let extensions = span.extensions();
        // Spans of other threads were not kept.
        let Some(Index(at)) = extensions.get::<Index>() else {
            return;
        };
        values.record(&mut Fields(&mut self.spans.lock().unwrap()[*at].fields));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if !CAPTURING.with(Cell::get) {
            return;
        }
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let at = ctx
            .event_span(event)
            .and_then(|s| s.extensions().get::<Index>().map(|i| i.0));
        let message = fields.remove("message").unwrap_or_default();
        self.events.lock().unwrap().push((message, at));
    }
}

/// Collects fields as text.
struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

crate::on_both_backends!(
    every_rpc_span_names_the_caller_and_the_request { flavor = "current_thread" },
);
