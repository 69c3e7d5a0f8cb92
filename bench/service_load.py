"""The responders' desk under load: latency of 8 concurrent clients idle and while an
ingest and a sweep run, and the service's peak memory after viewing many distinct subjects.

    python3 run.py bench bench/service_load.py [--viewed 100000] [--database-url URL]
    # quick run: --viewed 5000 --rounds 20

Builds a store (embedded SQLite, or an empty PostgreSQL database with --database-url): the
HQIP policy, the HQIP sample (--sample subjects: the queue and the person pages) and
--viewed subjects of three facts each (bench/sweep_memory.py's `memory_facts`, one record).
Starts `lifecycle serve` in its own process, then:
  1. idle: --clients threads, --rounds rounds each of (GET /api/requests, GET a person's
     page, GET a JSON export of that person); p50/p95 of every request;
  2. under load: the same while `lifecycle ingest` of another sample and `lifecycle sweep`
     run in other processes; p50/p95, errors, and the ratio p95(load)/p95(idle)
     (target <= 3);
  3. memory: GET /api/subjects/{ref} for every --viewed subject (8 clients), then the serve
     process's peak RSS (VmHWM; target < 500 MB).
Everything lives in a temporary directory that is removed afterwards.

--profile PATH runs the service under bench/sampled_serve.py (every thread's stack sampled):
PATH.0 holds the warm-up, PATH.1 the idle phase, PATH.2 the phase under load, PATH the
memory phase. --store DIR (SQLite only) keeps the built store in DIR and, when DIR already
holds one, copies it instead of building (same --sample and --viewed).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.sweep_memory import memory_facts
from lifecycle.services.cases.users import UserBook
from lifecycle.services.ledger import Ledger
from lifecycle.policy.loader import bundled_policy
from lifecycle.services.samples import generate_facts
from lifecycle.store.settings import Settings

P95_RATIO_TARGET = 3.0
PEAK_TARGET_MB = 500.0


def settings_for(home: Path, database_url: str | None) -> Settings:
    return Settings(home, database_url, None, home / "master.key")


def env_for(settings: Settings) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env["LIFECYCLE_HOME"] = str(settings.home)
    if settings.database_url:
        env["LIFECYCLE_DATABASE_URL"] = settings.database_url
    return env


def build(settings: Settings, sample: int, viewed: int) -> tuple[str, list[str]]:
    now = datetime.now(UTC)
    with Ledger(settings) as ledger:
        ledger.adopt_policy(bundled_policy("hqip"), datetime(2023, 1, 1, tzinfo=UTC))
        ledger.ingest((json.dumps(f) for f in generate_facts("hqip", sample)), now)
        ledger.ingest(memory_facts(viewed, 1), now)
        ledger.projections.catch_up()
        token = UserBook(ledger.vault.engine).add("bench", "responder", now, "bench")
        people = sorted({r["subject"] for r in ledger.requests(now)})
    return token, people


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_clients(url: str, token: str, people: list[str], clients: int, rounds: int
                ) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def client(number: int) -> None:
        nonlocal errors
        pick = random.Random(number)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as api:
            for _ in range(rounds):
                person = pick.choice(people)
                for path in ("/api/requests", f"/api/subjects/{person}",
                             f"/api/subjects/{person}/export"):
                    started = time.perf_counter()
                    status = api.get(path).status_code
                    took = time.perf_counter() - started
                    with lock:
                        latencies.append(took)
                        errors += status != 200

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors


def view_all(url: str, token: str, references: list[str], clients: int) -> int:
    errors = 0
    lock = threading.Lock()
    shares = [references[n::clients] for n in range(clients)]

    def client(share: list[str]) -> None:
        nonlocal errors
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          timeout=120) as api:
            for reference in share:
                bad = api.get(f"/api/subjects/{reference}").status_code != 200
                if bad:
                    with lock:
                        errors += 1

    threads = [threading.Thread(target=client, args=(s,)) for s in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def next_phase(process: subprocess.Popen[bytes], profile: str | None) -> None:
    """Tells a sampled service (--profile) that a phase ended."""
    if profile:
        process.send_signal(signal.SIGUSR1)
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=600)
    parser.add_argument("--viewed", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--store", type=Path, default=None)
    args = parser.parse_args()
    if args.store is not None and args.database_url:
        parser.error("--store keeps an SQLite store only")
    home = Path(tempfile.mkdtemp(prefix="lifecycle-bench-"))
    settings = settings_for(home / "data", args.database_url)
    process = None
    try:
        started = time.perf_counter()
        kept = args.store / f"built-{args.sample}-{args.viewed}" if args.store else None
        if kept is not None and (kept / "people.json").exists():
            shutil.copytree(kept / "data", settings.home)
            token, people = json.loads((kept / "people.json").read_text())
            print(f"store copied from {kept}")
        else:
            token, people = build(settings, args.sample, args.viewed)
            print(f"store built in {time.perf_counter() - started:.1f} s "
                  f"({args.sample} sample subjects, {args.viewed} viewed subjects)")
            if kept is not None:
                shutil.copytree(settings.home, kept / "data")
                (kept / "people.json").write_text(json.dumps([token, people]))
        url = f"http://127.0.0.1:{args.port}"
        serve = [sys.executable, "-m", "lifecycle"]
        serve_env = env_for(settings)
        if args.profile:
            serve = [sys.executable, str(Path(__file__).with_name("sampled_serve.py"))]
            serve_env["LIFECYCLE_BENCH_STACKS"] = args.profile
        process = subprocess.Popen([*serve, "serve", "--port", str(args.port)], env=serve_env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        run_clients(url, token, people, args.clients, 2)  # warm-up
        next_phase(process, args.profile)
        idle, idle_errors = run_clients(url, token, people, args.clients, args.rounds)
        next_phase(process, args.profile)
        more = home / "more.jsonl"
        # New fact ids: the sample's own ids are taken already (the ingest would refuse every
        # fact, and write nothing), so the ingest under load really writes.
        more.write_text("\n".join(json.dumps(dict(f, id=f"load-{f['id']}"))
                                  for f in generate_facts("hqip", args.sample, seed=7)
                                  if not f["subject"].endswith("demo-1")) + "\n")
        env = env_for(settings)
        outputs = [home / "ingest.out", home / "sweep.out"]
        background = [subprocess.Popen([sys.executable, "-m", "lifecycle", command, *extra],
                                       env=env, stdout=output.open("w"),
                                       stderr=subprocess.DEVNULL)
                      for (command, extra), output in zip((("ingest", [str(more)]),
                                                           ("sweep", [])), outputs)]
        loaded, load_errors = run_clients(url, token, people, args.clients, args.rounds)
        next_phase(process, args.profile)
        codes = [p.wait() for p in background]
        for output in outputs:
            print(f"  {output.stem}: {output.read_text().strip().splitlines()[:1]}")
        ratio = percentile(loaded, 0.95) / percentile(idle, 0.95)
        print(f"idle: {len(idle)} requests, p50 {statistics.median(idle) * 1000:.1f} ms, "
              f"p95 {percentile(idle, 0.95) * 1000:.1f} ms, errors {idle_errors}")
        print(f"under ingest + sweep (exit codes {codes}): {len(loaded)} requests, "
              f"p50 {statistics.median(loaded) * 1000:.1f} ms, "
              f"p95 {percentile(loaded, 0.95) * 1000:.1f} ms, errors {load_errors}")
        print(f"p95 under load / idle: {ratio:.2f} (target <= {P95_RATIO_TARGET})")
        started = time.perf_counter()
        view_errors = view_all(url, token, [f"member:{n}" for n in range(args.viewed)],
                               args.clients)
        peak = peak_rss_mb(process.pid)
        print(f"viewed {args.viewed} distinct subjects in {time.perf_counter() - started:.1f} s "
              f"(errors {view_errors}); serve peak RSS {peak:.0f} MB "
              f"(target < {PEAK_TARGET_MB:.0f})")
        ok = (not idle_errors and not load_errors and not view_errors
              and ratio <= P95_RATIO_TARGET and peak < PEAK_TARGET_MB)
        return 0 if ok else 1
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
