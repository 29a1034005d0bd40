"""Functional: a few kills of the crash campaign (tests/functional/crash_campaign.py) inside
`make test`; `make crashtest` runs the long one.

Three kills on one datadir, of the node, its process group or (CleanCoin-node) its wallet
process, at random moments of the campaign's workload (sends, blocks, encryption, backups,
reorganisations and rewinds, rescans, wallet unload/load), each followed by every invariant
of the campaign; the fresh rescan, the dearest, after the last kill only. The zygote is left
to `make crashtest`: after its death `stop` takes ten seconds today (issue #11 item 11), too
long for every run; so are the headers-first sync datadirs.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from crash_campaign import Campaign

KILLS = 3


def test_a_short_crash_campaign(tmp_path: Path) -> None:
    seed = int(os.environ.get("CLEANCOIN_TEST_SEED", random.randrange(1 << 30)))
    campaign = Campaign(tmp_path, KILLS, KILLS, seed, time.monotonic() + 120,
                        targets=("node", "group", "wallet"), fresh_every=KILLS)
    records = campaign.run()
    assert len(records) == KILLS, (seed, records)
    print(f"seed {seed}:", [(r.target, r.during, round(r.delay, 2)) for r in records])
