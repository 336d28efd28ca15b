"""bench/RESULTS.md, from every CPU's saved results: `python bench/report.py > bench/RESULTS.md`.

One section per CPU model (bench/results/<cpu>/, written by the benchmarks' --save), newest first:
times are comparable only within one section. RESULTS.md is this script's output, never edited by
hand.
"""

import glob
import json
import math
import os
import statistics

import machine

# Gates per hidden unit of run.py's cells. Restated from the kernels' cell table on purpose: this
# script reads saved results only and does not import fusedrnn (an editable install rebuilds on
# import and prints to stdout, which is RESULTS.md here).
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def w_hh_bytes(cell, H):
    """The bytes of a float32 W_hh of run.py's layers (I = H, no projection)."""
    return GATES[cell] * H * H * 4


def ms(v):
    return "" if v is None else f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.3f}"


def num(v, digits=2):
    return "" if v is None else f"{v:.{digits}f}"


def note(row, rows, busy, far_ns=None):
    """'busy' where other processes took CPU during the measurement, or the FMA probe timed with it
    ran far below the run's peak (after retries); 'noisy' where a median is far above its min; 'far'
    where the cross-core probe timed with it answered above far_ns (the cores further apart than at
    the run's best moment: see machine.FAR)."""
    if row.get("others_cpu", 0) >= busy:
        probe = f", FMA probe {row['fma_gflops']:.0f} GFLOP/s" if "fma_gflops" in row else ""
        return f"busy: others took {100 * row['others_cpu']:.0f}% of the CPUs{probe}"
    marks = ["noisy"] if any(r["median_ms"] > 1.5 * r["min_ms"] for r in rows) else []
    if is_far(row, far_ns):
        marks.append("far")
    return ", ".join(marks)


def is_far(row, far_ns):
    """Whether the row's cross-core probe answered above far_ns (None: the run has no probe)."""
    return far_ns is not None and (row.get("cross_core_ns") or 0) > far_ns


def far_text(far_ns, far, count, doc):
    """The sentences under a drop-in table that explain its cross-core column."""
    text = (f"Cross-core ns then: the median of `fusedrnn._core.cross_core_latency_ns` timed after each round "
            f"of the row's calls; far (above {far_ns:.0f} ns, {machine.FAR:.0f}x the run's near latency, the lower "
            "quartile of its probes): measured while "
            f"the host kept this process's CPUs further apart, when the same calls ran slower ({far} of {count} "
            "rows; see the run.py section).")
    if doc.get("near_cross_core_ns"):
        retried = sum(bool(r.get("retries")) for r in doc.get("steps", doc.get("rows", [])))
        text += (f" A row whose probe answered more than {machine.FAR:.0f}x from the latency at the run's start "
                 f"({doc['near_cross_core_ns']:.0f} ns), further or nearer (one core's two hardware threads), was "
                 f"measured again after {doc['displaced_pause_s']} s, twice at most ({retried} rows were).")
    return text


def far_threshold(rows):
    """The cross-core latency above which a row is marked far: FAR times the run's near latency,
    the lower quartile of its rows' probes. (Not the fastest probe: at one moment the two CPUs
    answered 14 ns apart, one core's two hardware threads, which made nearly every row far.)"""
    probed = [r["cross_core_ns"] for r in rows if math.isfinite(r.get("cross_core_ns") or math.nan)]
    if not probed:
        return None
    near = probed[0] if len(probed) == 1 else statistics.quantiles(probed, n=4, method="inclusive")[0]
    return machine.FAR * near


def table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]
    return out


def configurations(doc):
    """run.py's rows by configuration: {(cell, B, H, mode): {contender: row}}, in the run's order."""
    by = {}
    for r in doc["rows"]:
        by.setdefault((r["cell"], r["B"], r["H"], r["mode"]), {})[r["contender"]] = r
    return by


def targets(doc):
    """Issue #5's targets: [(what, threshold, at_least, [(value, where), ...])]."""
    # Measurements that other processes disturbed (marked busy) are left out.
    busy = doc["timing"]["busy_threshold"]
    ours = [r for r in doc["rows"] if r["contender"] == "fusedrnn" and r["ratio_to_torch"] is not None
            and r.get("others_cpu", 0) < busy]

    def ratios(pred, key="ratio_to_torch"):
        return [(r[key], f"{r['cell']} B={r['B']} H={r['H']} {r['mode']}") for r in ours if pred(r)]

    def rnn_gru(r):
        return r["cell"] in ("rnn", "gru")

    n = doc["threads"]
    gemm = (doc["peaks"]["gemm"] or {}).get("clean", {"shapes": []})["shapes"]
    return [
        ("LSTM inference B=64 H=256, x PyTorch", 1.0, True,
         ratios(lambda r: r["cell"] == "lstm" and r["mode"] == "inference" and r["B"] == 64 and r["H"] == 256)),
        ("LSTM inference B=64 H=256, fraction of the FMA peak", 0.85, True,
         ratios(lambda r: r["cell"] == "lstm" and r["mode"] == "inference" and r["B"] == 64 and r["H"] == 256,
                "peak_fraction")),
        ("LSTM training B=64, x PyTorch", 1.3, True,
         ratios(lambda r: r["cell"] == "lstm" and r["mode"] == "training" and r["B"] == 64)),
        ("GRU and RNN training, every size, x PyTorch", 2.0, True,
         ratios(lambda r: rnn_gru(r) and r["mode"] == "training")),
        ("GRU and RNN inference, every size, x PyTorch", 1.5, True,
         ratios(lambda r: rnn_gru(r) and r["mode"] == "inference")),
        ("LSTM inference B=1, x PyTorch", 1.5, True,
         ratios(lambda r: r["cell"] == "lstm" and r["mode"] == "inference" and r["B"] == 1)),
        ("LSTM training B=1, x PyTorch", 2.0, True,
         ratios(lambda r: r["cell"] == "lstm" and r["mode"] == "training" and r["B"] == 1)),
        ("GRU and RNN inference B=1, x PyTorch", 3.0, True,
         ratios(lambda r: rnn_gru(r) and r["mode"] == "inference" and r["B"] == 1)),
        ("GRU and RNN training B=1, x PyTorch", 5.0, True,
         ratios(lambda r: rnn_gru(r) and r["mode"] == "training" and r["B"] == 1)),
        ("merged GEMM, ours / NumPy float32 matmul", 0.9, True,
         [(s["ours_gflops"] / s["numpy_gflops"], f"M={s['M']} N={s['N']} K={s['K']}") for s in gemm]),
        (f"1 -> {n} threads at B=64 H=512, ours", 1.8, True,
         [(s["fusedrnn"]["speedup"], f"{s['cell']} {s['mode']}") for s in doc["scaling"]
          if s["H"] == 512 and s.get("others_cpu", 0) < busy]),
        ("training-step peak memory, ours / PyTorch", 1.0, False,
         [(m["ratio"], f"{m['cell']} B={m['B']} H={m['H']}") for m in doc["memory"] if "ratio" in m]),
        ("stretch: bf16-weight inference B=1, x our float32", 1.7, True,
         [(bf16_speedup(b), f"{b['cell']} H={b['H']}") for b in doc.get("bf16", [])
          if b.get("others_cpu", 0) < busy]),
    ]


