"""The Optuna study in PostgreSQL (``sweep.optuna_storage``), against a real server started for this module.

The server is Debian's PostgreSQL (``apt-get install postgresql``; ``.ci/run`` installs it where it
can): initdb in a temporary directory, TCP on a free port of 127.0.0.1 with password (SCRAM) auth,
trust only on its private unix socket. Without the binaries the server tests skip, saying why.
"""

from __future__ import annotations

import glob
import importlib.util
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import psycopg2
import pytest
import sqlalchemy.exc

from drkd.config import ConfigError
from drkd.config.presets import tiny_student_config
from drkd.config.sweep_settings import SweepSettings
from drkd.sweeps.optuna_storage import open_optuna_storage
from drkd.sweeps.tuner import SweepPlan, _searcher

USER, PASSWORD = "drkd", "s3cret-Pa55"  # the role the tests connect as, over TCP with SCRAM auth
SUPERUSER = "postgres"  # the server's admin, reached through the unix socket only (trust)


def _server_binaries() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb and pg_ctl, else their directory on PATH."""
    found = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin") if (Path(d) / "initdb").exists()]
    found.sort(key=lambda d: float(d.parent.name) if d.parent.name.replace(".", "").isdigit() else 0.0)
    if found and (found[-1] / "pg_ctl").exists():
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def _free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (just closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    """A running server: its port, its unix socket directory, the databases made for tests."""

    port: int
    socket_dir: Path
    _names: Iterator[int] = field(default_factory=itertools.count)

    def admin(self) -> psycopg2.extensions.connection:
        """A superuser connection (autocommit) through the unix socket."""
        conn = psycopg2.connect(host=str(self.socket_dir), port=self.port, user=SUPERUSER, dbname="postgres")
        conn.autocommit = True
        return conn

    def new_database(self) -> str:
        """A fresh database owned by ``USER``; returns its URL, password included."""
        name = f"optuna_{next(self._names)}"
        with closing(self.admin()) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} OWNER {USER}")
        return f"postgresql+psycopg2://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{name}"

    def drop_connections(self, database: str) -> int:
        """Terminate every connection to ``database`` server-side (as a server restart, a proxy or
        NAT timeout would), waiting until they are gone; returns how many there were."""
        with closing(self.admin()) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
            (count,) = cur.fetchone()
        return count


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of its own for this module, stopped and deleted afterwards.

    PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` system user
    (``runuser``) in a directory it owns; otherwise as the current user."""
    bin_dir = _server_binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)")
    as_user: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` system user to run the server as")
        if runuser is None:
            pytest.skip("running as root without `runuser` to start the server as the `postgres` user")
        as_user = [runuser, "-u", "postgres", "--"]
    # not pytest's tmp_path: its parents are private to root, the postgres user could not reach it
    root = Path(tempfile.mkdtemp(prefix="drkd-pg-"))
    data, log, pwfile = root / "data", root / "server.log", root / "superuser-password"
    init = start = None
    try:
        # initdb wants a superuser password when TCP uses password auth; the tests reach the
        # superuser only through the trusted unix socket
        pwfile.write_text(secrets.token_hex(16) + "\n")
        if as_user:
            os.chown(root, owner.pw_uid, owner.pw_gid)
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)

        def run(*cmd: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*as_user, *cmd], cwd=root, capture_output=True, text=True, timeout=120)

        port = _free_port()
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"  # throw-away: no durability
        )
        init = run(
            str(bin_dir / "initdb"),
            *("-D", str(data), "-U", SUPERUSER, f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C", "--no-sync"),
            *("--auth-local=trust", "--auth-host=scram-sha-256"),
        )
        if init.returncode == 0:
            start = run(
                str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start"
            )
        if start is None or start.returncode != 0:
            output = init.stderr if init.returncode else (log.read_text() if log.exists() else start.stderr)
            last_lines = " | ".join(output.strip().splitlines()[-3:])
            pytest.skip(f"PostgreSQL server did not start ({bin_dir}): {last_lines}")
        server = PostgresServer(port, root)
        with closing(server.admin()) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE ROLE {USER} LOGIN PASSWORD %s", (PASSWORD,))
        yield server
    finally:
        if init is not None and init.returncode == 0:  # stop it even if `pg_ctl start` gave up waiting
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    return -(x**2)


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_a_study_persists_in_postgres_across_storage_objects(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    storage = open_optuna_storage(url)
    assert storage.engine.dialect.name == "postgresql"
    study = optuna.create_study(study_name="persist", storage=storage, direction="maximize")
    study.optimize(_objective, n_trials=3)
    storage.engine.dispose()

    fresh = open_optuna_storage(url)  # a new engine: nothing shared with the first
    reopened = optuna.load_study(study_name="persist", storage=fresh)
    assert [(t.number, t.params, t.value, t.state) for t in reopened.trials] == [
        (t.number, t.params, t.value, t.state) for t in study.trials
    ]
    assert len(reopened.trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in reopened.trials)
    fresh.engine.dispose()


def test_connections_dropped_between_two_calls_are_replaced_transparently(postgres: PostgresServer) -> None:
    """An epoch-long gap after which the server (or a NAT) has dropped the pooled connections: the
    next Optuna call on the same storage object still works (``pool_pre_ping``)."""
    url = postgres.new_database()
    study = optuna.create_study(study_name="gap", storage=open_optuna_storage(url), direction="maximize")
    study.optimize(_objective, n_trials=1)
    assert postgres.drop_connections(_database(url)) >= 1  # the pool held a connection, now dead
    study.optimize(_objective, n_trials=1)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


def test_without_pre_ping_the_same_gap_fails(postgres: PostgresServer) -> None:
    """The counter-test: a plain ``RDBStorage(url)`` hands the dead pooled connection to the next
    call, which fails; so the setting in ``open_optuna_storage`` is what makes the previous test pass."""
    url = postgres.new_database()
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name="gap", storage=storage, direction="maximize")
    study.optimize(_objective, n_trials=1)
    assert postgres.drop_connections(_database(url)) >= 1
    with pytest.raises((optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError)) as caught:
        study.optimize(_objective, n_trials=1)
    error = caught.value.__cause__ if isinstance(caught.value, optuna.exceptions.StorageInternalError) else caught.value
    assert isinstance(error, sqlalchemy.exc.OperationalError) and error.connection_invalidated
    storage.engine.dispose()


def test_a_sweep_searches_in_postgres_and_refuses_an_existing_study(postgres: PostgresServer, tmp_path: Path) -> None:
    """``_searcher`` (what ``build_tuner`` calls) on a PostgreSQL URL: the first experiment creates its
    study and survives dropped connections; a second new experiment of that name is refused without
    showing the password."""
    url = postgres.new_database()
    settings = SweepSettings(name="shared", num_trials=4, optuna_storage=url, storage_path=str(tmp_path))

    def space(trial: optuna.Trial) -> dict[str, float]:
        return {"distill.drkd.lambda_pr": trial.suggest_float("distill.drkd.lambda_pr", 0.1, 10.0, log=True)}

    plan = SweepPlan("lambda_search", tiny_student_config(), settings, space=space)
    searcher = _searcher(plan)
    assert searcher.suggest("first") is not None
    assert postgres.drop_connections(_database(url)) >= 1
    assert searcher.suggest("after_the_gap") is not None  # the searcher's storage replaced its connection
    check = open_optuna_storage(url)
    assert optuna.study.get_all_study_names(check) == ["shared"]
    assert len(optuna.load_study(study_name="shared", storage=check).trials) == 2
    check.engine.dispose()

    with pytest.raises(
        ConfigError, match=r"sweep\.optuna_storage: a study named 'shared' already exists .*--resume"
    ) as caught:
        _searcher(plan)
    assert PASSWORD not in str(caught.value) and f"{USER}:***@127.0.0.1:{postgres.port}" in str(caught.value)


def test_a_wrong_password_is_refused_without_showing_it(postgres: PostgresServer) -> None:
    """The server checks passwords over TCP (SCRAM), and the error shows neither password."""
    url = postgres.new_database().replace(f":{PASSWORD}@", ":wrong-Pa55@")
    with pytest.raises(ConfigError, match="cannot connect to the database: .*password authentication failed") as caught:
        open_optuna_storage(url)
    assert "wrong-Pa55" not in str(caught.value) and PASSWORD not in str(caught.value)


def test_a_missing_driver_names_the_field_and_the_fix() -> None:
    if importlib.util.find_spec("pg8000") is not None:
        pytest.skip("pg8000 is installed: this test needs a driver that is not")
    url = f"postgresql+pg8000://{USER}:{PASSWORD}@127.0.0.1:5432/optuna"
    with pytest.raises(ConfigError, match=r"sweep\.optuna_storage = .*driver is not installed") as caught:
        open_optuna_storage(url)
    message = str(caught.value)
    assert "pg8000" in message and 'pip install -e ".[cluster]" -c constraints.txt' in message
    assert PASSWORD not in message and f"{USER}:***@" in message


def test_an_unreachable_server_names_the_field_without_the_password() -> None:
    port = _free_port()  # closed: connections are refused at once
    url = f"postgresql+psycopg2://{USER}:{PASSWORD}@127.0.0.1:{port}/optuna"
    with pytest.raises(ConfigError, match=r"sweep\.optuna_storage = .*cannot connect to the database") as caught:
        open_optuna_storage(url)
    message = str(caught.value)
    assert PASSWORD not in message and f"{USER}:***@127.0.0.1:{port}" in message
    assert "refused" in message  # the driver's reason, for the user to act on
