"""The local registry's operations: push, pull, delete, tags, referrers and integrity checks."""