def roofline_ms(row, fma_gflops, bandwidth):
    """A lower bound on the time of one of run.py's calls (float32, I = H): its merged GEMMs at the
    FMA peak, and each step's recurrent product at the peak or at the rate at which W_hh can be read
    once (the read bandwidth measured at W_hh's size), whichever is slower. Inference: the input
    projections, then T steps; training adds dx, dW_ih and dW_hh (merged GEMMs) and T backward steps
    (dh W_hh). Loose: the cells' pointwise math and the steps' barriers are left out. None where the
    bandwidth at that size was not measured."""
    G, T, B, I, H = GATES[row["cell"]], row["T"], row["B"], row["I"], row["H"]
    weight_bytes = w_hh_bytes(row["cell"], H)
    # The peaks timed among this row's contenders where run.py took them (see its measure()).
    fma_gflops = row.get("fma_gflops", fma_gflops)
    bandwidth = {weight_bytes: row["read_gbs"]} if "read_gbs" in row else bandwidth
    if weight_bytes not in bandwidth:
        return None
    training = row["mode"] == "training"
    flops_per_s = fma_gflops * 1e9
    input_flops, step_flops = 2 * T * B * I * G * H, 2 * B * H * G * H
    gemm_flops = input_flops * (3 if training else 1) + (T * step_flops if training else 0)
    step_s = max(step_flops / flops_per_s, weight_bytes / (bandwidth[weight_bytes] * 1e9))
    return 1e3 * (gemm_flops / flops_per_s + (2 if training else 1) * T * step_s)


def cpu_targets(doc):
    """Issue #17's targets on run.py's measurements: [(what, threshold, [(ratio, where, row), ...])],
    each row carrying its roofline (roofline_ms) and PyTorch's median."""
    busy = doc["timing"]["busy_threshold"]
    bandwidth = {b["bytes"]: b["gbs"] for b in doc["peaks"].get("read_bandwidth") or []}
    fma = max(doc["peaks"]["fma_gflops"])
    rows = []
    for c in configurations(doc).values():
        ours, theirs = c["fusedrnn"], c.get("torch")
        if theirs is None or ours.get("others_cpu", 0) >= busy:
            continue
        rows.append(dict(ours, torch_ms=theirs["median_ms"], roofline_ms=roofline_ms(ours, fma, bandwidth)))

    def ratios(pred):
        return [(r["ratio_to_torch"], f"{r['cell']} B={r['B']} H={r['H']} {r['mode']}", r) for r in rows if pred(r)]

    def rnn_gru(r):
        return r["cell"] in ("rnn", "gru")

    return [
        ("LSTM B=64 inference, x PyTorch", 1.0,
         ratios(lambda r: r["cell"] == "lstm" and r["B"] == 64 and r["mode"] == "inference")),
        ("LSTM B=64 training, x PyTorch", 1.3,
         ratios(lambda r: r["cell"] == "lstm" and r["B"] == 64 and r["mode"] == "training")),
        ("GRU and RNN training, every size, x PyTorch", 2.0, ratios(lambda r: rnn_gru(r) and r["mode"] == "training")),
        ("GRU and RNN inference, every size, x PyTorch", 1.5, ratios(lambda r: rnn_gru(r) and r["mode"] == "inference")),
        ("LSTM B=1, x PyTorch", 1.5, ratios(lambda r: r["cell"] == "lstm" and r["B"] == 1)),
        ("GRU and RNN B=1 inference, x PyTorch", 3.0,
         ratios(lambda r: rnn_gru(r) and r["B"] == 1 and r["mode"] == "inference")),
        ("GRU and RNN B=1 training, x PyTorch", 5.0,
         ratios(lambda r: rnn_gru(r) and r["B"] == 1 and r["mode"] == "training")),
    ]


def roofline_needs(misses, threshold):
    """How much of the roofline's speed the missed configurations need to meet the threshold
    (roofline / (PyTorch's time / threshold)), counted in bands: above 100% the roofline rules the
    target out there."""
    needs = [r["roofline_ms"] / (r["torch_ms"] / threshold) for r in misses if r["roofline_ms"] is not None]
    bands = [(sum(n > 1 for n in needs), "above 100% (ruled out)"), (sum(0.8 < n <= 1 for n in needs), "80-100%"),
             (sum(n <= 0.8 for n in needs), "below 80%")]
    return ", ".join(f"{count} {band}" for count, band in bands if count)


def bf16_speedup(b):
    """A bf16 row's speed-up as the targets read it: with the packed weights kept, as the layers run
    (runs before those were timed have only the stateless calls, which pack every time)."""
    return b.get("speedup_kept", b["speedup"])


