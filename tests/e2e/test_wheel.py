"""The package as users get it: the wheel, built as the Dockerfile builds it, in a fresh virtualenv.

Every other test imports the source tree (``pip install -e``), so a module or
data file left out of the wheel goes unseen there. Here the build stage's
files are copied as its ``COPY`` lines say, built with its command, and the
wheel is installed into a virtualenv of its own with pip (dependencies from
the package index, as a user gets them). Every command then runs from an
empty folder with no PYTHONPATH and the container's environment, so the
gateway's code can only come from the wheel. The image itself is never built
here (no Docker engine): what can be checked without one is checked from the
Dockerfile's text.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from gateway.config import Address, load_config
from gateway.namespace import HEALTH
from gateway.ops.devsetup import DEMO_OVERRIDES
from gateway.ops.variant import COMPILED
from gateway.policy.identity import Identity, JWTVerifier
from tests.conftest import StartGateway
from tests.run.conftest import (
    CLI_PREFIX,
    Launch,
    base_env,
    launch,  # noqa: F401 (a fixture)
    run_cli,
)

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
BUILD_TIMEOUT = 300
# Left out of the build context, as .dockerignore leaves them out of the image's.
NOT_COPIED = shutil.ignore_patterns("__pycache__", "*.egg-info")
LISTEN_OVERRIDES = ("PORTAL_GATEWAY__LISTEN__HTTPS", "PORTAL_GATEWAY__LISTEN__HTTP")


# --- the Dockerfile, read ------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    arguments: str


def dockerfile_stages(text: str) -> list[list[Instruction]]:
    """The instructions of each build stage, in order (each FROM starts one)."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    stages: list[list[Instruction]] = []
    for line in joined.splitlines():
        keyword, _, arguments = line.strip().partition(" ")
        if not keyword:
            continue
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), " ".join(arguments.split())))
    return stages


STAGES = dockerfile_stages(DOCKERFILE.read_text(encoding="utf-8"))
BUILD_STAGE, IMAGE_STAGE = STAGES[0], STAGES[-1]


def arguments(stage: list[Instruction], keyword: str) -> list[str]:
    """The arguments of every ``keyword`` instruction of ``stage``."""
    return [instruction.arguments for instruction in stage if instruction.keyword == keyword]


def image_env() -> dict[str, str]:
    """The variables the image's ENV lines set."""
    env: dict[str, str] = {}
    for line in arguments(IMAGE_STAGE, "ENV"):
        env.update(pair.partition("=")[::2] for pair in line.split())
    return env


def healthcheck_command(https_port: int) -> str:
    """The image's HEALTHCHECK command, aimed at ``https_port`` on loopback instead of the image's port."""
    (line,) = arguments(IMAGE_STAGE, "HEALTHCHECK")
    command = line.partition(" CMD ")[2]
    assert command, line
    return command.replace(f"127.0.0.1:{healthcheck_url().port}", f"127.0.0.1:{https_port}")


def healthcheck_url() -> URL:
    """The URL the image's HEALTHCHECK asks."""
    (line,) = arguments(IMAGE_STAGE, "HEALTHCHECK")
    match = re.search(r"https?://[^'\"\s]+", line)
    assert match, line
    return URL(match[0])


async def run_healthcheck(https_port: int, python_bin: Path) -> int:
    """The exit code of the HEALTHCHECK command run by ``sh`` with ``python_bin`` first on PATH."""
    env = base_env(source_tree=False, PATH=os.pathsep.join([str(python_bin), os.environ.get("PATH", "")]))
    proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", healthcheck_command(https_port), env=env)
    return await asyncio.wait_for(proc.wait(), 30)


def test_the_image_installs_the_wheel_its_build_stage_builds() -> None:
    builds = [line for line in arguments(BUILD_STAGE, "RUN") if line.startswith("python -m build --wheel")]
    assert len(builds) == 1, arguments(BUILD_STAGE, "RUN")
    outdir = builds[0].partition("--outdir ")[2].split()[0]
    copies = arguments(IMAGE_STAGE, "COPY")
    # The image takes the built wheel, and nothing of the source tree.
    assert copies == [f"--from=build {outdir}/ /tmp/dist/"], copies
    installs = [line for line in arguments(IMAGE_STAGE, "RUN") if "pip install" in line]
    assert len(installs) == 1, installs
    assert installs[0].startswith("pip install /tmp/dist/*.whl "), installs
    assert not any(re.search(r"pip install \.(\s|$)", line) for stage in STAGES for line in arguments(stage, "RUN"))
    assert arguments(IMAGE_STAGE, "ENTRYPOINT") == ['["portal-gateway", "serve"]']


