//! The failure-signature database: historical failures as multivariate series of
//! leading indicators, by application type and function, that the detector matches
//! live windows against.
//!
//! In: signature files ([`mod@file`]), signatures cut from recorded telemetry
//! ([`mod@extract`]), and the compacted `<prefix>.signatures` topic. Out: records on that
//! topic (key `app_type/function/name`, value Avro `FailureSignature`, a tombstone
//! deletes; [`mod@store`]) and, for the detector, a [`SignatureTable`] that holds the
//! topic in memory and says when it changed. Guarantees: nothing that fails
//! [`validate()`] is written, and whatever is on the topic that fails it is skipped
//! when read, so the detector only ever sees signatures it can compare; an import is
//! all or nothing; extracted signatures are cut on the detector's own grid and their
//! thresholds calibrated on healthy instances.

mod cli;
pub mod extract;
pub mod file;
pub mod starter;
pub mod store;
pub mod table;
mod validate;

#[cfg(test)]
mod tests;

pub use cli::{parse_time, run, Args, Command, DeleteArgs, ExtractArgs, ImportArgs, ListArgs, SignaturesError};
pub use extract::{extract, replay, ExtractError, ExtractRequest, Extracted};
pub use file::{load_path, to_pretty_json, LoadError, Loaded, Origin};
pub use store::{delete, import, StoreError};
pub use table::{read_table, SignatureTable, Snapshot, TableError};
pub use validate::{key, validate, InvalidSignature, ANY_FUNCTION, MIN_POINTS};
