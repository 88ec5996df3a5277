//! The feedback loop: what followed each applied adjustment, and the values it tunes.
//!
//! In: the detector's per-window evidence (`<prefix>.scores`), its alerts, the
//! adjustments and their audits. Out: one [`crate::codec::FeedbackOutcome`] per applied
//! adjustment on `<prefix>.feedback`, and tuned thresholds and tier shifts on the
//! compacted `<prefix>.tuned` ([`tuned`]), which every detector replica follows.

pub mod config;
pub mod tracker;
pub mod tuned;

pub use tuned::Tuning;

#[cfg(test)]
mod loop_tests;
