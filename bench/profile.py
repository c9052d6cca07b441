"""Where a gateway process spends its time under the benchmark's load, sampled with py-spy."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from bench.load import wrk

TOP = 15
REPO = str(Path(__file__).resolve().parents[1]) + "/"
_SKELETON = ("(gateway/__main__.py)", "(gateway/cli.py)", "(gateway/run/server.py)")  # on every stack: says nothing


def _short(path: str) -> str:
    """A source path relative to site-packages, the repository or the standard library."""
    if "site-packages/" in path:
        return path.rpartition("site-packages/")[2]
    if path.startswith(REPO):
        return path[len(REPO) :]
    return path.rpartition("/lib/")[2]


def _frames(stack: str) -> list[str]:
    """``function (file)`` frames of one collapsed stack, outermost first."""
    frames = []
    for frame in stack.split(";")[1:]:  # the first names the process
        function, _, where = frame.partition(" (")
        frames.append(f"{function} ({_short(where.rstrip(')'))})")
    return frames


def summarise(raw: str) -> tuple[int, Counter[str], Counter[str]]:
    """Samples, and per frame: samples where it is the leaf (self) and where it is anywhere on the stack (total)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = _frames(stack)
        if not frames:
            continue
        samples += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            total[frame] += int(count)
    return samples, own, total


def profile_gateway(pid: int, url: str, headers: dict[str, str], seconds: float, folder: Path) -> str:
    """Run the load again while py-spy samples whichever thread of ``pid`` holds the GIL; the report to print."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return "profile: py-spy not found (make bench installs it; or pip install py-spy)"
    output = folder / "profile.txt"
    load = threading.Thread(target=wrk, args=(url, headers), kwargs={"seconds": seconds, "connections": 50})
    load.start()
    # --gil: a GIL-bound process does its work in whichever thread holds the GIL; threads waiting are not cost.
    record = ["record", "--pid", str(pid), "--duration", str(max(1, int(seconds) - 1)), "--rate", "250", "--gil"]
    subprocess.run(
        [spy, *record, "--nolineno", "--format", "raw", "--output", str(output)], check=True, capture_output=True
    )
    load.join()
    samples, own, total = summarise(output.read_text())
    lines = [f"profile of the one-process gateway under the same load (py-spy, GIL holder, {samples} samples):"]
    lines.append(f"{'own %':>7}  frame")
    lines += [f"{100 * count / samples:>7.1f}  {frame}" for frame, count in own.most_common(TOP)]
    lines.append(f"{'total %':>7}  frame (gateway and routes, below the process's own start-up frames)")
    ours = [
        (frame, count)
        for frame, count in total.most_common()
        if ("(gateway/" in frame or "(routes/" in frame) and not frame.endswith(_SKELETON)
    ]
    lines += [f"{100 * count / samples:>7.1f}  {frame}" for frame, count in ours[:TOP]]
    return "\n".join(lines)