def cpu_targets_table(doc):
    """Issue #17's targets: how many configurations meet each, and what the misses would need of the
    roofline (roofline_needs); at the worst one the times side by side."""
    lines = []
    for what, threshold, values in cpu_targets(doc):
        line = target_line(what, threshold, True, [(v, where) for v, where, _ in values])
        if values:
            misses = [r for v, _, r in values if v < threshold]
            w = min(values, key=lambda v: v[0])[2]
            at_worst = f"{ms(w['torch_ms'] / threshold)} / {ms(w['roofline_ms'])} / {ms(w['median_ms'])} " \
                       f"({100 * w['roofline_ms'] / w['median_ms']:.0f}%)" if w["roofline_ms"] is not None else ""
            lines.append(line + [roofline_needs(misses, threshold), at_worst])
        else:
            lines.append(line + ["", ""])
    gemm = [s for s in ((doc["peaks"]["gemm"] or {}).get("clean", {}).get("shapes", [])) if "torch_gflops" in s]
    if gemm:
        lines.append(target_line("our GEMM, x torch.matmul", 0.9, True,
                                 [(s["ours_gflops"] / s["torch_gflops"],
                                   f"{s.get('kind', 'merged')} M={s['M']} N={s['N']} K={s['K']}") for s in gemm])
                     + ["", ""])
    bf16 = [b for b in doc.get("bf16", []) if b.get("others_cpu", 0) < doc["timing"]["busy_threshold"]]
    l2 = doc["machine"].get("cache_sizes", {}).get("l2")
    for what, threshold, rows in (
            ("bf16 weights at B=1, x our float32, every size", 1.0, bf16),
            (f"bf16 where W_hh outgrows the L2 caches ({doc['threads']} x {l2 // 1024 if l2 else '?'} KiB)", 1.3,
             [b for b in bf16 if l2 and w_hh_bytes(b["cell"], b["H"]) > doc["threads"] * l2])):
        if rows:
            line = target_line(what, threshold, True, [(bf16_speedup(b), f"{b['cell']} H={b['H']}") for b in rows])
            misses = [b for b in rows if bf16_speedup(b) < threshold and "speedup_bound" in b]
            ruled_out = sum(b["speedup_bound"] < threshold for b in misses)
            w = min(rows, key=bf16_speedup)
            lines.append(line + [
                f"{ruled_out} of {len(misses)} ruled out by the speed-up bound" if misses else "",
                f"bound {num(w['speedup_bound'])}x, measured {num(bf16_speedup(w))}x" if "speedup_bound" in w else ""])
    return table(["target", "threshold", "worst measured (where)", "configurations meeting it", "met",
                  "misses, by the share of the roofline's speed they need",
                  "at the worst: needed / roofline / ours ms (roofline / ours)"],
                 lines)


def cpu_misses_table(doc):
    """Each configuration that misses an issue #17 target of run.py's, with the bound on it: what
    the target needs (PyTorch's median / the threshold), the roofline (roofline_ms), ours, the
    fraction of the roofline's speed ours reaches and the fraction the target needs."""
    lines = []
    for what, threshold, values in cpu_targets(doc):
        for ratio, where, r in sorted((v for v in values if v[0] < threshold), key=lambda v: v[0]):
            needed, bound, ours = r["torch_ms"] / threshold, r["roofline_ms"], r["median_ms"]
            lines.append([what.split(",")[0], where, num(ratio), ms(needed), ms(bound), ms(ours),
                          "" if bound is None else f"{100 * bound / ours:.0f}%",
                          "" if bound is None else f"{100 * bound / needed:.0f}%"])
    if not lines:
        return []
    return ["", "Each miss and its bound: needed = PyTorch's median / the threshold; roofline as above; "
            "reached = roofline / ours, the fraction of the bound's speed ours runs at; needs = roofline / "
            "needed, the fraction the target asks for (above 100%: no kernel meets it here).", ""] + table(
        ["target", "where", "x PyTorch", "needed ms", "roofline ms", "ours ms", "reached", "needs"], lines)


