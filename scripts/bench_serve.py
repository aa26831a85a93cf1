"""Load benchmark of `mtrain serve`: throughput and latency at 1, 8 and 32 concurrent clients. One JSON line.

    python scripts/bench_serve.py --checkpoint runs/multi30k-en-de/checkpoint_avg.pt \\
        --src ../shared/data/multi30k/test_2016_flickr.en.gz [--engines torch,ctranslate2] [--requests 400]

For each engine a real server process is started on a free 127.0.0.1 port; clients (threads
with keep-alive connections) each send single sentences of the file, one request at a time,
until `--requests` requests per concurrency level are answered or `--seconds` pass. Reported:
sentences/s, p50/p99 latency, failed requests, and the server's peak RSS (VmHWM). Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mtrain.data.sources import read_lines  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, engine: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mtrain",
        "serve",
        "--checkpoint",
        args.checkpoint,
        "--engine",
        engine,
        "--port",
        str(port),
        "--threads",
        str(args.threads),
        "--quantization",
        args.quantization,
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"server for {engine} did not become ready")


def load_level(url: str, lines: list[str], clients: int, requests: int, seconds: float) -> dict:
    """`clients` threads send single sentences until `requests` answers or `seconds` pass."""
    latencies: list[float] = []
    failures = [0]
    counter = iter(range(requests))
    lock = threading.Lock()
    deadline = time.time() + seconds

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while time.time() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.perf_counter()
                try:
                    ok = http.post(f"{url}/translate", json={"text": [lines[i % len(lines)]]}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    latencies.append(time.perf_counter() - start) if ok else None
                    failures[0] += not ok

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()

    def pct(q):
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else None

    return {
        "clients": clients,
        "answered": len(latencies),
        "failed": failures[0],
        "seconds": round(wall, 2),
        "sentences_per_s": round(len(latencies) / wall, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--engines", default="torch,ctranslate2")
    parser.add_argument("--quantization", default="int8", help="for the ctranslate2 engine")
    parser.add_argument("--threads", type=int, default=2, help="the server's decoding threads")
    parser.add_argument("--levels", default="1,8,32", help="concurrent clients")
    parser.add_argument("--requests", type=int, default=400, help="requests per level (bound)")
    parser.add_argument("--seconds", type=float, default=60, help="time per level (bound)")
    args = parser.parse_args()
    lines = [line for line in read_lines(Path(args.src)) if line.strip()]
    results = []
    for engine in args.engines.split(","):
        process, url = start_server(args, engine)
        try:
            load_level(url, lines, 4, 40, 30)  # warm-up
            for clients in (int(c) for c in args.levels.split(",")):
                results.append({"engine": engine, **load_level(url, lines, clients, args.requests, args.seconds)})
            for r in results:
                if r["engine"] == engine:
                    r["server_peak_rss_mb"] = peak_rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(60)
    by_engine = {}
    for r in results:
        by_engine.setdefault(r["engine"], {})[r["clients"]] = r["sentences_per_s"]
    speedup = {e: round(v[max(v)] / v[min(v)], 2) for e, v in by_engine.items() if len(v) > 1}
    print(
        json.dumps(
            {
                "bench": "serve",
                "checkpoint": args.checkpoint,
                "threads": args.threads,
                "cpus": os.cpu_count(),
                "results": results,
                "max_over_one_client": speedup,
            }
        )
    )


if __name__ == "__main__":
    main()
