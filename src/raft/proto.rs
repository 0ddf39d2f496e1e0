//! Generated gRPC code. Used qualified as `pb::…` so our own types keep plain names.

pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("pgquorum.v1");
}