def run_section(doc):
    """The report of one `run.py --save` file (bench/results/<cpu>/run.json)."""
    m, peaks, n = doc["machine"], doc["peaks"], doc["threads"]
    fma = peaks["fma_gflops"]
    busy = doc["timing"]["busy_threshold"]
    # Older runs took the peak at the start and end and the bandwidth once, not among each row's calls.
    probed = all("fma_gflops" in r and "read_gbs" in r for r in doc["rows"])
    out = [
        f"Measured {doc['date']} with `{doc['command']}`. Load average before / after: "
        f"{num(doc['load_average'][0])} / {num(doc['load_average'][1])}.", "",
        "Memory: " + ("`--steady-malloc`: glibc keeps freed memory (no mmap, no trimming), so no call "
                      "touches fresh pages after its warm-up." if doc.get("steady_malloc") else
                      "glibc's default allocator settings, as a user gets them (see the kfaults columns)."), "",
        "### Machine", "",
        f"- CPU: {m['cpu']}, {m['cpus']} logical CPUs ({m['cpus_usable']} usable)",
        f"- fusedrnn {m['fusedrnn']} ({m['compiler']}), instruction set selected: {m['isa_selected']} "
        f"(compiled: {', '.join(m['isa_compiled'])})",
        f"- threads for every contender: {n} (`fusedrnn.set_num_threads`, `torch.set_num_threads`)",
        f"- Python {m['python']}, NumPy {m['numpy']}, PyTorch {m['torch'] or 'not installed'}; {m['os']}",
        f"- OpenMP / BLAS libraries loaded: {', '.join(m['libraries'])}",
        "- environment: " + (", ".join(f"`{k}={v}`" for k, v in m["environment"].items()) or "nothing set"), "",
        "### Peaks (measured in the same run)", "",
        f"- float32 FMA loop (`fusedrnn._core.fma_peak_gflops`): {num(fma[0], 1)} GFLOP/s with {n} threads "
        f"at the start, {num(fma[1], 1)} at the end; {num(peaks['fma_gflops_1_thread'], 1)} with 1 thread. "
        + ("The same loop (4 ms a call) was also timed among the contenders of every row, call by call, "
           "and so was the read bandwidth at the row's W_hh size: %peak and the roofline of a row use "
           "their medians there (the 'FMA GFLOP/s then' and 'read GB/s then' columns), the machine's "
           "speed at the moments that row was measured." if probed else
           "%peak below is against the higher of the two."),
    ]
    far_ns = far_threshold(doc["rows"])
    if far_ns is not None:
        start, end = peaks["cross_core_ns"]
        ours = [r for r in doc["rows"] if r["contender"] == "fusedrnn"]
        far = sum(is_far(r, far_ns) for r in ours)
        out += [f"- latency between two cores (`fusedrnn._core.cross_core_latency_ns`, half a round trip between "
                f"the team's two threads): {num(start, 0)} ns at the start, {num(end, 0)} at the end; also timed among "
                f"the contenders of every row ('cross-core ns then'). On a shared virtual machine the CPUs a process "
                f"runs on are further apart at some moments than at others: rows whose probe answered above "
                f"{num(far_ns, 0)} ns ({num(machine.FAR, 0)}x the run's near latency, the lower quartile of its rows' "
                f"probes) are marked far, measured at such a "
                f"moment, when the same calls took up to 1.6x longer on a Zen 4 ({far} of {len(ours)} rows). "
                + (f"A row measured so was measured again after {doc['timing']['far_retry_pause_s']} s, twice at "
                   "most; the rows still far stay in the tables (every contender of a row ran at the same moments)."
                   if "far_retry_pause_s" in doc["timing"] else
                   "They stay in the tables: every contender of a row ran at the same moments.")]
    gemm = peaks["gemm"]
    if gemm:
        c = gemm["clean"]
        out += [f"- float32 GEMM on the products of an LSTM layer (merged input GEMM: M = T*B, N = 4H, K = I; "
                f"recurrent: one step's M = B; weight gradient: M = 4H, N = I, K = T*B), each contender after a "
                f"pause, NumPy and torch.matmul in a fresh process with {n} OpenBLAS threads and OPENBLAS_CORETYPE / "
                f"OPENBLAS_L2_SIZE unset (OpenBLAS core: {c['openblas_core']})"
                + (f"; busy: others took {100 * c['others_cpu']:.0f}% of the CPUs" if c.get("others_cpu", 0) >= busy
                   else "") + ":", ""]
        inherited = {(s["M"], s["N"], s["K"]): s for s in gemm.get("inherited", {}).get("shapes", [])}
        with_torch = any("torch_gflops" in s for s in c["shapes"])
        header = ["product", "M", "N", "K", "NumPy GFLOP/s", "ours GFLOP/s", "ours / NumPy", "ours right after a NumPy call"]
        if with_torch:
            header += ["torch.matmul GFLOP/s", "ours / torch"]
        if inherited:
            over = gemm["inherited"]["overrides"]
            header.append("NumPy with " + ", ".join(f"{k}={v}" for k, v in over.items())
                          + f" (core {gemm['inherited']['openblas_core']}"
                          + (", busy" if gemm["inherited"].get("others_cpu", 0) >= busy else "") + ")")
        lines = []
        for s in c["shapes"]:
            line = [s.get("kind", "merged"), s["M"], s["N"], s["K"], num(s["numpy_gflops"], 1), num(s["ours_gflops"], 1),
                    num(s["ours_gflops"] / s["numpy_gflops"]), num(s["ours_after_numpy_gflops"], 1)]
            if with_torch:
                line += [num(s.get("torch_gflops"), 1),
                         num(s["ours_gflops"] / s["torch_gflops"]) if "torch_gflops" in s else ""]
            if inherited:
                line.append(num(inherited[(s["M"], s["N"], s["K"])]["numpy_gflops"], 1))
            lines.append(line)
        out += table(header, lines)
        out += ["", "  \"Ours right after a NumPy call\": OpenBLAS's worker threads busy-wait after each call "
                "and take cores from the next kernel; the other columns pause 0.3 s first. The timed "
                "suite runs NumPy with one BLAS thread (no workers) for that reason."]

    if doc["peaks"].get("read_bandwidth"):
        out += ["", "- read bandwidth (`fusedrnn._core.read_bandwidth_gbs`, each thread reading its share, best of "
                f"3 tries) with {n} threads at each layer's float32 W_hh size: "
                + ", ".join(f"{b['bytes'] / 2**20:.2f} MiB {b['gbs']:.0f} GB/s" for b in doc["peaks"]["read_bandwidth"])]
    out += ["", "### Issue #17 targets", "",
            "Needed = PyTorch's median / the threshold. Roofline: a lower bound on our time, the layer's merged "
            "GEMMs at the FMA peak and each step's recurrent product at the peak or at the read bandwidth "
            "measured at W_hh's size, whichever is slower ("
            + ("both timed among that row's contenders" if probed else "the run's higher peak, the bandwidth below")
            + "; the pointwise math and the barriers left out). A miss "
            "that needs more than 100% of the roofline's speed (a time below it) is out of any kernel's reach on "
            "this machine; one that needs 80-100% is out of reach in practice, the pointwise math being left out.",
            ""]
    out += cpu_targets_table(doc)
    out += cpu_misses_table(doc)
    out += ["", "### Issue #5 targets (the earlier issue's thresholds)", ""] + targets_table(targets(doc))
    out += ["", "Measurements marked busy below are left out of these tables."]

    out += ["", f"### Time per call, T = {doc['T']}, I = H, {n} threads", "",
            "x PyTorch = PyTorch's median / ours (above 1: fusedrnn is faster); x ref likewise for the NumPy "
            "reference (one BLAS thread; small sizes only). GFLOP/s counts the forward GEMM work "
            "2*T*B*(I+H)*G*H, training 3x that; %peak = ours / the FMA peak; kfaults = thousands of minor "
            "page faults per call (fresh memory touched: glibc returns blocks above its mmap threshold, "
            "at most 32 MB, to the kernel on every free).", ""]
    lines = []
    for (cell, B, H, mode), c in configurations(doc).items():
        o, t, ref = c["fusedrnn"], c.get("torch", {}), c.get("reference")
        lines.append([cell, B, H, mode, ms(o["median_ms"]), ms(o["min_ms"]), num(o["gflops"], 1),
                      num(100 * o["peak_fraction"], 1), ms(t.get("median_ms")), ms(t.get("min_ms")),
                      num(t.get("gflops"), 1), num(o["ratio_to_torch"]),
                      ms(ref["median_ms"]) if ref else "",
                      num(ref["median_ms"] / o["median_ms"], 1) if ref else "",
                      num(o["faults_per_call"] / 1e3, 1), num(t.get("faults_per_call", 0) / 1e3, 1)]
                     + ([num(o["fma_gflops"], 1), num(o["read_gbs"], 0)] if probed else [])
                     + ([num(o.get("cross_core_ns"), 0)] if far_ns is not None else [])
                     + [note(o, c.values(), busy, far_ns)])
    out += table(["cell", "B", "H", "mode", "ours median ms", "ours min ms", "ours GFLOP/s", "%peak",
                  "PyTorch median ms", "PyTorch min ms", "PyTorch GFLOP/s", "x PyTorch", "ref ms", "x ref",
                  "ours kfaults", "PyTorch kfaults"] + (["FMA GFLOP/s then", "read GB/s then"] if probed else [])
                  + (["cross-core ns then"] if far_ns is not None else []) + ["note"],
                  lines)

    if doc["memory"]:
        out += ["", "### Peak resident memory of one training step", "",
                "Each contender in a fresh process: libraries warmed up on a tiny problem, inputs and "
                "weights created, then the growth of the resident set's peak during one forward + "
                f"backward ({doc['memory'][0]['fusedrnn']['method']}).", ""]
        out += table(["cell", "B", "H", "ours MB", "PyTorch MB", "ours / PyTorch"],
                     [[r["cell"], r["B"], r["H"], num(r["fusedrnn"]["step_mb"], 1),
                       num(r.get("torch", {}).get("step_mb"), 1), num(r.get("ratio"))] for r in doc["memory"]])
    if doc["scaling"]:
        out += ["", f"### Thread scaling, 1 -> {n} threads (interleaved call by call)", ""]
        out += table(["cell", "B", "H", "mode", "ours 1 thread ms", f"ours {n} threads ms", "ours speed-up",
                      "PyTorch speed-up", "note"],
                     [[s["cell"], s["B"], s["H"], s["mode"], ms(s["fusedrnn"]["ms_1"]), ms(s["fusedrnn"]["ms_n"]),
                       num(s["fusedrnn"]["speedup"]), num(s.get("torch", {}).get("speedup")),
                       note(s, [], busy)]
                      for s in doc["scaling"]])
    if doc.get("bf16"):
        kept = all("speedup_kept" in b for b in doc["bf16"])
        out += ["", "### bfloat16 recurrent weights, inference at B = 1", "",
                "`bf16_weights=True` against our own float32, interleaved call by call; max abs diff = the "
                "largest difference between the two outputs (y) over the whole sequence."]
        if kept:
            out += ["", "Each both as a stateless call, which packs the weights first (bfloat16 packing rounds "
                    "them too), and with the packed weights kept in a `PackedWeights` handle, as every layer "
                    "of the package runs (the targets read these)."]
        bounded = all("speedup_bound" in b for b in doc["bf16"])
        if bounded:
            out += ["", "Speed-up bound: bf16 weights change only the recurrent products, which read "
                    "bfloat16 (half the bytes) instead of float32, so the call is at most "
                    "float32 / (projections + (float32 - projections) / 2) times faster, where projections "
                    "= the input projections x W_ih^T timed alone (our GEMM, the least of the calls): "
                    "the part bf16 leaves as it is" + (" (float32: the call with the weights kept packed)."
                                                        if kept else ".")]
        out += [""]
        out += table(["cell", "H"] + (["float32 ms, kept", "bf16 ms, kept", "speed-up, kept"] if kept else [])
                     + ["float32 ms" + (", packing" if kept else ""), "bf16 ms" + (", packing" if kept else ""),
                        "speed-up" + (", packing" if kept else "")]
                     + (["projections ms", "speed-up bound"] if bounded else []) + ["max abs diff", "note"],
                     [[b["cell"], b["H"]]
                      + ([ms(b["float32_kept_ms"]), ms(b["bf16_kept_ms"]), num(b["speedup_kept"])] if kept else [])
                      + [ms(b["float32_ms"]), ms(b["bf16_ms"]), num(b["speedup"])]
                      + ([ms(b["projections_ms"]), num(b["speedup_bound"])] if bounded else [])
                      + [f"{b['max_abs_diff']:.1e}", note(b, [], busy)] for b in doc["bf16"]])
    t = doc["timing"]
    out += ["", "### How it was measured", "",
            f"- Every configuration: one warm-up call per contender, then the contenders called in turn, "
            f"at least {t['min_calls']} calls each and {t['min_seconds']} s, at most {t['max_calls']}; "
            "median and min reported. Outputs are checked to agree before timing.",
            "- Same process, same thread count for every contender; PyTorch inference under "
            "`torch.inference_mode()`, training = forward with `x.requires_grad` + `backward(dy)` after "
            "`zero_grad(set_to_none=True)`; ours = `recurrent_forward(training=True)` + `recurrent_backward(dy, ...)`"
            + ("; ours in inference keeps the packed weights in a `PackedWeights` handle from call to call, as the "
               "package's layers do (training packs at every call, as it must when the weights change between steps)."
               if t.get("inference_keeps_packed") else "."),
            "- OPENBLAS_NUM_THREADS=1 in the timing process (only the NumPy reference uses BLAS there), "
            "so no OpenBLAS worker threads spin while the others run.",
            "- Each measurement records the CPU time other processes took meanwhile (/proc/stat minus "
            f"this process); above {100 * busy:.0f}% of the CPUs it is retried after the machine quietens, up to 3 "
            "times, and marked busy if it never was quiet.",
            "- Ratios are only meaningful inside one run: the machine is shared. If the load average "
            "above is over 1 or the FMA peak moved much between start and end, distrust the run.", ""]
    return out


