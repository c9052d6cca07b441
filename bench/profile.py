"""Where a gateway process spends its time under the benchmark's load, sampled with py-spy; and how that differs
from row e's minimal proxy, frame by frame."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.load import WrkResult, wrk

TOP = 15
RATE = 250  # py-spy samples a second
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


@dataclass(frozen=True)
class Profile:
    """One process sampled under the load: py-spy's samples per frame, and the requests served meanwhile."""

    samples: int
    own: Counter[str]
    total: Counter[str]
    requests: float

    def us(self, count: int) -> float:
        """``count`` samples as microseconds of the GIL a request (py-spy samples ``RATE`` times a second)."""
        return count / RATE / self.requests * 1e6 if self.requests else 0.0


def sample(pid: int, url: str, headers: dict[str, str], seconds: float, output: Path) -> Profile | str:
    """Run the load again while py-spy samples whichever thread of ``pid`` holds the GIL; a reason when it cannot."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return "profile: py-spy not found (make bench installs it; or pip install py-spy)"
    result: list[WrkResult] = []
    load = threading.Thread(
        target=lambda: result.append(wrk(url, headers, seconds=seconds, connections=50)), name="profiled load"
    )
    load.start()
    # --gil: a GIL-bound process does its work in whichever thread holds the GIL; threads waiting are not cost.
    duration = max(1, int(seconds) - 1)
    record = ["record", "--pid", str(pid), "--duration", str(duration), "--rate", str(RATE), "--gil"]
    subprocess.run(
        [spy, *record, "--nolineno", "--format", "raw", "--output", str(output)], check=True, capture_output=True
    )
    load.join()
    samples, own, total = summarise(output.read_text())
    # The load runs a little longer than the recording: the requests of the recorded seconds only.
    requests = result[0].rate * duration if result else 0.0
    return Profile(samples, own, total, requests)


def report(profile: Profile) -> str:
    """The one-process gateway's top frames, by their own samples and by their total."""
    samples, own, total = profile.samples, profile.own, profile.total
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


def difference(gateway: Profile, minimal: Profile) -> str:
    """What the gateway runs that row e's minimal proxy does not: each frame's own µs a request, the gateway's
    less e's, the largest first (a frame e has too, the event loop's or aiohttp's, shows only its excess)."""
    frames = set(gateway.own) | set(minimal.own)
    extra = sorted(
        ((gateway.us(gateway.own[frame]) - minimal.us(minimal.own[frame]), frame) for frame in frames), reverse=True
    )
    lines = [
        "what d1 runs beyond row e (py-spy, own µs of the GIL a request: "
        f"d1 {gateway.us(gateway.samples):.0f} in all, e {minimal.us(minimal.samples):.0f}):",
        f"{'d1 - e':>7}{'d1':>7}{'e':>7}  frame",
    ]
    lines += [
        f"{more:>7.1f}{gateway.us(gateway.own[frame]):>7.1f}{minimal.us(minimal.own[frame]):>7.1f}  {frame}"
        for more, frame in extra[:TOP]
    ]
    return "\n".join(lines)
