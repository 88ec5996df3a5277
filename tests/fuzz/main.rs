//! Bad-input testing of every decoder that reads what others wrote: the Avro codec of
//! every wire record and the detector's admission check behind it ([`avro`]), the CSV
//! reader of `augur train --csv` / `augur score` ([`csv_table`]), signature files
//! ([`signatures`]) and policy files ([`policy`]).
//!
//! How: property tests (proptest) that start from VALID inputs — generated records,
//! tables, signatures, the shipped policy files — and mutate them, both blindly (the
//! byte edits of [`Edit`]: truncate, flip, insert, delete, duplicate a range, overwrite
//! with boundary bytes and Avro varints) and with knowledge of the format (swap
//! fingerprints and bodies, replace numbers with NaN/inf/huge/negative, change a
//! field's type, add unknown fields, repeat keys, very long strings). Each property
//! asserts that the decoder never panics, refuses garbage with an error that says
//! where (file and line, or the Avro header at fault) and accepts valid input.
//!
//! Bounded time: every property sets its case count explicitly (see each `CASES`),
//! chosen so that it runs in a few seconds in a debug build; `cargo test --test fuzz`
//! runs all of them, without Kafka or network, in about 15 s on two cores. A failure
//! is shrunk and its seed saved in `tests/proptest-regressions/<module>.txt`, replayed
//! first on every run; every bug found this way also has a plain `#[test]` with the
//! minimized input next to its property.

mod avro;
mod csv_table;
mod policy;
mod signatures;

use proptest::prelude::*;
use proptest::sample::Index;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, ..ProptestConfig::default() }
}

/// One blind edit of an input; positions are [`Index`]es so they fit any length.
#[derive(Debug, Clone)]
pub enum Edit {
    Truncate(Index),
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    /// Copies `len` bytes from the first position to the second.
    Duplicate(Index, usize, Index),
    Overwrite(Index, u8),
}

/// Byte sequences that sit on the boundaries decoders get wrong: the largest and an
/// overlong Avro varint, zig-zag -1 (a negative length or block count), a block count
/// of half a billion, NUL, a lone UTF-8 continuation byte, CR LF and a BOM.
const NASTY: &[&[u8]] = &[
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80],
    &[0x01],
    &[0x80, 0x80, 0x80, 0x80, 0x04],
    &[0xfe, 0xff, 0xff, 0xff, 0x03],
    &[0x00],
    &[0x80],
    b"\r\n",
    &[0xef, 0xbb, 0xbf],
];

pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Edit::Flip(i, m)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<Index>(), prop::sample::select(NASTY)).prop_map(|(i, b)| Edit::Insert(i, b.to_vec())),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<Index>(), 1usize..256, any::<Index>()).prop_map(|(i, n, j)| Edit::Duplicate(i, n, j)),
        (any::<Index>(), prop::sample::select(vec![0x00u8, 0x01, 0x7f, 0x80, 0xfe, 0xff]))
            .prop_map(|(i, b)| Edit::Overwrite(i, b)),
    ]
}

/// A few edits in a row: one alone rarely gets past the first check of a format.
pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(), 1..5)
}

/// `input` with `edits` applied in order.
pub fn apply(input: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = input.to_vec();
    for e in edits {
        let len = out.len();
        match e {
            Edit::Truncate(i) => out.truncate(i.index(len + 1)),
            Edit::Flip(i, mask) if len > 0 => out[i.index(len)] ^= mask,
            Edit::Insert(i, bytes) => {
                let at = i.index(len + 1);
                out.splice(at..at, bytes.iter().copied());
            }
            Edit::Delete(i, n) if len > 0 => {
                let at = i.index(len);
                out.drain(at..(at + n).min(len));
            }
            Edit::Duplicate(from, n, to) if len > 0 => {
                let at = from.index(len);
                let chunk = out[at..(at + n).min(len)].to_vec();
                let to = to.index(len + 1);
                out.splice(to..to, chunk);
            }
            Edit::Overwrite(i, b) if len > 0 => out[i.index(len)] = *b,
            _ => {}
        }
    }
    out
}

/// `apply` for the text formats: their readers take `&str`, so bytes that are no
/// longer UTF-8 become U+FFFD, as a lossy read of the file would make them.
pub fn apply_text(input: &str, edits: &[Edit]) -> String {
    String::from_utf8_lossy(&apply(input.as_bytes(), edits)).into_owned()
}

/// What text formats get instead of a number, or where a value was expected: the
/// non-finite, the huge, the negative, the wrong type, the empty and the long.
pub const NOT_A_NUMBER: &[&str] = &[
    "NaN",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    "1e309",
    "-1e309",
    "1e300",
    "-1",
    "-0",
    "0",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "4.9e-324",
    "0x10",
    "1_000",
    "\"12\"",
    "\"\"",
    "true",
    "[]",
    "{}",
    "[1, 2]",
    "",
    " ",
];

/// A long string: long values must be refused or carried, never cut or crashed on.
pub fn long_string() -> String {
    "x".repeat(100_000)
}