def dropin_targets(doc):
    """Issue #15's targets for whole training steps, torch.nn's time / ours (eager and compiled)."""
    steps = [r for r in doc["steps"] if not r["input"].startswith("generate")]

    def ratios(pred):
        return [(r["torch_ms"] / r["ours_ms"],
                 f"{r['cell']} B={r['B']} H={r['H']} {r['input']}{' compiled' if r['compiled'] else ''}", r)
                for r in steps if pred(r)]

    overhead = [(r["recurrent_us"] - r["kernel_us"], f"{r['cell']} inference", r) for r in doc["overhead"]]
    return [
        ("GRU and RNN at B=64, x torch.nn", 1.5, True,
         ratios(lambda r: r["cell"] in ("rnn", "gru") and r["B"] == 64)),
        ("GRU and RNN at B=1, x torch.nn", 3.0, True, ratios(lambda r: r["cell"] in ("rnn", "gru") and r["B"] == 1)),
        ("LSTM everywhere, x torch.nn", 1.0, True, ratios(lambda r: r["cell"] == "lstm")),
        ("packed input, every cell, x torch.nn", 3.0, True, ratios(lambda r: r["input"] == "packed")),
        ("op overhead per call at T=1, B=1, H=64, microseconds", 30.0, False, overhead),
    ]


