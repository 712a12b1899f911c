"""The OCI Distribution API (``/v2``): one small module per resource."""