def test_only_the_build_stage_has_the_compiler_the_compiled_wheel_needs() -> None:
    build_runs, image_runs = arguments(BUILD_STAGE, "RUN"), arguments(IMAGE_STAGE, "RUN")
    (compiler,) = [line for line in build_runs if "apt-get install" in line]
    assert re.search(r"\bgcc\b", compiler), compiler
    assert build_runs.index(compiler) < build_runs.index(next(line for line in build_runs if "build --wheel" in line))
    assert not [line for line in image_runs if "apt-get" in line or "gcc" in line], image_runs
    # setup.py is what compiles: the build stage must copy it, or the wheel is quietly pure.
    assert any("setup.py" in line.split() for line in arguments(BUILD_STAGE, "COPY")), arguments(BUILD_STAGE, "COPY")


def test_the_image_listens_on_all_interfaces_on_the_ports_it_exposes() -> None:
    env = image_env()
    assert set(LISTEN_OVERRIDES) <= env.keys(), env
    # The variables are valid config values: the bundled file, in demo mode as the entrypoint runs it.
    secrets = {"MESSENGER_API_SECRET": "s" * 32, "PORTAL_ADMIN_TOKEN": "t" * 32}
    config = load_config(None, environ={**env, **secrets}, env_defaults=DEMO_OVERRIDES)
    assert config.listen.https == Address(host="0.0.0.0", port=8443)  # noqa: S104 (a container's own interfaces)
    assert config.listen.http == Address(host="0.0.0.0", port=8080)  # noqa: S104
    assert arguments(IMAGE_STAGE, "EXPOSE") == [f"{config.listen.https.port} {config.listen.http.port}"]
    assert healthcheck_url().port == config.listen.https.port


async def test_the_healthcheck_gets_its_200_from_a_deployment_that_serves_only_its_domain(
    start_gateway: StartGateway,
) -> None:
    # A real deployment: no dev login, no loopback among the served hosts; the probe still asks 127.0.0.1.
    gateway = await start_gateway(listen={"allowed_hosts": []}, identity={"dev_login": False})
    assert healthcheck_url().path in HEALTH.paths
    async with gateway.client.get(gateway.url / "tickets", headers={"Host": "127.0.0.1:8443"}) as refused:
        assert refused.status == 421  # the Host rule is on: only the probe is exempt
    assert await run_healthcheck(gateway.running.https_port, Path(sys.executable).parent) == 0


# --- the wheel, built and installed ----------------------------------------------------------------


def build_context(folder: Path) -> Path:
    """``folder`` holding what the build stage's COPY lines put in its WORKDIR."""
    for line in arguments(BUILD_STAGE, "COPY"):
        *sources, destination = line.split()
        target = folder / destination
        for source in sources:
            path = REPO / source
            if path.is_dir():
                shutil.copytree(path, target, symlinks=True, ignore=NOT_COPIED)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
    return folder


def timed(what: str, *args: str) -> None:
    """Run ``python -m ARGS`` with this interpreter, fail the test with its output if it fails, print how long."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"{what} in {time.monotonic() - started:.1f} s")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from the build stage's files with its command."""
    context = build_context(tmp_path_factory.mktemp("context"))
    dist = tmp_path_factory.mktemp("dist")
    timed("wheel built", "build", "--wheel", "--outdir", str(dist), str(context))
    (found,) = dist.glob("*.whl")
    return found


@dataclass(frozen=True)
class Venv:
    """A virtualenv that holds the wheel and its dependencies, nothing else."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def site_packages(self) -> Path:
        (found,) = self.root.glob("lib/python*/site-packages")
        return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh virtualenv (no system site-packages, no pip of its own) with the wheel pip-installed."""
    env = Venv(tmp_path_factory.mktemp("venv") / "env")
    timed("virtualenv made", "venv", "--without-pip", str(env.root))
    # The running pip installs into the new interpreter's environment: the wheel, then its dependencies.
    timed("wheel installed with its dependencies", "pip", "--python", str(env.bin / "python"), "install", str(wheel))
    return env


