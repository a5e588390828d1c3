"""Session affinity for the Serve deployment: a request router that sends a session's requests to one replica.

A request's session key (computed by the ingress, :func:`rwkv_ggml.ray.serve.session_key`) travels as its
``multiplexed_model_id``. :class:`SessionAffinityRouter` ranks the replicas by rendezvous hashing of the
key with each replica's id: the top replica is tried first, the others (least loaded first) when it is
full; a request without a key goes to the less loaded of two random replicas, as Serve's default router
does. The choice needs no shared table, so it is the same in every ingress replica at once, and when a
replica leaves (it died, or autoscaling removed it) only its own sessions move; a new replica takes
about 1/n of them.

Needs Ray's pluggable request routers (``ray.serve.request_router``, Ray >= 2.46); with an older Ray,
:func:`request_router_config` returns None and Serve's multiplexing (which the replicas register the keys
with) gives a best-effort affinity instead.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

try:
    from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

    HAVE_REQUEST_ROUTERS = True
except ImportError:  # pragma: no cover - an older Ray
    HAVE_REQUEST_ROUTERS = False


def rendezvous_order(key: str, replica_ids: list[str]) -> list[str]:
    """The replica ids, most preferred first, for a session key (highest random weight hashing)."""

    def weight(replica: str) -> bytes:
        return hashlib.blake2b(f"{key}\x00{replica}".encode("utf-8", "surrogatepass"), digest_size=8).digest()

    return sorted(replica_ids, key=weight, reverse=True)


if HAVE_REQUEST_ROUTERS:

    class SessionAffinityRouter(RequestRouter):
        """Serve request router: a session's requests to its rendezvous-hashed replica, then any."""

        async def choose_replicas(
            self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
        ) -> list[list[RunningReplica]]:
            if not candidate_replicas:
                return []
            key = pending_request.metadata.multiplexed_model_id if pending_request is not None else ""
            if not key:
                return [random.sample(candidate_replicas, min(2, len(candidate_replicas)))]
            by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
            order = rendezvous_order(key, list(by_id))
            return (
                [[by_id[order[0]]], [by_id[i] for i in order[1:]]] if len(order) > 1 else [[by_id[order[0]]]]
            )


def request_router_config() -> Any:
    """The deployment's ``request_router_config`` for :class:`SessionAffinityRouter`, or None when this Ray
    has no pluggable request routers."""
    if not HAVE_REQUEST_ROUTERS:
        return None
    from ray.serve.config import RequestRouterConfig

    # a class is accepted too (serialized with the deployment), though the annotation names only strings
    return RequestRouterConfig(request_router_class=SessionAffinityRouter)  # type: ignore[arg-type]


__all__ = ["rendezvous_order", "request_router_config"]
