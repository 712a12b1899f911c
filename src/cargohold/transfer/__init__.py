"""Import, copy, sync and export between registries and OCI layouts (DESIGN.md layer ``transfer/``)."""