def shipped_files() -> Iterator[str]:
    """What the wheel must hold: every module of both packages, the bundled config, every template and static file."""
    for package in ("gateway", "routes"):
        yield from (str(path.relative_to(REPO)) for path in (REPO / package).rglob("*.py"))
    yield "gateway/gateway.yaml"
    for folder in ("routes/templates", "routes/static"):
        yield from (str(path.relative_to(REPO)) for path in (REPO / folder).rglob("*") if path.is_file())


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_data_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        bundled = archive.read("gateway/gateway.yaml") if "gateway/gateway.yaml" in names else b""
    missing = sorted(set(shipped_files()) - names)
    assert not missing, f"not in the wheel: {missing}"
    # A compiled wheel also holds mypyc's shared runtime library at the top level (setup.py).
    top = {name.split("/")[0] for name in names if ".dist-info/" not in name and "__mypyc." not in name}
    assert top == {"gateway", "routes"}
    # gateway/gateway.yaml is a symlink in the tree; the wheel holds the file itself.
    assert bundled == (REPO / "gateway.yaml").read_bytes()


def own_tests(module: str) -> Path:
    """The unit and property tests of a gateway module: tests/ mirrors gateway/ (tests/test_layout.py)."""
    room, _, name = module.removeprefix("gateway.").rpartition(".")
    return REPO / "tests" / room.replace(".", "/") / f"test_{name}.py"


