"""Throughput of scoring with Dask (``aoe_detect.scale``) against one process (issue 22).

Rows per second of ``score_samples`` over a data set stored on disk (a ``.npy`` file),
measured side by side in one run and reported as ratios to one process with one torch
thread:

- ``single, 1 thread``: ``det.score_samples(np.load(path, mmap_mode="r"))`` (the package
  converts and scores a memory-mapped array chunk by chunk);
- ``single, N threads``: the same with ``torch.set_num_threads(N)`` (intra-op parallelism,
  the alternative to more processes on one machine);
- ``dask, W workers``: a ``distributed.LocalCluster`` of W worker *processes* with one
  thread each (torch threads 1 in every worker); each partition is read from the file by
  the worker that scores it (``dask.array.from_delayed`` of ``np.load(mmap_mode="r")``
  slices) and scored by ``score_dask_array``; the detector travels in the task graph
  (once per ``compute``, included in the time). Cluster start-up is reported apart.

Every configuration runs once per round, in an order that rotates between rounds; the
table gives the median rows/s and the median (over rounds) of the per-round ratio to
``single, 1 thread``. Dask results are checked to equal ``score_samples`` exactly.
Workloads: tables (100k rows x 64 features, built-in MLP) and images (6k 1x28x28 uint8,
built-in small CNN), both with the default ``ood_score="energy+mahalanobis"``, fitted for
one epoch on small synthetic data (quality is not the point here; speed is).

The machine's load (other processes) is recorded before and after; on a shared machine
the ratios move with it.

Run::

    python benchmarks/dask_throughput.py            # about 25 minutes on 2 busy CPU cores
    python benchmarks/dask_throughput.py --quick    # about 8 minutes, 10x fewer rows

Writes ``benchmarks/results/dask_throughput.json`` and ``.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aoe_detect import AOEDetector, __version__  # noqa: E402
from aoe_detect.scale import score_dask_array  # noqa: E402

WORKLOADS = {
    # name: (rows, sample shape, dtype, backbone, chunk rows)
    "table": (100_000, (64,), np.float32, "mlp", 12_500),
    "image": (6_000, (1, 28, 28), np.uint8, "small_cnn", 750),
}


def make_detector(shape, dtype, backbone, seed=0):
    """A detector fitted for one epoch on 600 synthetic rows of ``shape`` (3 classes)."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 3, 600)
    X = rng.normal(0, 1, (600, *shape)) + y.reshape(-1, *[1] * len(shape))
    if dtype == np.uint8:
        X = (np.clip(X / 8 + 0.5, 0, 1) * 255).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AOEDetector(backbone=backbone, epochs=1, pretrain_epochs=1, device="cpu",
                           outliers="uniform", random_state=seed).fit(X, y)


def write_data(path, n, shape, dtype, seed=1):
    """``n`` rows written to ``path`` (``.npy``) in pieces, never all in memory at once."""
    rng = np.random.RandomState(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n, *shape))
    for start in range(0, n, 10_000):
        block = rng.normal(0, 1.5, (min(10_000, n - start), *shape))
        if dtype == np.uint8:
            block = np.clip(block / 8 + 0.5, 0, 1) * 255
        out[start:start + len(block)] = block.astype(dtype)
    out.flush()
    del out


def load_rows(path, start, stop):
    """Rows ``start:stop`` of a ``.npy`` file, read by whoever runs the task."""
    return np.array(np.load(path, mmap_mode="r")[start:stop])


def dask_rows(path, chunk):
    """The file as a Dask array whose blocks are read by the workers."""
    import dask
    import dask.array as da

    arr = np.load(path, mmap_mode="r")
    n, shape, dtype = len(arr), arr.shape[1:], arr.dtype
    blocks = [da.from_delayed(dask.delayed(load_rows)(path, s, min(s + chunk, n)),
                              shape=(min(s + chunk, n) - s, *shape), dtype=dtype)
              for s in range(0, n, chunk)]
    return da.concatenate(blocks)


def _set_threads(n):
    torch.set_num_threads(n)
    return torch.get_num_threads()


def _peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_cluster(workers):
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0", memory_limit="2GiB")
    client = Client(cluster)
    client.run(_set_threads, 1)
    client.run(lambda: __import__("aoe_detect"))  # warm imports, not part of the timing
    return cluster, client, time.perf_counter() - t0


def time_single(det, path, threads):
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    scores = det.score_samples(np.load(path, mmap_mode="r"))
    return time.perf_counter() - t0, scores


def time_dask(det, path, chunk, client):
    t0 = time.perf_counter()
    scores = client.compute(score_dask_array(det, dask_rows(path, chunk))).result()
    return time.perf_counter() - t0, scores


