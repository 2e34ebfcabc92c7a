"""Time and peak memory of the Monte Carlo forecast alone, in its own process:
`python -m bench.monte_carlo --deals 1000000 --draws 10000` prints JSON."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from transforms.forecast import MONTHS_AHEAD, ForecastRules, monte_carlo_totals


def measure(deals: int, draws: int, owners: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    probability = rng.dirichlet(np.ones(MONTHS_AHEAD + 1), deals)[:, :MONTHS_AHEAD] * 0.5
    amount = rng.lognormal(np.log(80_000), 0.8, deals)
    owner = rng.integers(0, owners, deals)
    periods = [[0], [1], [2], [0, 1], [2, 3, 4], [5, 6, 7]]
    start = time.perf_counter()
    monte_carlo_totals(
        amount, probability, owner, owners, periods, draws, 1, ForecastRules().chunk_deals
    )
    return {
        "deals": deals,
        "draws": draws,
        "owners": owners,
        "seconds": round(time.perf_counter() - start, 2),
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> int:
    """This process's own peak: Linux carries ru_maxrss over from the parent it was forked
    from (the bench, gigabytes), while VmHWM starts afresh with the new program."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    kilobytes = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
    return round(int(kilobytes) / 1024)


def in_own_process(deals: int, draws: int, owners: int) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.monte_carlo", "--deals", str(deals)]
    command += ["--draws", str(draws), "--owners", str(owners)]
    return json.loads(subprocess.run(command, check=True, capture_output=True).stdout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--draws", type=int, default=10_000)
    parser.add_argument("--owners", type=int, default=4_000)
    args = parser.parse_args()
    print(json.dumps(measure(args.deals, args.draws, args.owners)))
