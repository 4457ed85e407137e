"""Spot-interruption notices: a background thread that asks the instance metadata service whether
this machine is about to be reclaimed, so training can checkpoint mid-epoch before it is.

EC2 posts a notice two minutes before it stops or terminates a spot instance, at
``/latest/meta-data/spot/instance-action`` of its instance metadata service (IMDS): 404 while there
is none, 200 with ``{"action": "terminate", "time": ...}`` once there is. AWS recommends polling it
every 5 seconds. IMDSv2 (the default on current AMIs) needs a session token from a PUT first; the
watcher falls back to plain GETs (IMDSv1) where the PUT is refused.
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

AWS_METADATA = "http://169.254.169.254"  # EC2's link-local instance metadata service
NOTICE_PATH = "/latest/meta-data/spot/instance-action"
TOKEN_PATH = "/latest/api/token"
POLL_S = 5.0  # AWS's recommended interval; the notice comes 2 minutes ahead
TIMEOUT_S = 1.0  # the link-local service answers in milliseconds where it exists

_log = logging.getLogger("drkd.train.spot_notice")


def notice_url(setting: str) -> str | None:
    """The metadata service ``train.spot_notice`` names: ``"aws"`` EC2's, ``"off"`` none (``None``),
    else the setting itself, an ``http(s)://host[:port]`` serving the same two paths."""
    if setting == "off":
        return None
    return AWS_METADATA if setting == "aws" else setting.rstrip("/")


class SpotNotice:
    """Polls a metadata service in a daemon thread; :attr:`pending` turns True once a notice is posted.

    The first request that cannot connect ends the polling (no metadata service: not on EC2),
    logged once at INFO; later connection errors are retried. After
    :meth:`acknowledge` (the checkpoint is taken) the thread stops: one notice, one checkpoint.

    Args:
        base_url: the metadata service, e.g. :data:`AWS_METADATA`.
        log: receives one line when a notice arrives.
        poll_s: seconds between requests (default :data:`POLL_S`).
    """

    def __init__(self, base_url: str, log: Callable[[str], None], poll_s: float = POLL_S) -> None:
        self.base_url, self.log, self.poll_s = base_url, log, poll_s
        self._pending = threading.Event()
        self._stop = threading.Event()
        self._token: str | None = None
        self._thread = threading.Thread(target=self._run, name="drkd-spot-notice", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> bool:
        """True once a notice has been posted and not yet acknowledged."""
        return self._pending.is_set()

    def acknowledge(self) -> None:
        """The notice was acted on: stop polling and clear :attr:`pending`."""
        self._stop.set()
        self._pending.clear()

    def stop(self) -> None:
        self._stop.set()

    def _request(self, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
        req = urllib.request.Request(self.base_url + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            return err.code, ""

    def _poll_once(self) -> bool:
        """One check; True if a notice is posted. Raises OSError when the service cannot be reached."""
        if self._token is None:
            status, body = self._request(TOKEN_PATH, "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
            self._token = body if status == 200 else ""  # "": IMDSv1, no token
        headers = {"X-aws-ec2-metadata-token": self._token} if self._token else {}
        status, body = self._request(NOTICE_PATH, headers=headers)
        if status == 401:  # the token expired: get a new one next time
            self._token = None
        if status == 200:
            self.log(f"spot interruption notice from {self.base_url}: {body.strip()}")
            return True
        return False

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                if self._poll_once():
                    self._pending.set()
                    return
            except OSError as err:
                if first:
                    _log.info("no instance metadata service at %s (%s): spot notices off", self.base_url, err)
                    return
            first = False
            self._stop.wait(self.poll_s)


def start_spot_notice(setting: str, log: Callable[[str], None], poll_s: float = POLL_S) -> SpotNotice | None:
    """A running :class:`SpotNotice` for ``train.spot_notice`` (``None`` when it is ``"off"``)."""
    url = notice_url(setting)
    return SpotNotice(url, log, poll_s) if url else None
