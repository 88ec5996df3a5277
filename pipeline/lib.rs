//! Augur predicts failures of application instances from their telemetry and adjusts
//! their resources before they fail.
//!
//! The modules follow the data: [`agent`] and [`simulate`] produce telemetry, [`codec`]
//! frames every record of the wire contract in `schemas/`, [`kafka`] connects the
//! stages, [`tail`] reads any topic back for people and scripts, [`export`] copies
//! telemetry and alerts into a time-series database, and [`observe`] serves a
//! long-running command's own metrics and health. [`config`] turns a deployment file
//! into the flags of the command it runs.

pub mod actuate;
pub mod agent;
pub mod charts;
pub mod codec;
pub mod config;
pub mod demo;
pub mod detect;
pub mod evaluate;
pub mod export;
pub mod feedback;
pub mod kafka;
pub mod observe;
pub mod policy;
pub mod shutdown;
pub mod signatures;
pub mod simulate;
pub mod tail;
pub mod train;
pub mod window;
