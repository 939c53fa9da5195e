"""What every `murmur` command shares: the one error a user sees, and the one client of a node's API.

Every command reports a problem the same way (CliError: `murmur COMMAND: error: ...`,
exit 1), and every request to a node goes through NodeClient, so an unreachable
node, an error status or an answer that is not JSON reads the same whichever
command met it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import IO, Any

import nacl.signing

from mesh.trust.deploy import next_version
from mesh.trust.opsign import sign_request

HTTP_TIMEOUT_S = 5.0
DEFAULT_NODE_URL = "http://127.0.0.1:7800"
# Versions between these (2001-09-09 and 2286-11-20, in Unix ms) read as times.
VERSION_MS_MIN = 10**12
VERSION_MS_MAX = 10**13 - 1
# Exit statuses of every command (docs/api.md, "Exit status").
EXIT_OK = 0
EXIT_FAILED = 1  # a CliError: refused or failed
EXIT_USAGE = 2  # argparse: a wrong flag or value
EXIT_UNREACHABLE = 3  # deploy --wait: every reachable region is done; some regions did not answer
EXIT_TIMED_OUT = 4  # a --wait: not done by --timeout (the command itself was accepted)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, the shell's convention); a --wait stops, the work goes on
# How each status reads in `murmur --help` and docs/api.md ("Exit status").
EXIT_STATUS_HELP = f"""exit status:
  {EXIT_OK}    done
  {EXIT_FAILED}    refused or failed (the message says why and what to do)
  {EXIT_USAGE}    usage: a wrong flag or value
  {EXIT_UNREACHABLE}    deploy --wait: every reachable region holds it; some regions are unreachable
  {EXIT_TIMED_OUT}    deploy --wait: timed out (the deployment is accepted and keeps spreading)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); a --wait stops waiting, the work goes on"""


class CliError(Exception):
    """A problem the user can fix; `murmur` prints it without a traceback and exits `exit_status`."""

    exit_status = EXIT_FAILED


class CliTimeout(CliError):
    """Waiting ran out of time; what was asked for is accepted and may still happen."""

    exit_status = EXIT_TIMED_OUT


def base_url(node: str) -> str:
    """`--node` as a URL without a trailing slash (`host:port` gets http://)."""
    base = node.rstrip("/")
    return base if "://" in base else f"http://{base}"


def heard(unix_s: float, now_unix: float | None = None) -> str:
    """When something was last heard, for people: `2026-05-01 10:00:00Z (42 s ago)`."""
    now = time.time() if now_unix is None else now_unix
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(unix_s))
    return f"{stamp} ({max(0.0, now - unix_s):.0f} s ago)"


def version_time(version: int) -> str:
    """A record version as people read it: versions are Unix milliseconds when they were signed
    (mesh/trust/deploy.py, next_version), so `2026-05-01T10:00:00.123Z`; a version that is not a
    plausible time (a test's small number) is shown as the number."""
    if not VERSION_MS_MIN <= version <= VERSION_MS_MAX:
        return str(version)
    seconds, ms = divmod(version, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def version_text(version: int) -> str:
    """A version for a message: the raw number (what --json and the API show) and its time."""
    shown = version_time(version)
    return str(version) if shown == str(version) else f"{version} ({shown})"


def _error_message(doc: Any) -> Any:
    return doc.get("error", doc) if isinstance(doc, dict) else doc


class NodeClient:
    """JSON over HTTP to one node's API; every failure is a CliError that names the fix."""

    def __init__(self, node: str, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.base = base_url(node)
        self.timeout_s = timeout_s

    def url(self, path: str, params: Mapping[str, str] | None = None) -> str:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return f"{self.base}{path}{query}"

    def _unreachable(self, url: str, exc: Exception) -> CliError:
        reason = getattr(exc, "reason", exc)
        return CliError(
            f"cannot reach a murmur node at {url} ({reason}); start an agent, or point --node "
            f"(or MURMUR_NODE) at a running one, e.g. --node {DEFAULT_NODE_URL}"
        )

    def exchange(
        self,
        method: str,
        path: str,
        *,
        body: bytes | IO[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(status, decoded JSON) of one request, whatever the status.

        CliError if the node cannot be reached, or if it answers without JSON (an
        error status then reads `URL: HTTP 404: Not Found`).
        """
        url = self.url(path, params)
        request = urllib.request.Request(
            url, data=body, method=method, headers={"Accept": "application/json", **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                status, reason, raw = resp.status, resp.reason, resp.read()
        except urllib.error.HTTPError as exc:
            status, reason, raw = exc.code, exc.reason, exc.read()
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise self._unreachable(url, exc) from None
        try:
            return status, json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the decoder goes
            if status >= 300:
                raise CliError(f"{url}: HTTP {status}: {reason}") from None
            raise CliError(
                f"{url} answered HTTP {status} without JSON; is --node a murmur agent's API?"
            ) from None

    def call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | IO[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        expected: int = 200,
    ) -> Any:
        """The JSON answer of a request that must answer `expected`; CliError otherwise."""
        status, doc = self.exchange(method, path, body=body, headers=headers, params=params)
        if status != expected:
            raise CliError(f"{self.url(path, params)}: HTTP {status}: {_error_message(doc)}")
        return doc

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET `path`; the JSON of its 200 answer."""
        return self.call("GET", path, params=params)

    def signed(
        self, key: nacl.signing.SigningKey, method: str, path: str, doc: Mapping[str, Any]
    ) -> tuple[int, Any]:
        """Send `doc` as a request signed by the operator key; (status, JSON answer)."""
        body = json.dumps(doc, separators=(",", ":")).encode("utf-8")
        headers = sign_request(key, method, path, body, time.time())
        headers["Content-Type"] = "application/json"
        return self.exchange(method, path, body=body, headers=headers)

    def submit(self, key: nacl.signing.SigningKey, method: str, path: str, doc: Mapping[str, Any]) -> Any:
        """A signed command the node must accept (202: persisted); its JSON answer."""
        status, answer = self.signed(key, method, path, doc)
        if status != 202:
            raise CliError(f"{self.url(path)}: HTTP {status}: {_error_message(answer)}")
        return answer

    def status(self, method: str, path: str) -> int:
        """The status of a request whose answer has no body worth reading (HEAD)."""
        url = self.url(path)
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, method=method), timeout=self.timeout_s
            ) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise self._unreachable(url, exc) from None

    def next_record_version(self, author: str) -> int:
        """The next version for a record signed by author: above its latest (GET /v1/state) and unix ms."""
        state = self.get("/v1/state")
        entry = state.get("digest", {}).get(author) if isinstance(state, dict) else None
        latest = entry.get("version") if isinstance(entry, dict) else None
        return next_version(latest if isinstance(latest, int) else None, time.time())