def dropin_misses(threshold, values):
    """What each miss of a step-ratio target asks of our RNN layer, from the rest of the step (the
    same step without the RNN, timed beside it): 'ruled out' when the rest alone takes longer than
    torch.nn's time / the threshold, else how many times faster our RNN part (ours - rest) must get."""
    ruled_out, faster = 0, []
    for ratio, _, r in values:
        if ratio >= threshold or r.get("rest_ms") is None:
            continue
        budget = r["torch_ms"] / threshold - r["rest_ms"]
        if budget <= 0:
            ruled_out += 1
        else:
            faster.append((r["ours_ms"] - r["rest_ms"]) / budget)
    return ", ".join(([f"{ruled_out} ruled out"] if ruled_out else []) + [f"{n:.2f}x" for n in sorted(faster)])


def target_line(what, threshold, at_least, values):
    """[what, threshold, the worst value (where), how many meet it, whether all do] for values
    [(value, where, ...), ...] (what follows `where` is the caller's)."""
    bound = ("≥ " if at_least else "≤ ") + str(threshold)
    if not values:
        return [what, bound, "not measured", "", ""]
    worst = (min if at_least else max)(values, key=lambda v: v[0])
    met = sum((v[0] >= threshold) if at_least else (v[0] <= threshold) for v in values)
    return [what, bound, f"{worst[0]:.2f} ({worst[1]})", f"{met} of {len(values)}",
            "yes" if met == len(values) else "**no**"]


def targets_table(rows):
    return table(["target", "threshold", "worst measured (where)", "configurations meeting it", "met"],
                 [target_line(*row) for row in rows])


def dropin_section(doc):
    """The report of one `torch_dropin.py --save` file (bench/results/<cpu>/torch_dropin.json)."""
    out = ["### PyTorch drop-in: whole training steps (`bench/torch_dropin.py`)", "",
           f"Measured {doc['date']} with `{doc['command']}`: {doc['threads']} threads for both, PyTorch "
           f"{doc['torch']}, fusedrnn {doc['fusedrnn']}. A step is Embedding -> RNN/LSTM/GRU -> Linear -> "
           f"cross-entropy, `loss.backward()` and Adam, T = {doc['T']}, I = H; packed = a PackedSequence of "
           "random lengths in [T/2, T]. x = torch.nn's median time / ours (above 1: fusedrnn is faster). "
           "Compiled: `torch.compile` of the whole model; torch.nn's RNN breaks the graph there as it does "
           "for every user, ours runs inside it (Dynamo's `allow_rnn`).", ""]
    by = {}
    for r in doc["steps"]:
        by.setdefault((r["cell"], r["B"], r["H"], r["input"]), {})[r["compiled"]] = r
    far_ns = far_threshold(doc["steps"])
    lines = []
    for (cell, B, H, kind), c in by.items():
        line = [cell, B, H, kind]
        for compiled in (False, True):
            r = c.get(compiled)
            line += [ms(r["torch_ms"]), ms(r["ours_ms"]), num(r["torch_ms"] / r["ours_ms"])] if r else ["", "", ""]
        rest = c.get(False, {}).get("rest_ms")
        line.append(ms(rest) if rest is not None else "")
        if far_ns is not None:
            line += [" / ".join(num(r.get("cross_core_ns"), 0) for r in c.values()),
                     "far" if any(is_far(r, far_ns) for r in c.values()) else ""]
        lines.append(line)
    out += table(["cell", "B", "H", "input", "torch.nn ms", "ours ms", "x", "compiled torch.nn ms",
                  "compiled ours ms", "compiled x", "rest of the step ms"]
                 + (["cross-core ns then (eager / compiled)", "note"] if far_ns is not None else []), lines)
    if far_ns is not None:
        out += ["", far_text(far_ns, sum(is_far(r, far_ns) for r in doc["steps"]), len(doc["steps"]), doc)]
    out += ["", "Rest of the step: the same eager step with the RNN replaced by a pass-through (Adam still "
            "updating the RNN's parameters, with zero gradients), timed beside the pair: what a step costs "
            "besides the RNN layer, the same for both contenders."]
    out += ["", f"Generation rows: eval mode, B = 1, one step per call with the state carried, "
            f"{doc['generate']} steps, the model's argmax fed back.", "",
            "#### The op's own cost per call, T = 1, B = 1, I = H = 64 (microseconds)", "",
            "Kernel: the native forward called directly on the same arrays; overhead = "
            "`fusedrnn.torch.recurrent` (eager, under `no_grad`) minus the kernel. Dispatcher op: "
            "`torch.ops.fusedrnn.recurrent_forward`, as a compiled graph calls it. Training: forward and "
            "backward through autograd against the two native calls.", ""]
    out += table(["cell", "kernel", "recurrent", "overhead", "dispatcher op", "module", "torch.nn module",
                  "training kernels", "training recurrent", "training overhead"],
                 [[r["cell"], num(r["kernel_us"], 1), num(r["recurrent_us"], 1),
                   num(r["recurrent_us"] - r["kernel_us"], 1), num(r["operator_us"], 1), num(r["module_us"], 1),
                   num(r["torch_module_us"], 1), num(r["kernel_train_us"], 1), num(r["recurrent_train_us"], 1),
                   num(r["recurrent_train_us"] - r["kernel_train_us"], 1)] for r in doc["overhead"]])
    out += ["", "#### Issue #15 targets", "",
            "Misses: what each asks of our RNN layer (our step minus the rest of the step) to reach torch.nn's "
            "time / the threshold: 'ruled out' where the rest of the step alone takes longer (no RNN could "
            "meet it), else how many times faster our RNN part must run.", ""]
    lines = []
    for what, threshold, at_least, values in dropin_targets(doc):
        lines.append(target_line(what, threshold, at_least, values)
                     + [dropin_misses(threshold, values) if at_least else ""])
    out += table(["target", "threshold", "worst measured (where)", "configurations meeting it", "met",
                  "misses: our RNN part must run"], lines)
    return out


