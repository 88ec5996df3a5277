//! The starter library: the signatures shipped in `models/signatures/`, built into the
//! binary.
//!
//! In: the JSON files of `models/signatures/`, embedded at compile time. Out: the
//! same signatures [`super::load_path`] would read from that directory, for
//! `augur signatures import` without a path.
//!
//! Why embedded and not read from `CARGO_MANIFEST_DIR` at run time: an installed or
//! copied binary has no source tree, and one that found a checkout at its build path
//! would import whatever that checkout holds now, not what was built and tested. The
//! embedded copy is exactly what the binary was tested with; to import an edited
//! library, pass its path. A unit test fails when this list and the directory differ,
//! so a regenerated library cannot be left out by mistake.

use std::path::Path;

use super::file::{check_unique, load_str, LoadError, Loaded};

/// Where the files come from, relative to the repository root (named in errors).
pub const DIR: &str = "models/signatures";

macro_rules! starter {
    ($($file:literal),* $(,)?) => {
        /// File name and content of every file of the starter library, in name order.
        pub const FILES: &[(&str, &str)] = &[
            $(($file, include_str!(concat!("../../models/signatures/", $file))),)*
        ];
    };
}

starter!(
    "cache-cpu_saturation-fast.json",
    "cache-cpu_saturation-slow.json",
    "cache-cpu_saturation.json",
    "cache-error_burst.json",
    "cache-io_stall.json",
    "cache-latency_creep.json",
    "cache-memory_leak.json",
    "database-cpu_saturation-fast.json",
    "database-cpu_saturation-slow.json",
    "database-cpu_saturation.json",
    "database-error_burst.json",
    "database-io_stall.json",
    "database-latency_creep.json",
    "database-memory_leak.json",
    "web-cpu_saturation-fast.json",
    "web-cpu_saturation-slow.json",
    "web-cpu_saturation.json",
    "web-error_burst.json",
    "web-io_stall.json",
    "web-latency_creep.json",
    "web-memory_leak.json",
    "worker-cpu_saturation-fast.json",
    "worker-cpu_saturation-slow.json",
    "worker-cpu_saturation.json",
    "worker-error_burst.json",
    "worker-io_stall.json",
    "worker-latency_creep.json",
    "worker-memory_leak.json",
);

/// The starter library's signatures, validated.
pub fn library() -> Result<Vec<Loaded>, LoadError> {
    let mut all = Vec::new();
    for (name, text) in FILES {
        all.extend(load_str(text, &Path::new(DIR).join(name))?);
    }
    if all.is_empty() {
        return Err(LoadError::Empty { path: DIR.into() });
    }
    check_unique(&all)?;
    Ok(all)
}
