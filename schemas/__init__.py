"""Avro schemas of every topic and file record, and their wire-format codecs."""