def keras3_rounds(doc):
    """How many calls each median is of (files from before --seconds: a fixed count)."""
    if "seconds" not in doc:
        return f"median of {doc['repeats']} calls"
    return (f"median of {doc['repeats']} or more calls (rounds of the four calls, interleaved, until they "
            f"took {doc['seconds']:g} s, at most {doc['max_rounds']}; each row's count in the JSON)")


def keras3_section(doc):
    """The report of one `keras3_dropin.py --save` file (bench/results/<cpu>/keras3_dropin.json)."""
    out = ["### Keras 3: stock layers against `fusedrnn.keras3.enable()` (`bench/keras3_dropin.py`)", "",
           f"Measured {doc['date']} with `{doc['command']}`: {doc['threads']} threads. Input(T, I) -> "
           f"SimpleRNN/LSTM/GRU(units) -> Dense(1), B = {doc['B']}, T = {doc['T']}, I = {doc['I']}; fit = one "
           f"epoch of {doc['samples']} samples (Adam, MSE), predict of the same; {keras3_rounds(doc)}, "
           "x = stock / fused. Masked input: a Masking layer in front and sequences of lengths in "
           "[T/2, T], in no order, padded with zeros. Policy: Keras's dtype policy (mixed_bfloat16: the "
           "recurrent layer computes in bfloat16 in Keras's loop, in float32 from bfloat16 inputs and weights "
           "in the kernels; the output layer float32).", ""]
    out += ["GFLOP: the recurrent layer's products in one call, 2*T*(I+units)*G*units a sample, 3x that in "
            "fit (forward and backward), padding included; GFLOP/s of each contender = GFLOP / its time.", ""]
    far_ns = far_threshold(doc["rows"])
    lines = []
    for r in doc["rows"]:
        gflop = keras3_gflop(doc, r)
        lines.append([r["backend"], r["cell"], r["units"], r.get("inputs", "full"), r.get("policy", "float32"), r["what"],
                      num(r["stock_median"], 3), num(r["fused_median"], 3), num(r["stock_median"] / r["fused_median"]),
                      num(gflop, 1), num(gflop / r["stock_median"], 1), num(gflop / r["fused_median"], 1)]
                     + ([num(r.get("cross_core_ns"), 0), "far" if is_far(r, far_ns) else ""]
                        if far_ns is not None else []))
    out += table(["backend", "layer", "units", "input", "policy", "call", "Keras s", "enable() s", "x", "GFLOP",
                  "Keras GFLOP/s", "enable() GFLOP/s"]
                 + (["cross-core ns then", "note"] if far_ns is not None else []), lines)
    if far_ns is not None:
        out += ["", far_text(far_ns, sum(is_far(r, far_ns) for r in doc["rows"]), len(doc["rows"]), doc)]
    peak = doc.get("fma_peak_gflops")
    out += ["", "#### Issue #16 targets", ""]
    if peak:
        out += [f"Needed: the time a miss must reach, Keras's / the threshold, as the GFLOP/s the recurrent "
                f"layer alone would then run at, against the FMA peak measured in the same run ({peak:.0f} "
                "GFLOP/s): above 100% no kernel can meet the target on this machine (Keras's other layers, the "
                "optimizer and the pointwise math left out); the GEMM table of `run.py` says how close a GEMM gets.", ""]
    lines = []
    for what, threshold, rows in keras3_targets(doc):
        line = target_line(what, threshold, True, [(r["stock_median"] / r["fused_median"],
                                                   f"{r['cell']} {r['units']}") for r in rows])
        needs = sorted(keras3_gflop(doc, r) / (r["stock_median"] / threshold) / peak
                       for r in rows if r["stock_median"] / r["fused_median"] < threshold) if peak else []
        lines.append(line + [", ".join(f"{100 * n:.0f}%" for n in needs)])
    out += table(["target", "threshold", "worst measured (where)", "configurations meeting it", "met",
                  "misses: needed GFLOP/s / FMA peak"], lines)
    return out


