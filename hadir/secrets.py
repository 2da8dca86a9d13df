"""Secrets a locally managed stack makes for itself, once: in ``<home>/secrets`` (mode 0600),
unless configured (a stack run elsewhere, as in docker/, must be given them)."""

from __future__ import annotations

import os
import secrets

from hadir.config import ConfigError, Settings


def local_secret(settings: Settings, name: str, configured: str = "") -> str:
    """The configured value, else (on a locally managed stack) the one kept in
    ``<home>/secrets/<name>``, made on first use; else a ConfigError naming what to set."""
    if configured:
        return configured
    if not settings.infra.managed:
        raise ConfigError(f"{name}: set it in the configuration (the stack is not managed "
                          "here, so no local secret is made)")
    path = settings.infra.home_path / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        draft = path.with_name(f".{name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
        try:
            os.link(draft, path)  # whole or not at all; a concurrent first writer wins
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()