# Run by this suite's interpreter (its test dependencies), with the installed packages imported before pytest
# puts the source tree first on sys.path: every gateway module the tests import is then the wheel's.
ON_THE_INSTALLED_PACKAGE = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import gateway, routes
from gateway.ops.variant import COMPILED, compiled_modules
assert Path(gateway.__file__).resolve().is_relative_to(sys.argv[2]), gateway.__file__
assert compiled_modules() == list(COMPILED), compiled_modules()
import pytest
sys.exit(pytest.main(sys.argv[3:]))
"""


@pytest.mark.slow
def test_the_wheel_ships_the_hot_modules_compiled_and_their_own_tests_pass_on_them(venv: Venv, tmp_path: Path) -> None:
    site = venv.site_packages()
    assert [name for name in COMPILED if not list(site.glob(f"{name.replace('.', '/')}.*.so"))] == []
    version = subprocess.run(
        [venv.bin / "portal-gateway", "--version"],
        cwd=tmp_path,
        env=container_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.endswith(", compiled (mypyc)\n"), version.stdout

    # Only the wheel's own files: the packages and mypyc's shared runtime library; dependencies are the suite's.
    installed = tmp_path / "installed"
    installed.mkdir()
    for entry in site.iterdir():
        if entry.name in ("gateway", "routes") or "__mypyc." in entry.name:
            (installed / entry.name).symlink_to(entry)
    tests = [str(own_tests(name)) for name in COMPILED]
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            ON_THE_INSTALLED_PACKAGE,
            str(installed),
            str(site),
            "-q",
            "-x",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            *tests,
        ],
        cwd=REPO,
        env=base_env(source_tree=False),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert re.search(r"\b\d+ passed\b", done.stdout), done.stdout[-2000:]


class Page(HTMLParser):
    """The stylesheets and forms of an HTML page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.stylesheets: list[str] = []
        self.forms: list[dict[str, str]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "link" and values.get("rel") == "stylesheet":
            self.stylesheets.append(values["href"])
        elif tag == "form":
            self.forms.append({})
        elif tag == "input" and self.forms and "name" in values:
            self.forms[-1][values["name"]] = values.get("value", "")


def assert_imported_from_the_venv(venv: Venv, cwd: Path, env: Mapping[str, str]) -> None:
    """The venv's python in ``cwd`` finds both packages and the bundled config in the venv, the tree nowhere."""
    where = (
        "import json, gateway, routes, sys; from gateway.config import bundled_config_path;"
        "print(json.dumps([gateway.__file__, routes.__file__, str(bundled_config_path()), sys.path]))"
    )
    found = subprocess.run(
        [venv.bin / "python", "-c", where], cwd=cwd, env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert found.returncode == 0, found.stderr
    gateway_file, routes_file, bundled, path = json.loads(found.stdout)
    for module in (gateway_file, routes_file, bundled):
        assert Path(module).is_relative_to(venv.site_packages()), module
    assert not Path(bundled).is_symlink()
    assert Path(bundled).read_bytes() == (REPO / "gateway.yaml").read_bytes()
    assert not [entry for entry in path if entry and Path(entry).resolve().is_relative_to(REPO)], path


def container_env(**overrides: str) -> dict[str, str]:
    """The image's environment on loopback ports the kernel picks, with no PYTHONPATH: the tree is nowhere."""
    loopback = dict.fromkeys(LISTEN_OVERRIDES, "127.0.0.1:0")
    return base_env(source_tree=False, **{**image_env(), **loopback, **overrides})


async def test_the_installed_wheel_runs_from_an_empty_folder(venv: Venv, launch: Launch, tmp_path: Path) -> None:  # noqa: F811
    work = tmp_path / "empty"
    work.mkdir()
    env = container_env()
    cli = venv.bin / "portal-gateway"

    async def command(*args: str) -> tuple[int, str, str]:
        return await run_cli(*args, cwd=work, env=env, program=[str(cli)])

    assert_imported_from_the_venv(venv, work, env)

    code, output, errors = await command("--help")
    assert code == 0, errors
    assert all(name in output for name in ("serve", "check", "token", "preview", "import", "audit")), output

    served = await launch(["serve"], cwd=work, env=env, program=[str(cli)])
    first_run = [line for line in served.lines if line.startswith(f"{CLI_PREFIX} generated dev secrets")]
    assert len(first_run) == 1, served.stderr
    assert "git-ignored" not in first_run[0]  # an empty folder is no checkout: nothing ignores dev-secrets/ there

    ca = ssl.create_default_context(cafile=str(work / "certs" / "dev-ca.pem"))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ca), cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as client:
        async with client.get(served.url / "healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}

        # Someone the bundled access rules let in, as `preview` (from the wheel too) lists them.
        code, output, errors = await command("preview", "--rules", "access", "--limit", "1")
        assert code == 0, errors
        match = re.search(r"user_id=(\S+)", output)
        assert match, output
        async with client.get(served.url / "dev" / "login") as response:
            assert response.status == 200
            forms = Page(await response.text()).forms
        (form,) = [form for form in forms if form.get("user_id") == match[1]]
        async with client.post(served.url / "dev" / "login", data=form) as response:
            assert response.status == 200
            assert response.url.path == "/tickets"
            page = Page(listing := await response.text())
            assert 'href="/tickets/' in listing, listing[:2000]
        stylesheet, brand = page.stylesheets  # the package's file, then the brand's colours
        async with client.get(served.url.join(URL(stylesheet))) as response:
            assert response.status == 200
            assert response.content_type == "text/css"
            assert await response.read() == (venv.site_packages() / "routes" / "static" / "gateway.css").read_bytes()
        async with client.get(served.url.join(URL(brand))) as response:
            assert response.status == 200
            assert response.content_type == "text/css"
            assert "--accent: #0b57d0;" in await response.text()

    assert await run_healthcheck(served.https_port, venv.bin) == 0

    code, output, errors = await command("check")
    assert code in (0, 1), errors
    assert output.strip(), errors
    assert "Traceback" not in errors

    code, output, errors = await command("token", "--user-id", "x")
    assert code == 0, errors
    secret = (work / "dev-secrets" / "MESSENGER_API_SECRET").read_text(encoding="utf-8").strip()
    identity = JWTVerifier([secret], leeway=0, require_exp=True).verify(output.strip(), time.time())
    assert isinstance(identity, Identity), identity
    assert identity.user_id == "x"

    served.proc.send_signal(signal.SIGTERM)
    assert await served.wait_exit() == 0, served.stderr

    code, output, errors = await command("audit")  # the default path, where serve wrote
    assert code == 0, errors
    requests = re.search(r"^requests: (\d+)$", output, re.MULTILINE)
    assert requests, output
    assert int(requests[1]) >= 5, output  # healthz, the login page, the sign-in and its redirect, the CSS