def keras3_gflop(doc, r):
    """The recurrent layer's GEMM work in one call of a keras3_dropin row (GFLOP)."""
    gates = GATES[{"simplernn": "rnn"}.get(r["cell"], r["cell"])]  # (Keras's layer names)
    forward = 2 * doc["T"] * doc["samples"] * (doc["I"] + r["units"]) * gates * r["units"]
    return forward * (3 if r["what"] == "fit" else 1) / 1e9


def keras3_targets(doc):
    """Issue #16's targets: (what, threshold, the rows it reads: the float32 models without masking)."""
    def rows(backend, what):
        return [r for r in doc["rows"] if r["backend"] == backend and r["what"] == what
                and r.get("inputs", "full") == "full" and r.get("policy", "float32") == "float32"]
    return [("torch backend fit, x stock Keras", 5.0, rows("torch", "fit")),
            ("torch backend predict, x stock Keras", 3.0, rows("torch", "predict")),
            ("JAX backend fit, x stock Keras", 2.0, rows("jax", "fit"))]


def generation_section(doc):
    """The report of one `generation.py --save` file (bench/results/<cpu>/generation.json)."""
    out = ["### Generation loop: `fusedrnn.nn` layers against torch.nn (`bench/generation.py`)", "",
           f"Measured {doc['date']} with `{doc['command']}`: {doc['threads']} threads for both, PyTorch "
           f"{doc['torch']}. One layer, I = H, eval mode: {doc['steps']} calls of T = 1, B = 1 with the state "
           f"carried; time per step, the best of {doc['rounds']} rounds (the median beside it); x = torch.nn / ours."
           + (" The contenders take their rounds in turn; a round after which the FMA loop ran below "
              f"{100 * machine.SLOWED:.0f}% of the run's start peak ({doc['fma_peak_gflops']:.0f} GFLOP/s) was "
              "done again (redone)."
              if "fma_peak_gflops" in doc else ""),
           ""]
    rows = [r for r in doc["rows"] if "torch_us" in r]
    redone = any("rounds_redone" in r for r in rows)
    out += table(["cell", "H", "ours us", "ours median us", "torch.nn us", "torch.nn median us", "x"]
                 + (["redone"] if redone else []),
                 [[r["cell"], r["H"], num(r["ours_us"], 1), num(r["ours_median_us"], 1), num(r["torch_us"], 1),
                   num(r["torch_median_us"], 1), num(r["torch_us"] / r["ours_us"])]
                  + ([r.get("rounds_redone", "")] if redone else []) for r in rows])
    if rows:
        out += ["", "#### Issue #17 target", ""]
        out += targets_table([("generation loop, every cell, x torch.nn", 2.0, True,
                               [(r["torch_us"] / r["ours_us"], f"{r['cell']} H={r['H']}") for r in rows])])
    return out


def autocast_section(doc):
    """The report of one `autocast.py --save` file (bench/results/<cpu>/autocast.json)."""
    out = ["### Under `torch.autocast` (CPU, bfloat16): torch.nn against `fusedrnn.torch` (`bench/autocast.py`)", "",
           f"Measured {doc['date']} with `{doc['command']}`: {doc['threads']} threads for both, PyTorch "
           f"{doc['torch']}, the kernels' bfloat16 products on {doc['bf16_kernel']}. One layer, T = {doc['T']}, "
           "I = H, float32 inputs; inference under `torch.no_grad()`, training = forward and backward of the "
           f"outputs' sum; medians of {doc['rounds']} rounds of the four calls, interleaved. Under autocast "
           "torch.nn's layers compute their products in bfloat16; the fused layers' inference runs the kernels' "
           "bf16 mode (where the CPU has AVX512-BF16), their training float32. x = torch.nn / fused (above 1: "
           "fused is faster).", ""]
    lines = []
    for r in doc["rows"]:
        ms = r["ms"]
        lines.append([r["cell"], r["B"], r["H"], r["call"], num(ms["torch.nn autocast"]), num(ms["fused autocast"]),
                      num(ms["torch.nn autocast"] / ms["fused autocast"]), num(ms["torch.nn float32"]),
                      num(ms["fused float32"]), num(ms["torch.nn float32"] / ms["fused float32"])])
    out += table(["cell", "B", "H", "call", "torch.nn autocast ms", "fused autocast ms", "x", "torch.nn float32 ms",
                  "fused float32 ms", "x"], lines)
    return out


SECTIONS = (("run", run_section), ("generation", generation_section), ("torch_dropin", dropin_section),
            ("keras3_dropin", keras3_section), ("autocast", autocast_section))


def main():
    cpus = []
    for folder in sorted(glob.glob(os.path.join(machine.RESULTS, "*"))):
        docs = {}
        for name, _ in SECTIONS:
            path = os.path.join(folder, name + ".json")
            if os.path.exists(path):
                with open(path) as f:
                    docs[name] = json.load(f)
        if docs:
            cpus.append((max(d["date"] for d in docs.values()), docs))
    out = ["# fusedrnn benchmark results", "",
           "Generated by `python bench/report.py > bench/RESULTS.md` from `bench/results/<cpu>/*.json`, which "
           "`python bench/run.py --save`, `bench/generation.py --save`, `bench/torch_dropin.py --save`, "
           "`bench/keras3_dropin.py --save` and `bench/autocast.py --save` "
           "write: do not edit by hand; rerun on a machine and regenerate. One section per CPU model, the latest "
           "measured first: times and ratios are comparable only within a section (a CPU's section holds its "
           "latest run of each script)."]
    for _, docs in sorted(cpus, key=lambda c: c[0], reverse=True):
        cpu = docs["run"]["machine"]["cpu"] if "run" in docs else next(iter(docs.values()))["cpu"]
        out += ["", f"## {cpu}", ""]
        for name, section in SECTIONS:
            if name in docs:
                out += section(docs[name]) + [""]
    print("\n".join(out).rstrip("\n"))


if __name__ == "__main__":
    main()
