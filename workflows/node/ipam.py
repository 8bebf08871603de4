"""A stand-in for the IPAM the node workflows talk to: deterministic, in memory, no network.

Real deployments replace this module's functions with calls to their IPAM; the workflows call it just
in time, from one step per piece of work, as the seeds advise.
"""

from __future__ import annotations

import hashlib
import logging
from ipaddress import IPv4Address

logger = logging.getLogger(__name__)

# node name -> loopback, as the IPAM would hold it (a process-local stand-in).
_ALLOCATIONS: dict[str, IPv4Address] = {}


def _address_for(node_name: str) -> IPv4Address:
    digest = hashlib.sha256(node_name.encode()).digest()
    return IPv4Address(f"10.255.{digest[0]}.{max(digest[1], 1)}")


def allocate_loopback(node_name: str) -> IPv4Address:
    address = _ALLOCATIONS.setdefault(node_name, _address_for(node_name))
    logger.info("IPAM: %s has loopback %s", node_name, address)
    return address


def lookup_loopback(node_name: str) -> IPv4Address | None:
    # Deterministic: what allocate_loopback gave (or would give) this node.
    return _ALLOCATIONS.get(node_name, _address_for(node_name))


def rename(old_name: str, new_name: str) -> None:
    if old_name in _ALLOCATIONS:
        _ALLOCATIONS[new_name] = _ALLOCATIONS.pop(old_name)
    logger.info("IPAM: renamed %s to %s", old_name, new_name)


def release_loopback(node_name: str) -> None:
    _ALLOCATIONS.pop(node_name, None)
    logger.info("IPAM: released the loopback of %s", node_name)
