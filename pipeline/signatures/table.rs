//! The signature table: the compacted `<prefix>.signatures` topic held in memory as a
//! [`Table`] (see `kafka::table`), key `app_type/function/name`, value an Avro
//! [`FailureSignature`]; a detector rebuilds its DTW libraries whenever its version
//! changes. Records that fail [`validate`] are skipped.

use super::validate::{key, validate};
use crate::codec::FailureSignature;
use crate::kafka::table::{self, Entry, Table};
use crate::kafka::{Cluster, ConnectError};

pub use crate::kafka::table::{Snapshot, TableError, PARTITIONS};

/// The signature topic, loaded and followed.
pub type SignatureTable = Table<FailureSignature>;

impl Entry for FailureSignature {
    const NAME: &'static str = "signature";

    fn key(&self) -> String {
        key(self)
    }

    fn check(&self) -> Result<(), String> {
        validate(self).map_err(|e| e.to_string())
    }
}

/// Every signature by key, read once; see [`table::read_table`].
pub async fn read_table(cluster: &Cluster) -> Result<std::collections::BTreeMap<String, FailureSignature>, TableError> {
    table::read_table::<FailureSignature>(cluster).await
}

/// Creates `<prefix>.signatures`, compacted, if it does not exist.
pub async fn ensure_topic(cluster: &Cluster) -> Result<(), ConnectError> {
    table::ensure_topic::<FailureSignature>(cluster).await
}
