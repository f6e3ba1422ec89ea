#!/usr/bin/env python3
"""Where the Worker's code bytes are (issue 19): each function's body size in a wasm module, from
its name section, demangled (c++filt --format=rust, binutils >= 2.36), summed by the crate that
names the function (the first path segment; a generic function counts for the crate that defines
it, whatever it is instantiated with). No twiggy needed.

    bash infra/edge-build.sh
    python3 bench/wasm-size.py edge/target/wasm32-unknown-unknown/release/berth_edge.wasm [TOP]

The input is cargo's output before wasm-bindgen and wasm-opt (the bundle itself has no name
section): the proportions carry over, the absolute sizes are before optimization. Prints the
total, the TOP (default 30) crates and the TOP largest functions.
"""
import collections
import re
import subprocess
import sys


def leb(data, i):
    result = shift = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def functions(data):
    """(body size, raw name) of every defined function."""
    imported, bodies, names = 0, [], {}
    i = 8
    while i < len(data):
        section = data[i]
        size, i = leb(data, i + 1)
        start, i = i, i + size
        if section == 2:  # imports: count the functions, they come first in the index space
            j = start
            count, j = leb(data, j)
            for _ in range(count):
                for _ in range(2):
                    n, j = leb(data, j)
                    j += n
                kind = data[j]
                j += 1
                if kind == 0:
                    _, j = leb(data, j)
                    imported += 1
                elif kind == 1:  # table: reftype, limits
                    flags = data[j + 1]
                    _, j = leb(data, j + 2)
                    if flags & 1:
                        _, j = leb(data, j)
                elif kind == 2:  # memory: limits
                    flags = data[j]
                    _, j = leb(data, j + 1)
                    if flags & 1:
                        _, j = leb(data, j)
                elif kind == 3:  # global: valtype, mutability
                    j += 2
                elif kind == 4:  # tag: attribute, type index
                    _, j = leb(data, j + 1)
        elif section == 10:
            j = start
            count, j = leb(data, j)
            for _ in range(count):
                n, j = leb(data, j)
                bodies.append(n)
                j += n
        elif section == 0:
            n, j = leb(data, start)
            if data[j:j + n] == b"name":
                j += n
                while j < start + size:
                    sub = data[j]
                    sub_size, j = leb(data, j + 1)
                    end = j + sub_size
                    if sub == 1:
                        count, j = leb(data, j)
                        for _ in range(count):
                            index, j = leb(data, j)
                            n, j = leb(data, j)
                            names[index] = data[j:j + n].decode("utf-8", "replace")
                            j += n
                    j = end
    return [(size, names.get(imported + k, f"?{k}")) for k, size in enumerate(bodies)]


def main():
    data = open(sys.argv[1], "rb").read()
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    rows = functions(data)
    demangled = subprocess.run(["c++filt", "--format=rust"], input="\n".join(n for _, n in rows),
                               capture_output=True, text=True, check=True).stdout.split("\n")
    rows = [(size, re.sub(r"\[[0-9a-f]{16}\]", "", name)) for (size, _), name in zip(rows, demangled)]
    total = sum(size for size, _ in rows)
    crates = collections.Counter()
    for size, name in rows:
        match = re.match(r"^[<&\s]*(?:dyn |mut )?([a-z_0-9]+)::", name)
        crates[match.group(1) if match else "(other)"] += size
    print(f"code: {total} bytes in {len(rows)} functions")
    for crate, size in crates.most_common(top):
        print(f"{size:9} {100 * size / total:5.1f}%  {crate}")
    print()
    for size, name in sorted(rows, reverse=True)[:top]:
        print(f"{size:9}  {name[:160]}")


if __name__ == "__main__":
    main()
