"""Decodes Augur's Avro single-object records with fastavro, an independent Avro
implementation, knowing nothing but the schema files.

Usage: decode.py SCHEMA_DIR RECORDS_FILE
RECORDS_FILE holds records framed as 4-byte big-endian length + single-object bytes.
Prints one JSON object per record: {"schema": <record name>, "record": <decoded>}.
Exits non-zero, naming the record, when a fingerprint matches no schema file.
"""
import datetime
import io
import json
import pathlib
import struct
import sys

import fastavro
import fastavro.schema

MAGIC = b"\xc3\x01"


def load_schemas(folder):
    by_fingerprint = {}
    for path in sorted(pathlib.Path(folder).glob("*.avsc")):
        parsed = fastavro.parse_schema(json.loads(path.read_text()))
        canonical = fastavro.schema.to_parsing_canonical_form(parsed)
        # fastavro gives the CRC-64-AVRO fingerprint as the hex of its little-endian
        # bytes: the same bytes the single-object header carries.
        fp = fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")
        by_fingerprint[fp] = parsed
    return by_fingerprint


def plain(value):
    """JSON-friendly: timestamps back to epoch milliseconds, bytes to lists of ints."""
    if isinstance(value, datetime.datetime):
        return round(value.timestamp() * 1000)
    if isinstance(value, bytes):
        return list(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def main(schema_dir, records_file):
    schemas = load_schemas(schema_dir)
    data = pathlib.Path(records_file).read_bytes()
    pos, n = 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        frame = data[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if frame[:2] != MAGIC:
            sys.exit(f"record {n}: no single-object magic")
        fp = frame[2:10].hex()
        if fp not in schemas:
            sys.exit(f"record {n}: fingerprint {fp} matches no schema in {schema_dir}")
        schema = schemas[fp]
        body = io.BytesIO(frame[10:])
        record = fastavro.schemaless_reader(body, schema)
        if body.read():
            sys.exit(f"record {n}: trailing bytes after the body")
        print(json.dumps({"schema": schema["name"], "record": plain(record)}))
        n += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
