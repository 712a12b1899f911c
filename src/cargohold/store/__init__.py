"""Durable state: the blob store, upload sessions and the metadata database."""
