"""Outbound requests: the guard every one of them passes, and the client session that enforces it.

Cache fills, imports, sync and webhooks all obtain their HTTP session from
``upstream.http.guarded_session``; ``upstream.guard`` decides which addresses
it may reach.
"""

from .guard import OutboundGuard, PrivateTargetRefused, SchemeRefused, UpstreamRefused, classify

__all__ = ["OutboundGuard", "PrivateTargetRefused", "SchemeRefused", "UpstreamRefused", "classify"]
