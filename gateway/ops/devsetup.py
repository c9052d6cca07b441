"""First-run set-up for the bundled config: dev secrets and a dev certificate authority.

Every command run without ``-c`` reads the dev secrets; ``serve`` and ``check``
also make the dev certificate. Nothing here is fit for production: the secrets
sit in plain files under ``dev-secrets/`` of the working directory (git-ignored
in a checkout of this repository) and the CA is trusted by nobody until you
tell your curl or browser about it.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme

DEV_SECRETS_DIR = Path("dev-secrets")
DEV_SECRET_NAMES = ("MESSENGER_API_SECRET", "PORTAL_ADMIN_TOKEN")
DEV_CERT_DAYS = 397  # browsers refuse longer-lived leaf certificates
# The bundled config in demo mode: a sign-in page listing the demo people, and the demo store.
DEMO_OVERRIDES = {
    "PORTAL_GATEWAY__IDENTITY__DEV_LOGIN": "true",
    "PORTAL_GATEWAY__STORE__SEED_DEMO": "true",
}


def dev_secrets(folder: Path = DEV_SECRETS_DIR) -> tuple[dict[str, str], list[str]]:
    """The dev secrets as environment defaults, generating the missing ones; also which were new."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    values: dict[str, str] = {}
    generated: list[str] = []
    for name in DEV_SECRET_NAMES:
        path = folder / name
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
            generated.append(name)
        values[name] = path.read_text(encoding="utf-8").strip()
    return values, generated


def git_ignored(path: Path) -> bool:
    """Whether git confirms that ``path`` is ignored (False outside a git work tree, or without git)."""
    git = shutil.which("git")
    if git is None:
        return False
    try:
        # SECURITY: fixed arguments, no shell, and --no-index: git reads only the ignore rules, not the
        # index, whose refresh could run a hook (core.fsmonitor) of whatever repository the folder is in.
        # Exit 0: ignored, 1: not ignored, 128: no work tree (or one git refuses to trust).
        done = subprocess.run(  # noqa: S603
            [git, "check-ignore", "--quiet", "--no-index", "--", str(path)], capture_output=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def dev_ca_path(cert: Path) -> Path:
    """Where the dev CA certificate lives: beside the dev certificate."""
    return cert.parent / "dev-ca.pem"


def ensure_dev_certificate(cert: Path, key: Path, domain: str, now: datetime | None = None) -> bool:
    """Create a dev CA and a certificate for localhost, 127.0.0.1 and ``domain`` unless both files exist.

    Returns whether it generated them.
    """
    if cert.exists() and key.exists():
        return False
    now = now or datetime.now(UTC)
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="portal-gateway dev CA")
    leaf = ca.issue_cert(
        "localhost",
        "127.0.0.1",
        domain,
        organization_name="portal-gateway dev",
        not_before=(now - timedelta(days=1)).replace(tzinfo=None),
        not_after=(now + timedelta(days=DEV_CERT_DAYS)).replace(tzinfo=None),
    )
    ca.cert_pem.write_to_path(str(dev_ca_path(cert)))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    key.touch(mode=0o600)
    leaf.private_key_pem.write_to_path(str(key))
    return True
