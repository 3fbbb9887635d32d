//! The gRPC boundary: the generated protobuf types (only this module knows them), conversion
//! to and from the domain, identity and role checks, the one mapping of errors to status codes,
//! and the three services.
//!
//! Every RPC handler runs in a span named after the RPC (`Submit`, `Decide`, ...) that declares
//! `principal`, `branch` and `request_id`: `Directory::authorize` records the first two,
//! `concerning` (or the handler, once the engine has assigned one) the third. A stream's span
//! lives as long as the stream, and is entered whenever the stream is polled.

mod admin;
mod audit;
pub mod convert;
pub mod identity;
mod review;
mod session;
pub mod status;
mod supervisor;
mod teller;

/// The generated `countersign.v1` types, clients and servers.
#[allow(clippy::large_enum_variant)]
pub mod pb {
    tonic::include_proto!("countersign.v1");

    /// The encoded descriptor set of the contract, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/countersign_descriptor.bin"));
}

/// The encoded descriptor set of the contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = pb::FILE_DESCRIPTOR_SET;

/// The names health is reported under: the whole server ("") and each service.
/// The one service a standby serves.
pub const AUDIT_SERVICE: &str = "countersign.v1.AuditService";

pub const HEALTH_NAMES: [&str; 5] = [
    "",
    "countersign.v1.TellerService",
    "countersign.v1.SupervisorService",
    "countersign.v1.AuditService",
    "countersign.v1.AdminService",
];

/// The four services of the contract on one engine and directory, with their message limits,
/// as one set of routes: the composition root serves it without naming generated types.
/// The engine the services call: replaced when a standby takes over.
pub type EngineSlot = tokio::sync::watch::Receiver<crate::engine::EngineHandle>;

/// Whether this node leads, and if not, where the leader is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// Teller, supervisor and admin calls are refused with the leader's address, when known.
    Standby {
        leader: Option<String>,
    },
}

/// Refuses a call on a standby, naming the leader (teller, supervisor and admin services).
fn leading(
    role: tokio::sync::watch::Receiver<Role>,
) -> impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |request| match &*role.borrow() {
        Role::Leader => Ok(request),
        Role::Standby { leader } => Err(status::not_leader(leader.as_deref())),
    }
}

pub fn services(
    engine: EngineSlot,
    role: tokio::sync::watch::Receiver<Role>,
    directory: SharedDirectory,
    limits: ApiLimits,
    policy_path: std::path::PathBuf,
    directory_path: std::path::PathBuf,
) -> tonic::service::Routes {
    let max = limits.message_bytes_max;
    let teller = pb::teller_service_server::TellerServiceServer::new(TellerApi {
        engine: engine.clone(),
        directory: directory.clone(),
        limits,
        watches: Default::default(),
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let teller =
        tonic::service::interceptor::InterceptedService::new(teller, leading(role.clone()));
    let supervisor = pb::supervisor_service_server::SupervisorServiceServer::new(SupervisorApi {
        engine: engine.clone(),
        directory: directory.clone(),
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let supervisor =
        tonic::service::interceptor::InterceptedService::new(supervisor, leading(role.clone()));
    let audit = pb::audit_service_server::AuditServiceServer::new(AuditApi {
        engine: engine.clone(),
        directory: directory.clone(),
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let review = pb::review_service_server::ReviewServiceServer::new(review::ReviewApi {
        engine: engine.clone(),
        directory: directory.clone(),
    });
    let review =
        tonic::service::interceptor::InterceptedService::new(review, leading(role.clone()));
    // Served on a standby too: it only says who the caller is, and whether this node leads.
    let session = pb::session_service_server::SessionServiceServer::new(session::SessionApi {
        directory: directory.clone(),
        role: role.clone(),
    });
    let admin = pb::admin_service_server::AdminServiceServer::new(AdminApi {
        engine,
        directory,
        policy_path,
        directory_path,
    });
    let admin = tonic::service::interceptor::InterceptedService::new(admin, leading(role));
    tonic::service::Routes::new(teller)
        .add_service(supervisor)
        .add_service(audit)
        .add_service(review)
        .add_service(session)
        .add_service(admin)
}

pub use admin::AdminApi;
pub use admin::{reload_directory, reload_policy};
pub use audit::AuditApi;
pub use identity::{Directory, Reloaded, SharedDirectory};
pub use supervisor::SupervisorApi;
pub use teller::TellerApi;

/// The request a call concerns, from its `field`; recorded on the call's span so that every
/// line the call logs names it.
fn concerning(field: &str, text: &str) -> Result<crate::domain::RequestId, tonic::Status> {
    let id = convert::request_id(field, text).map_err(status::invalid)?;
    record_request(&id);
    Ok(id)
}

/// Records on the call's span the request it concerns, for calls that learn it late (Submit).
fn record_request(id: &crate::domain::RequestId) {
    tracing::Span::current().record("request_id", id.as_str());
}

/// Limits the API enforces before anything reaches the engine.
#[derive(Clone, Debug)]
pub struct ApiLimits {
    /// Largest gRPC message accepted, in bytes.
    pub message_bytes_max: usize,
    /// Largest image, in bytes.
    pub image_bytes_max: usize,
    /// Fewest images on one request.
    pub images_per_request_min: usize,
    /// Most images on one request.
    pub images_per_request_max: usize,
    /// Most Watch streams one principal may hold open at once.
    pub watch_streams_per_principal_max: usize,
    /// How long after the on-site decision a fallback may still be registered.
    pub fallback_age_max_days: i64,
}

/// Counts open streams per principal, so one client cannot hold unbounded server memory.
#[derive(Clone, Default)]
pub struct StreamCounts(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>);

/// One open stream; dropping it (the stream ended or the client went away) frees the slot.
pub struct StreamSlot {
    counts: StreamCounts,
    principal: String,
}

impl StreamCounts {
    /// Takes a slot for `principal`, or `None` when they already hold `max`.
    pub fn take(&self, principal: &str, max: usize) -> Option<StreamSlot> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(principal.to_owned()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            counts: self.clone(),
            principal: principal.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut m = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.principal) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.principal);
            }
        }
    }
}
