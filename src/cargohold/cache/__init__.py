"""Artifact cache: cache rules, credential sets, pull-through fill, freshness, eviction."""
