"""The machine code a request runs, by function: 64-byte lines and instructions per request.

    footprint.py CALLGRIND_A JITDUMP_A REQUESTS_A CALLGRIND_B JITDUMP_B REQUESTS_B

From two runs of fakehost.mjs under callgrind (--dump-instr=yes) with V8's jitdump (--perf-prof)
that differ only in the number of timed requests (bench/footprint/run.sh makes them): an
instruction counts if it ran at least once per extra request, so start-up work (parsing the
configuration, verifying the first token) drops out, however many times its loops ran.
V8 names each compiled Wasm function after the module's name section."""
import sys, struct, collections, bisect

def jit_loads(jd):
    data = open(jd, "rb").read()
    pos = 40; loads = []
    while pos + 16 <= len(data):
        rid, total, ts = struct.unpack_from("<IIQ", data, pos)
        if total == 0: break
        if rid == 0:
            pid, tid, vma, addr, size, idx = struct.unpack_from("<IIQQQQ", data, pos + 16)
            end = data.index(b"\0", pos + 56)
            loads.append((addr, size, data[pos + 56:end].decode(errors="replace")))
        pos += total
    loads.sort()
    return loads

def costs(out, jd):
    loads = jit_loads(jd); starts = [a for a, _, _ in loads]
    ir = collections.Counter(); skip = False; last = 0; npos = 1
    for line in open(out, errors="replace"):
        c = line[:1]
        if line.startswith("positions:"):
            npos = len(line.split()) - 1; continue
        if c in "0123456789+-*":
            parts = line.split(); a = parts[0]
            if a.startswith("0x"): addr = int(a, 16)
            elif a[0] == "+": addr = last + int(a[1:], 16)
            elif a[0] == "-": addr = last - int(a[1:], 16)
            elif a == "*": addr = last
            else: addr = int(a)
            last = addr
            if skip: skip = False; continue
            if len(parts) > npos: ir[addr] += int(parts[npos])
        elif line.startswith("calls="):
            skip = True
    by = collections.Counter()
    for addr, n in ir.items():
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0 and addr < loads[i][0] + loads[i][1]:
            name = loads[i][2].rsplit("-", 2)[0] if "-turbofan" in loads[i][2] or "-liftoff" in loads[i][2] else loads[i][2]
            by[(name, addr - loads[i][0])] += n
    return by

a, b = costs(sys.argv[1], sys.argv[2]), costs(sys.argv[4], sys.argv[5])
extra = int(sys.argv[6]) - int(sys.argv[3])
lines = collections.defaultdict(set); instr = collections.Counter()
for key in set(a) | set(b):
    d = b[key] - a[key]
    if d >= extra * 0.9:  # run at least once per request
        lines[key[0]].add(key[1] // 64); instr[key[0]] += d / extra
def in_module(name: str) -> bool:
    """The module's own functions (V8 calls them "JS:<name>"); not V8's builtins and stubs,
    nor the stand-in host's JavaScript."""
    return (name.startswith("JS:") and not name.startswith(("JS:wasm-to-js", "JS:js-to-wasm", "JS:^", "JS:*", "JS:~"))
            and " file:" not in name and " node:" not in name)


module = {n: ls for n, ls in lines.items() if in_module(n)}
total = sum(len(v) for v in module.values())
print(f"the module's code run on every request: {total} lines of 64 bytes ({total * 64 / 1024:.1f} KiB), "
      f"{sum(instr[n] for n in module):,.0f} instructions")
for name, ls in sorted(module.items(), key=lambda kv: -len(kv[1])):
    print(f"{len(ls):5} lines {instr[name]:8,.0f} instr  {name[3:][:150]}")
