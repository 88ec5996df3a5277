//! Detection: an instance's telemetry windows in, evidence of a coming failure out.
//! [`dtw`] matches windows against the library of failure signatures.

pub mod dtw;
