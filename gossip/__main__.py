"""``python -m gossip agent ...``: see gossip/agent.py."""

from __future__ import annotations

import sys


def main() -> int:
    """Dispatch the sub-command."""
    if len(sys.argv) < 2 or sys.argv[1] != "agent":
        print("usage: python -m gossip agent --name N --port P [--join HOST:PORT]... "
              "[--probe-interval SECONDS] [--cluster-key-file F]", file=sys.stderr)
        return 2
    from gossip.agent import main as agent_main

    return agent_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
