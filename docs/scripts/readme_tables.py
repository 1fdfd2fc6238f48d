"""Copy the summarizer's tables that README quotes from results/table.md into README.md.

    python -m pfedhn.summarize results/runs && python docs/scripts/readme_tables.py

README quotes five of the tables verbatim (their first lines begin as ``QUOTED``): accuracy on
pFedHN's splits, accuracy in pFedLA's setting, the published values, targets of different sizes
and novel clients. Each README block (a paragraph of table lines) whose first line begins as one
of them is replaced by the table of results/table.md that begins the same way; a README without
such a block, or a table.md without such a table, is an error (a renamed header is noticed, not
skipped).
"""

from __future__ import annotations

import argparse
from pathlib import Path

QUOTED = (
    "| method | MNIST",
    "| method | CIFAR-10 (4 classes",
    "| cell | published",
    "| method | dataset, clients | rounds | size",
    "| method | dataset, clients (novel)",
)


def blocks(text: str) -> list[str]:
    """``text`` cut at blank lines."""
    return text.split("\n\n")


def quoted_tables(table_md: str) -> dict[str, str]:
    """Header start → the table of ``table_md`` that begins with it."""
    found = {}
    for block in blocks(table_md):
        for start in QUOTED:
            if block.strip().startswith(start):
                found[start] = block.strip()
    missing = [start for start in QUOTED if start not in found]
    if missing:
        raise SystemExit(f"results/table.md has no table beginning {missing}: rerun python -m pfedhn.summarize")
    return found


def replace_tables(readme: str, tables: dict[str, str]) -> str:
    """``readme`` with each quoted block replaced by its table."""
    out, replaced = [], set()
    for block in blocks(readme):
        start = next((s for s in QUOTED if block.strip().startswith(s)), None)
        if start is not None:
            replaced.add(start)
            block = tables[start]
        out.append(block)
    missing = [start for start in QUOTED if start not in replaced]
    if missing:
        raise SystemExit(f"README.md quotes no table beginning {missing}: paste it once by hand")
    return "\n\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, default=Path("results/table.md"))
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    args = parser.parse_args()
    args.readme.write_text(replace_tables(args.readme.read_text(), quoted_tables(args.table.read_text())))


if __name__ == "__main__":
    main()
