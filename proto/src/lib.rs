//! Generated types, clients and servers for the sharedcare v1 APIs.

#![allow(clippy::all, missing_docs)]

/// Encoded `FileDescriptorSet` of every sharedcare proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sharedcare_descriptor.bin"));

pub mod common {
    pub mod v1 {
        tonic::include_proto!("sharedcare.common.v1");
    }
}

pub mod identity {
    pub mod v1 {
        tonic::include_proto!("sharedcare.identity.v1");
    }
}

pub mod consent {
    pub mod v1 {
        tonic::include_proto!("sharedcare.consent.v1");
    }
}

pub mod records {
    pub mod v1 {
        tonic::include_proto!("sharedcare.records.v1");
    }

    /// The storage protocol of records' `remote` backend.
    pub mod storage {
        pub mod v1 {
            tonic::include_proto!("sharedcare.records.storage.v1");
        }
    }
}

pub mod audit {
    pub mod v1 {
        tonic::include_proto!("sharedcare.audit.v1");
    }
}
