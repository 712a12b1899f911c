"""The ``cargohold`` command line."""
