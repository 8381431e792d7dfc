"""List the benchmarks, or run one: ``python -m bench [NAME [ARGS...]]`` (``bench_NAME``
or ``NAME``)."""

from __future__ import annotations

import pkgutil
import runpy
import sys
from pathlib import Path


def main() -> None:
    here = [str(Path(__file__).parent)]
    names = sorted(m.name for m in pkgutil.iter_modules(here) if m.name.startswith("bench_"))
    if len(sys.argv) < 2:
        print("\n".join(names))
        return
    name = sys.argv[1].removeprefix("bench.")
    if name not in names and f"bench_{name}" in names:  # ``verify`` for ``bench_verify``
        name = f"bench_{name}"
    if name not in names:
        sys.exit(f"error: no benchmark {name!r}; there are: {', '.join(names)}")
    sys.argv = [f"bench.{name}", *sys.argv[2:]]
    runpy.run_module(f"bench.{name}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
