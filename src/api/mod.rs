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
    /// Most images on one request.
    pub images_per_request_max: usize,
}
