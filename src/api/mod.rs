//! The gRPC boundary: the generated protobuf types (only this module knows them), conversion
//! to and from the domain, identity and role checks, the one mapping of errors to status codes,
//! and the three services.

mod admin;
mod audit;
pub mod convert;
pub mod identity;
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

pub use admin::AdminApi;
pub use audit::AuditApi;
pub use identity::Directory;
pub use supervisor::SupervisorApi;
pub use teller::TellerApi;

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
