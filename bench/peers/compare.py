#!/usr/bin/env python3
"""Markdown table of the `per-query` lines of store_bench and of a peer, query by query.

    python3 bench/peers/compare.py OURS.txt PEER.txt [PEER_LABEL]

Both files are the standard output of a run with `--per-query`. A peer histogram group
`G+breakdown` is shown beside our group `G` in a column of its own. Ratio = ours / peer on
the same statistic (below 1.0: ours is faster). Counts that differ are flagged.
"""

import sys


def read(path):
    rows = {}
    order = []
    for line in open(path, encoding="utf-8"):
        if not line.startswith("per-query\t"):
            continue
        f = line.rstrip("\n").split("\t")
        _, group, secs, med, p95, runs, count, returned, query = f[:9]
        key = (group, int(secs), query)
        rows[key] = dict(med=float(med), p95=float(p95), runs=int(runs), count=int(count),
                         returned=int(returned))
        order.append(key)
    return rows, order


def main():
    ours, order = read(sys.argv[1])
    peer, _ = read(sys.argv[2])
    label = sys.argv[3] if len(sys.argv) > 3 else "tantivy"
    print(f"| group | query | matches | ours median / p95 ms | {label} median / p95 ms "
          f"| ratio median / p95 | {label} +breakdown median / p95 ms | ratio median / p95 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key in order:
        group, secs, query = key
        o = ours[key]
        p = peer.get(key)
        b = peer.get((group + "+breakdown", secs, query))
        q = query if query else "(all events)"
        q = q.replace("|", "\\|")
        name = group if secs == 0 else f"{group} ({secs} s buckets)"

        def cell(x):
            return f"{x['med']:.1f} / {x['p95']:.1f}" if x else "—"

        def ratio(x):
            return f"{o['med'] / x['med']:.2f} / {o['p95'] / x['p95']:.2f}" if x else "—"

        count = f"{o['count']:,}"
        for x in (p, b):
            if x and x["count"] != o["count"]:
                count += f" (peer {x['count']:,}!)"
        print(f"| {name} | `{q}` | {count} | {cell(o)} | {cell(p)} | {ratio(p)} | "
              f"{cell(b) if b else '—'} | {ratio(b) if b else '—'} |")


if __name__ == "__main__":
    main()
