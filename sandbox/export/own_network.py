"""Whether a policy's network namespace is one the component enters itself, after binding.

`namespaces.net = true` means an empty network namespace. A process that restricts itself
(CleanCoin-node since 12-07, a standalone CleanCoin-wallet) binds its listeners first, in the
namespace it was started in, and serves on them once confined: a socket keeps the namespace
it was made in. Its container or unit must then keep its network (a private one, or a deny-all
NetworkPolicy, would leave the listeners unreachable); the policy's own namespace and its
filter still keep the process from anything new. Such a policy is told by its filter: it
accepts connections (accept/accept4), which in an empty namespace can only come to sockets
made before it.
"""

from __future__ import annotations

from ..model import Policy


def serves_sockets_made_before(policy: Policy) -> bool:
    """A network namespace of its own, and connections accepted: on listeners bound before."""
    if not policy.namespaces.net or not policy.seccomp.enabled:
        return False
    return bool({"accept", "accept4"} & policy.reachable_syscalls)
