"""cargohold: a self-hosted OCI registry that keeps an organization's own copies of public content."""

__version__ = "0.1.0"
