//! Avro single-object encoding of the wire contract.
//!
//! In: the records of [`records`]; out: bytes framed as the Avro specification's
//! single-object encoding (`C3 01`, the 8-byte little-endian CRC-64-AVRO fingerprint of
//! the writer schema's canonical form, then the Avro binary body), so any Avro
//! implementation that holds `schemas/*.avsc` can decode a record by its fingerprint.
//!
//! Guarantees: decoding never panics on arbitrary bytes; every refusal is a
//! [`CodecError`] that names what is wrong. A reader knows the writer schemas it was
//! given ([`Codec::with_writer_schema`]) and resolves them to its own, so readers and
//! writers of different schema versions interoperate as long as added fields carry
//! defaults.

pub mod metric_names;
pub mod records;

use std::collections::HashMap;
use std::marker::PhantomData;

use apache_avro::{rabin::Rabin, Schema};

pub use records::*;

/// The two marker bytes that open every single-object encoded record.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];
/// Magic plus fingerprint.
pub const HEADER_LEN: usize = 10;

/// Largest string, byte string or block of items a decoded record may claim. A record
/// must fit in one Kafka message (1 MiB by default), so no honest length comes near
/// this. Without it apache-avro accepts claims of up to 512 MiB and reserves room for
/// that many items before reading one: 15 bytes that claim 2²⁹ metrics asked for
/// 30 GB and aborted the process (found by tests/fuzz).
pub const MAX_DECODE_ALLOCATION: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record is {len} bytes, shorter than the {HEADER_LEN}-byte Avro single-object header")]
    TooShort { len: usize },
    #[error("not Avro single-object encoding: starts with {found:02x?}, expected [c3, 01]")]
    BadMagic { found: [u8; 2] },
    #[error("unknown schema fingerprint {fingerprint:016x}: not a {expected} schema this reader knows")]
    UnknownFingerprint { fingerprint: u64, expected: String },
    #[error("{schema} body does not decode: {source}")]
    Body {
        schema: String,
        #[source]
        source: Box<apache_avro::Error>,
    },
    #[error("{schema} record has {trailing} unexpected bytes after its body")]
    Trailing { schema: String, trailing: usize },
    #[error("cannot encode {schema}: {source}")]
    Encode {
        schema: String,
        #[source]
        source: Box<apache_avro::Error>,
    },
    #[error("invalid Avro schema: {0}")]
    Schema(#[source] Box<apache_avro::Error>),
}

/// The CRC-64-AVRO fingerprint of a schema's parsing canonical form, as a number
/// (the wire carries it little-endian).
pub fn fingerprint(schema: &Schema) -> u64 {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    let mut le = [0u8; 8];
    le.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(le)
}

/// Reads the fingerprint out of a framed record without decoding the body.
pub fn peek_fingerprint(bytes: &[u8]) -> Result<u64, CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::TooShort { len: bytes.len() });
    }
    if bytes[..2] != MAGIC {
        return Err(CodecError::BadMagic { found: [bytes[0], bytes[1]] });
    }
    let mut le = [0u8; 8];
    le.copy_from_slice(&bytes[2..HEADER_LEN]);
    Ok(u64::from_le_bytes(le))
}

/// Encoder and decoder of one record type. Build it once per stage and share it:
/// parsing a schema is far costlier than a record.
pub struct Codec<T: Record> {
    schema: Schema,
    /// Of `schema`, computed once: it hashes the schema's canonical form, which costs
    /// more than decoding a record.
    fingerprint: u64,
    header: [u8; HEADER_LEN],
    /// Writer schemas this reader accepts, by fingerprint; its own is one of them.
    writers: HashMap<u64, Schema>,
    name: String,
    _record: PhantomData<fn() -> T>,
}

impl<T: Record> std::fmt::Debug for Codec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").field("schema", &self.name).finish()
    }
}

impl<T: Record> Codec<T> {
    /// A codec writing and reading the schema shipped in `schemas/` for `T`.
    pub fn new() -> Self {
        // The shipped schemas are compiled in and covered by tests: failing to parse one
        // is a build defect, not a runtime condition.
        Self::with_schema(T::SCHEMA).expect("shipped schema parses")
    }

    /// A codec writing and reading `schema_json` (a version of `T`'s schema).
    pub fn with_schema(schema_json: &str) -> Result<Self, CodecError> {
        // Process-wide in apache-avro and fixed by its first use, which is a decode
        // through a codec built here.
        apache_avro::util::max_allocation_bytes(MAX_DECODE_ALLOCATION);
        let schema = Schema::parse_str(schema_json).map_err(|e| CodecError::Schema(Box::new(e)))?;
        let fp = fingerprint(&schema);
        let mut header = [0u8; HEADER_LEN];
        header[..2].copy_from_slice(&MAGIC);
        header[2..].copy_from_slice(&fp.to_le_bytes());
        let name = match &schema {
            Schema::Record(r) => r.name.name.clone(),
            _ => "record".to_owned(),
        };
        let writers = HashMap::from([(fp, schema.clone())]);
        Ok(Self { schema, fingerprint: fp, header, writers, name, _record: PhantomData })
    }

    /// Also accept records written with another version of the schema; they are
    /// resolved to this codec's schema (added fields take their defaults, removed
    /// fields are dropped).
    pub fn with_writer_schema(mut self, schema_json: &str) -> Result<Self, CodecError> {
        let schema = Schema::parse_str(schema_json).map_err(|e| CodecError::Schema(Box::new(e)))?;
        self.writers.insert(fingerprint(&schema), schema);
        Ok(self)
    }

    /// Fingerprint of the schema this codec writes.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Appends the framed record to `out` (cleared first), reusing its allocation.
    pub fn encode_into(&self, record: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.clear();
        out.extend_from_slice(&self.header);
        apache_avro::write_avro_datum_ref(&self.schema, record, out)
            .map_err(|e| CodecError::Encode { schema: self.name.clone(), source: Box::new(e) })?;
        Ok(())
    }

    pub fn encode(&self, record: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(record, &mut out)?;
        Ok(out)
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let fp = peek_fingerprint(bytes)?;
        let writer = self
            .writers
            .get(&fp)
            .ok_or_else(|| CodecError::UnknownFingerprint { fingerprint: fp, expected: self.name.clone() })?;
        let body_err = |e: apache_avro::Error| CodecError::Body { schema: self.name.clone(), source: Box::new(e) };
        let mut body = &bytes[HEADER_LEN..];
        let resolve_to = (fp != self.fingerprint()).then_some(&self.schema);
        let value = apache_avro::from_avro_datum(writer, &mut body, resolve_to).map_err(body_err)?;
        if !body.is_empty() {
            return Err(CodecError::Trailing { schema: self.name.clone(), trailing: body.len() });
        }
        apache_avro::from_value::<T>(&value).map_err(body_err)
    }
}

impl<T: Record> Default for Codec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Record> Clone for Codec<T> {
    fn clone(&self) -> Self {
        Self {
            schema: self.schema.clone(),
            fingerprint: self.fingerprint,
            header: self.header,
            writers: self.writers.clone(),
            name: self.name.clone(),
            _record: PhantomData,
        }
    }
}

#[cfg(test)]
mod tests;
