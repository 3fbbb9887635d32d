//! Per-RPC series under the names go-grpc-prometheus made standard, so existing dashboards
//! and alerts work: `grpc_server_started_total`, `grpc_server_handled_total` (with the status
//! code) and the `grpc_server_handling_seconds` histogram, labelled by `grpc_type`,
//! `grpc_service` and `grpc_method`. The server's tower layer calls `started` and `handled`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

type Labels3 = [(&'static str, String); 3];
type Labels4 = [(&'static str, String); 4];

/// The latency buckets of go-grpc-prometheus (seconds).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// One RPC's identity, as the labels name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rpc {
    /// "unary", "server_stream" or "bidi_stream".
    pub kind: &'static str,
    pub service: String,
    pub method: String,
}

impl Rpc {
    fn labels(&self) -> Labels3 {
        [
            ("grpc_type", self.kind.to_owned()),
            ("grpc_service", self.service.clone()),
            ("grpc_method", self.method.clone()),
        ]
    }
}

pub struct RpcMetrics {
    started: Family<Labels3, Counter>,
    handled: Family<Labels4, Counter>,
    handling: Family<Labels3, Histogram, fn() -> Histogram>,
}

impl RpcMetrics {
    pub(super) fn register(r: &mut Registry) -> RpcMetrics {
        let m = RpcMetrics {
            started: Family::default(),
            handled: Family::default(),
            handling: Family::new_with_constructor(histogram),
        };
        r.register(
            "grpc_server_started",
            "RPCs started on the server",
            m.started.clone(),
        );
        r.register(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their status",
            m.handled.clone(),
        );
        r.register_with_unit(
            "grpc_server_handling",
            "Time from an RPC's start to its status (a stream's whole life)",
            Unit::Seconds,
            m.handling.clone(),
        );
        m
    }

    pub fn started(&self, rpc: &Rpc) {
        self.started.get_or_create(&rpc.labels()).inc();
    }

    /// `rpc` ended with `code` (the gRPC code's name, as Go spells it) after `seconds`.
    pub fn handled(&self, rpc: &Rpc, code: &'static str, seconds: f64) {
        let [a, b, c] = rpc.labels();
        self.handled
            .get_or_create(&[a, b, c, ("grpc_code", code.to_owned())])
            .inc();
        self.handling.get_or_create(&rpc.labels()).observe(seconds);
    }
}

/// The name go-grpc-prometheus gives a status code (Go's `codes.Code.String()`).
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}
