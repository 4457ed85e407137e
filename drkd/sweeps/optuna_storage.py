"""Opening the Optuna study's database (``sweep.optuna_storage``) so that it survives long epochs."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from drkd.config import ConfigError

if TYPE_CHECKING:
    import optuna

# Seconds after which a pooled connection is replaced before use: below the idle timeouts of
# servers, proxies and NATs (often 5-15 minutes), far below an epoch on COCO.
POOL_RECYCLE_S = 300
CLUSTER_EXTRA = 'pip install -e ".[cluster]" -c constraints.txt'


def open_optuna_storage(url: str) -> optuna.storages.RDBStorage:
    """The Optuna storage at ``url``, connected once and made robust to connections that drop while
    the sweep waits for an epoch.

    Every connection taken from the pool is checked first (``pool_pre_ping``) and silently replaced
    if the server, a proxy or a NAT dropped it during a gap of tens of minutes between two Optuna
    calls; connections to a server (not SQLite) are also renewed every ``POOL_RECYCLE_S`` seconds.

    Args:
        url: a SQLAlchemy URL (``sweep.optuna_storage``), e.g.
            ``postgresql+psycopg2://user:PASSWORD@host:5432/db`` or ``sqlite:////path/optuna.db``.

    Returns:
        The storage, its tables created if the database had none.

    Raises:
        ConfigError: naming ``sweep.optuna_storage`` and the URL with its password redacted, when the
            URL is malformed or names an unknown dialect, its database driver is not installed, or the
            database cannot be reached (refused, unknown host, wrong password, missing database).
    """
    # here, not at the top: grid sweeps import this module through tuner.py and need neither
    import optuna
    import sqlalchemy.exc

    engine_kwargs: dict[str, object] = {"pool_pre_ping": True}
    if not url.startswith("sqlite"):
        engine_kwargs["pool_recycle"] = POOL_RECYCLE_S
    where = f"sweep.optuna_storage = {redacted_url(url)!r}"
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except ImportError as err:
        raise ConfigError(
            f"{where}: its database driver is not installed ({err.__cause__ or err}); "
            f"for PostgreSQL install the cluster extra on every node: {CLUSTER_EXTRA}"
        ) from err
    except sqlalchemy.exc.ArgumentError as err:
        raise ConfigError(f"{where}: not a usable SQLAlchemy URL ({redacted_url(str(err))})") from err
    except sqlalchemy.exc.OperationalError as err:
        reason = " ".join(str(err.orig or err).split())
        raise ConfigError(f"{where}: cannot connect to the database: {redacted_url(reason)}") from err


def redacted_url(url: str) -> str:
    """A database URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
