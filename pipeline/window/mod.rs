//! Per-instance sliding windows over event time (placeholder: filled in by the window work).

pub mod features;
