"""`python -m tests.chaos`: run chaos scenarios against real peers and print a JSON summary.

    python -m tests.chaos --list
    python -m tests.chaos --scenario kill-restart --seed 1 --duration 60
    python -m tests.chaos --scenario all --seed 7 --duration 120   # every scenario in turn
    python -m tests.chaos --scenario mixed --exclusive-keys           # no two writers per key
    python -m tests.chaos --scenario partition --netns                # peers in namespaces
    python -m tests.chaos --scenario soak --seed 3 --duration 3600    # the long soak

Peers run each in a network namespace of its own where that is possible (root, `ip`, `nft`),
on 127.0.0.1 otherwise or with --loopback; with `--scenario all` the scenarios this machine
cannot run (network faults without namespaces, say) are skipped and named.
Exits 1 when any run found a violation. Peer data and logs go to a temporary directory (named
in the summary as "root"): removed after a clean run, its logs kept after a failed one, all
of it kept with --keep.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from tests.chaos import netns
from tests.chaos.runner import CONVERGE_TIMEOUT, Unsupported, default_netns, missing, run
from tests.chaos.scenarios import SCENARIOS


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run the scenarios, print the summaries; the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--list", action="store_true", help="name the scenarios and exit")
    parser.add_argument("--scenario", default="mixed", help="a scenario name, or 'all'")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of faults per run")
    parser.add_argument("--converge-timeout", type=float, default=CONVERGE_TIMEOUT)
    parser.add_argument(
        "--exclusive-keys", action="store_true", help="each worker writes keys of its own"
    )
    parser.add_argument("--keep", action="store_true", help="keep peer data and logs")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--netns", action="store_true", default=None, help="peers in network namespaces"
    )
    where.add_argument("--loopback", dest="netns", action="store_false", help="peers on 127.0.0.1")
    args = parser.parse_args(argv)
    if args.list:
        for scenario in SCENARIOS.values():
            where_ = "netns" if scenario.netns else "any"
            print(f"{scenario.name:22} {where_:6} {scenario.description}")
        return 0
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; --list names them")
    if args.netns and not netns.available():
        parser.error("--netns: network namespaces need root, `ip` and `nft` (nftables)")
    # SIGTERM unwinds like Ctrl-C: peers stopped, namespaces removed, tmpfs unmounted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    failed = False
    for name in names:
        use_netns = default_netns(SCENARIOS[name]) if args.netns is None else args.netns
        lacking = missing(SCENARIOS[name], use_netns)
        if lacking and len(names) > 1:
            print(f"skipped {name}: needs {lacking}", file=sys.stderr)
            continue
        root = Path(tempfile.mkdtemp(prefix=f"qfs-chaos-{name}-"))
        try:
            summary = run(
                name,
                args.seed,
                args.duration,
                root,
                args.converge_timeout,
                args.exclusive_keys,
                use_netns,
            )
        except Unsupported as e:
            shutil.rmtree(root, ignore_errors=True)
            parser.error(str(e))
        print(json.dumps(summary, indent=2, default=str), flush=True)
        failed |= bool(summary["violations"])
        if args.keep:
            continue
        if summary["violations"]:
            for data in root.glob("cluster*/p*"):  # the peers' data: gigabytes, logs are kept
                shutil.rmtree(data, ignore_errors=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
