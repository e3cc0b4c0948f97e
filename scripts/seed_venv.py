#!/usr/bin/env python3
"""Hard-link the large wheels (torch, torchvision, triton, the CUDA libraries) of one venv into another before pip
fills it, so this checkout's venvs (.venv, .venv-jazzy, .venv-vllm) share one copy of them on disk.

Why: the three venvs hold about 19 GB, 14 GB of it the same torch and CUDA files, and CI once ran out of disk
installing the third. pip then finds the seeded distributions installed: at the version a requirement pins it
installs nothing, at another version it replaces them as usual (pip unlinks files, it never writes into them, so
the source venv is untouched). No installer option does this for pip venvs (uv links from its own cache, but does
not read this machine's pip configuration and local wheel folders), hence this script.

Nothing is seeded across file systems (hard links cannot), between different Python versions, or for a distribution
the target already has in any version. Files a distribution installs outside site-packages (console scripts such as
`torchrun`, whose first line names the source venv's interpreter) are not linked; the count is printed.
Run with any Python 3; prints one line. Exit status 0 also when nothing could be seeded (pip then installs as usual).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import sys
from importlib import metadata
from pathlib import Path

DEFAULT_PATTERNS = ("torch", "torchvision", "triton", "nvidia-*", "cuda-*")


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def site_packages(venv: Path) -> Path:
    """The venv's one lib/pythonX.Y/site-packages folder."""
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if len(found) != 1:
        raise ValueError(f"{venv}: expected one lib/python3*/site-packages, found {len(found)}")
    return found[0]


def seed(source: Path, target: Path, patterns: tuple[str, ...] = DEFAULT_PATTERNS) -> dict:
    """Link the distributions of `source` whose canonical name matches a pattern into `target` (both venvs);
    returns what was done, with a `skipped` reason when nothing could be."""
    src_site, dst_site = site_packages(source).resolve(), site_packages(target).resolve()
    if src_site.parent.name != dst_site.parent.name:
        return {"skipped": f"different Python versions ({src_site.parent.name} vs {dst_site.parent.name})"}
    if src_site.stat().st_dev != dst_site.stat().st_dev:
        return {"skipped": "different file systems (hard links cannot cross them)"}
    present = {canonical(d.metadata["Name"]) for d in metadata.distributions(path=[str(dst_site)])}
    done = {"distributions": 0, "files": 0, "bytes": 0, "outside_site_packages": 0}
    for dist in metadata.distributions(path=[str(src_site)]):
        name = canonical(dist.metadata["Name"])
        if name in present or not any(fnmatch.fnmatchcase(name, p) for p in patterns) or dist.files is None:
            continue
        for entry in dist.files:
            src = (src_site / entry).resolve()
            if not src.is_relative_to(src_site) or not src.is_file():
                done["outside_site_packages"] += src.is_file()
                continue
            dst = dst_site / src.relative_to(src_site)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                os.link(src, dst)
                done["files"] += 1
                done["bytes"] += src.stat().st_size
        present.add(name)
        done["distributions"] += 1
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="venv to link from (left unchanged)")
    parser.add_argument("target", type=Path, help="venv to link into (created beforehand with python -m venv)")
    parser.add_argument("--only", nargs="+", default=list(DEFAULT_PATTERNS), metavar="PATTERN",
                        help="distribution name patterns (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        done = seed(args.source, args.target, tuple(canonical(p) for p in args.only))
    except (OSError, ValueError) as error:
        print(f"seed-venv: nothing seeded into {args.target} ({error}); pip installs everything", file=sys.stderr)
        return 0
    if "skipped" in done:
        print(f"seed-venv: nothing seeded into {args.target}: {done['skipped']}; pip installs everything")
    else:
        print(f"seed-venv: {done['distributions']} distributions ({done['files']} files, "
              f"{done['bytes'] / 2**30:.2f} GiB) linked from {args.source} into {args.target}; "
              f"{done['outside_site_packages']} files outside site-packages not linked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
