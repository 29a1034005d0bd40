"""-rpcwhitelist and -rpcwhitelistdefault: which methods each RPC user may call, as bitcoind.

An operator gives a monitoring script its own `-rpcauth` user and lets it call
`getblockcount,getnetworkinfo` only: a leaked password then cannot send coins or stop the
node. bitcoind's rules, kept exactly (httprpc.cpp):

- `-rpcwhitelist=USER:method,method,...` (separators "," and " "). Given more than once for
  the same user, the lists intersect; `-rpcwhitelist=USER` (no colon) alone gives the user an
  empty list unless another line names methods.
- `-rpcwhitelistdefault` (default: on as soon as any -rpcwhitelist is given): a user without a
  list may call nothing. `-rpcwhitelistdefault=0` lets users without a list call everything;
  `-rpcwhitelistdefault=1` with no -rpcwhitelist locks every user out. The cookie's user is
  `__cookie__`, a user like any other here.
- A refused call gets HTTP 403 and no body, a batch as a whole if any of its calls is refused,
  and the log says `RPC User <user> not allowed to call method <method>`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..common.options import Settings, whitelist_default

_SEPARATORS = re.compile(r"[, ]")


@dataclass(frozen=True)
class RpcWhitelist:
    """Per-user method lists and what a user without one may do."""

    lists: Mapping[str, frozenset[str]] = field(default_factory=dict)
    default: bool = False          # True: a user without a list may call nothing

    @classmethod
    def from_options(cls, lines: Sequence[str], default: bool | None = None) -> RpcWhitelist:
        """bitcoind's reading of -rpcwhitelist lines and -rpcwhitelistdefault (None: not given)."""
        lists: dict[str, frozenset[str]] = {}
        for line in lines:
            user, colon, methods = line.partition(":")
            if not colon:
                lists.setdefault(user, frozenset())
                continue
            named = frozenset(m for m in _SEPARATORS.split(methods) if m)
            lists[user] = lists[user] & named if user in lists else named
        return cls(lists, bool(lines) if default is None else default)

    @property
    def active(self) -> bool:
        """Whether any call can be refused at all."""
        return bool(self.lists) or self.default

    def refused(self, user: str, methods: Sequence[str]) -> str | None:
        """The first of `methods` that `user` may not call ("" when the user may call none at
        all), or None when every one is allowed."""
        allowed = self.lists.get(user)
        if allowed is None:
            return "" if self.default else None
        for method in methods:
            if method not in allowed:
                return method
        return None


def from_settings(settings: Settings) -> RpcWhitelist:
    """The whitelist the options of `settings` describe."""
    return RpcWhitelist.from_options(settings.get_all("rpcwhitelist"), whitelist_default(settings))
