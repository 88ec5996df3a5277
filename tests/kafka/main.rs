//! Integration tests against a real Apache Kafka broker (see `tests/common`).

#[path = "../common/mod.rs"]
mod common;

mod actuate;
mod actuate_kube;
mod agent;
mod demo;
mod detect;
mod export;
mod observe;
mod security;
mod signatures;
mod simulate;
mod tail;
mod train;
