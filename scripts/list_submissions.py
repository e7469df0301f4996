"""Print the "Shipped" table of submissions/README.md from the submission manifests.

    python scripts/list_submissions.py            # every method's real runs
    python scripts/list_submissions.py --ci       # the <method>.ci regression baselines

The table is generated, not written by hand, so a re-made submission cannot leave a stale
folder name or command behind in the README.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SUBMISSIONS = Path(__file__).resolve().parents[1] / "submissions"


def rows(ci: bool) -> list[str]:
    lines = ["| folder | version | protocol grid | made by |", "|---|---|---|---|"]
    for manifest_path in sorted(SUBMISSIONS.glob("*/*/manifest.json")):
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        method, protocol = manifest["method"], manifest["protocol"]
        if method["label"].endswith(".ci") != ci:
            continue
        episodes = len(protocol["categories"]) * len(protocol["shots"]) * len(protocol["seeds"])
        grid = (
            f"{protocol['name']}, K = {', '.join(map(str, protocol['shots']))}, "
            f"seeds {', '.join(map(str, protocol['seeds']))}, {episodes} episodes"
        )
        folder = manifest_path.parent.relative_to(SUBMISSIONS).as_posix()
        lines.append(f"| `{folder}` | {method['version']} | {grid} | `{manifest['command']}` |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="list the .ci baselines instead")
    print("\n".join(rows(parser.parse_args().ci)))


if __name__ == "__main__":
    main()
