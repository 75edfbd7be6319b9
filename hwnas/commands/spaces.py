"""``hwnas spaces``: list the registered search spaces."""

from __future__ import annotations

from ..space import SPACES, get_space
from ._common import print_json


def register(sub) -> None:
    p = sub.add_parser("spaces", help="list search spaces (name, size, input shape)",
                       description="List every registered search space with its number of archs, input "
                                   "shape, choices and latency units.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    rows = []
    for name in SPACES.names():
        s = get_space(name)
        rows.append({"name": name, "size": s.size, "input_shape": list(s.input_shape),
                     "choices": {c.label: list(c.values) for c in s.choices},
                     "units": len(s.latency_units()), "description": s.description})
    if args.json:
        print_json(rows)
        return 0
    print(f"{'space':<10} {'archs':>8}  {'input':<9} {'units':>5}  description")
    for r in rows:
        shape = "x".join(map(str, r["input_shape"]))
        size = f"{r['size']:.1e}" if r["size"] >= 10**8 else str(r["size"])  # proxyless: about 2.2e17
        print(f"{r['name']:<10} {size:>8}  {shape:<9} {r['units']:>5}  {r['description']}")
    return 0
