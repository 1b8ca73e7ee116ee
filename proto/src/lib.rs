//! The gRPC contract of aforo: `aforo.v1`, compiled from `proto/aforo/v1/*.proto`.
//!
//! Everything a client or server needs to speak to aforo over gRPC lives here:
//! the message types, the generated clients and servers, and the encoded file
//! descriptor set that the reflection service hands to tools such as grpcurl.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("aforo.v1");
}

/// The encoded `FileDescriptorSet` of every aforo proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/aforo_descriptor.bin"));
