"""Rewrite the documents made from the options classes: ``python -m edxtomo.options``.

With ``--check``, write nothing and exit 1 when a document is stale.
"""

import argparse
import logging
import sys
from pathlib import Path

from edxtomo.options.docs import generated_files

log = logging.getLogger("edxtomo.options")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root")
    parser.add_argument("--check", action="store_true", help="only report stale documents")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stale = [path for path, text in generated_files(args.root).items()
             if not path.exists() or path.read_text() != text]
    for path in stale:
        if args.check:
            log.error("stale: %s (run python -m edxtomo.options)", path)
        else:
            path.write_text(generated_files(args.root)[path])
            log.info("wrote %s", path)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
