"""Pure OCI domain: digests, names, media types, manifests and errors. No I/O lives here."""