def run_workload(name, spec, rounds, quick, workers, threads, clients, folder):
    n, shape, dtype, backbone, chunk = spec
    if quick:
        n, chunk = n // 10, chunk // 10
    det = make_detector(shape, dtype, backbone)
    path = os.path.join(folder, f"{name}.npy")
    write_data(path, n, shape, dtype)
    configs = [("single", 1), ("single", threads)] + [("dask", w) for w in workers]
    times = {c: [] for c in configs}
    ref = None
    for r in range(rounds):
        for c in configs[r % len(configs):] + configs[:r % len(configs)]:
            if c[0] == "single":
                t, scores = time_single(det, path, c[1])
            else:
                t, scores = time_dask(det, path, chunk, clients[c[1]])
            ref = scores if ref is None else ref
            if not np.array_equal(scores, ref):
                raise AssertionError(f"{name} {c}: scores differ from the other configurations")
            times[c].append(t)
    torch.set_num_threads(1)
    overhead = {}  # the fixed cost of one compute: one block of 8 rows, median of 3
    for w, client in clients.items():
        small = path + ".head.npy"
        np.save(small, np.load(path, mmap_mode="r")[:8])
        overhead[w] = statistics.median(time_dask(det, small, 8, client)[0] for _ in range(3))
    rows = []
    for c in configs:
        ratios = [times[("single", 1)][i] / times[c][i] for i in range(rounds)]
        label = f"single process, {c[1]} torch thread(s)" if c[0] == "single" else \
            f"dask, {c[1]} worker process(es) x 1 thread"
        rows.append({"config": label, "kind": c[0], "parallel": c[1],
                     "rows_per_s_median": n / statistics.median(times[c]),
                     "seconds": times[c],
                     "ratio_to_single_1_thread_median": statistics.median(ratios),
                     "ratios": ratios})
    return {"rows": n, "sample_shape": list(shape), "dtype": np.dtype(dtype).name,
            "backbone": backbone, "ood_score": det.ood_score, "chunk_rows": chunk,
            "partitions": -(-n // chunk), "results": rows,
            "dask_fixed_cost_s": overhead}


def machine_info():
    import dask
    import distributed

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "numpy": np.__version__,
            "dask": dask.__version__, "distributed": distributed.__version__,
            "aoe_detect": __version__}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in f
                                      if ln.startswith("model name")), "unknown")
    except OSError:
        pass
    return info


def write_markdown(path, result):
    lines = ["# Dask scoring throughput vs one process", "",
             f"Command: `{result['command']}`  ", f"Date: {result['date']}  ",
             f"Machine: {result['machine'].get('cpu_model', '?')}, "
             f"{result['machine']['cpu_count']} CPU cores; load average before "
             f"{result['load_before']}, after {result['load_after']}  ",
             "Versions: " + ", ".join(f"{k} {result['machine'][k]}" for k in
                                      ("torch", "numpy", "dask", "distributed", "aoe_detect")),
             "", "Ratio = rows/s of the configuration / rows/s of one process with one torch "
             "thread, measured in the same round (median over rounds). Dask results equal "
             "`score_samples` exactly. Cluster start-up (s): "
             + ", ".join(f"{w} worker(s) {t:.1f}" for w, t in result["cluster_start_s"].items())
             + "; worker peak RSS after the run (MB): "
             + ", ".join(f"{w} worker(s) {m}" for w, m in result["worker_peak_rss_mb"].items()), ""]
    for name, wl in result["workloads"].items():
        lines += [f"## {name}: {wl['rows']} rows of {tuple(wl['sample_shape'])} {wl['dtype']}, "
                  f"{wl['backbone']}, `{wl['ood_score']}`, {wl['partitions']} partitions of "
                  f"{wl['chunk_rows']} rows", "",
                  "| configuration | rows/s (median) | ratio to 1 process, 1 thread |",
                  "|---|---:|---:|"]
        for r in wl["results"]:
            lines.append(f"| {r['config']} | {r['rows_per_s_median']:,.0f} | "
                         f"{r['ratio_to_single_1_thread_median']:.2f} |")
        lines += ["", "Fixed cost of one Dask compute (one block of 8 rows, median of 3): "
                  + ", ".join(f"{w} worker(s) {t:.2f} s"
                              for w, t in wl["dask_fixed_cost_s"].items()),
                  ""]
    lines += ["## Reading", "", result["reading"], ""]
    pathlib.Path(path).write_text("\n".join(lines))


def reading(result):
    """One sentence per workload, computed from the numbers (no hand-written verdict)."""
    out = []
    for name, wl in result["workloads"].items():
        res = {(r["kind"], r["parallel"]): r for r in wl["results"]}
        best_single = max((r for r in wl["results"] if r["kind"] == "single"),
                          key=lambda r: r["rows_per_s_median"])
        for (kind, p), r in sorted(res.items()):
            if kind != "dask":
                continue
            out.append(f"{name}: Dask with {p} worker(s) scores "
                       f"{r['ratio_to_single_1_thread_median']:.2f}x the rows/s of one process "
                       f"with one torch thread and "
                       f"{r['rows_per_s_median'] / best_single['rows_per_s_median']:.2f}x the "
                       f"best single-process configuration ({best_single['config']}).")
    return " ".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x fewer rows")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dask_throughput"))
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    workers = sorted({1, min(2, cores), cores} - {0})
    torch.set_num_threads(1)
    result = {"command": "python benchmarks/dask_throughput.py"
                         + (" --quick" if args.quick else "") + f" --rounds {args.rounds}",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(), "load_before": list(os.getloadavg()),
              "cluster_start_s": {}, "worker_peak_rss_mb": {}, "workloads": {}}
    clusters = {}
    try:
        for w in workers:
            cluster, client, t = start_cluster(w)
            clusters[w] = (cluster, client)
            result["cluster_start_s"][w] = round(t, 2)
        clients = {w: c for w, (_, c) in clusters.items()}
        with tempfile.TemporaryDirectory() as folder:
            for name, spec in WORKLOADS.items():
                result["workloads"][name] = run_workload(
                    name, spec, args.rounds, args.quick, workers, cores, clients, folder)
        for w, (_, client) in clusters.items():
            result["worker_peak_rss_mb"][w] = [round(v) for v in client.run(_peak_rss_mb).values()]
    finally:
        for cluster, client in clusters.values():
            client.close()
            cluster.close()
    result["load_after"] = list(os.getloadavg())
    result["reading"] = reading(result)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    write_markdown(args.out + ".md", result)
    print(pathlib.Path(args.out + ".md").read_text())


if __name__ == "__main__":
    main()
