//! Detection: an instance's telemetry windows in, evidence of a coming failure out.
//! [`dtw`] matches windows against the library of failure signatures; [`confidence`]
//! turns a distance into a confidence 0..1.

pub mod confidence;
pub mod dtw;
