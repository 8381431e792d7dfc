"""Notifications of policy runs through Apprise (mail, webhooks, chat): one message per
run with every VM's outcome, bytes and duration, and every failure's reason.

A notification URL often holds a password or a token (``mailto://user:pw@host``,
``discord://id/token``). So the URLs are stored sealed with the master key, shown only
redacted (Apprise's privacy form), and kept out of the logs: Apprise's debug output
(request URLs, headers, payloads, answers, where tokens travel in forms no scrubber can
all recognise) is dropped, and whatever Apprise, or urllib3 below it (request lines hold
a webhook's path), logs otherwise has every secret piece of the URLs this process has
loaded replaced by ``****``.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import shlex
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, unquote

from apprise import Apprise, AppriseAsset, NotifyFormat, NotifyType
from apprise.manager_plugins import NotificationManager
from apprise.plugins.base import NotifyBase
from apprise.result import NotifyResult

from engine.contract.policy import PolicyRun, PolicyRunVM
from engine.contract.status import JobStatus, PolicyRunStatus, RunTrigger
from engine.credentials import POLICY_NOTIFY, CredentialError, SealBroken, seal, unseal

HIDDEN = "****"
_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]{0,31})://")
_SEPARATORS = re.compile(r"[/:@?&=#,;\s]+")
# Query arguments Apprise's own webhooks (json://, xml://, form://) pass on as request
# headers (+), request parameters (-) and payload fields (:); its privacy form shows their
# values as given, and ``+Authorization=Bearer …`` is how such a webhook's token is given.
_PASSED_ON = ("+", "-", ":")
# Shorter pieces of a URL are no secret worth the name, and hiding them would garble
# every log line.
_MIN_SECRET = 3


# ---- keeping secrets out of logs -------------------------------------------------------

_quiet: ContextVar[bool] = ContextVar("sendense_notify_quiet", default=False)


def _finder(secrets: Iterable[str]) -> re.Pattern[str] | None:
    longest_first = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, longest_first))) if longest_first else None


def _scrub(finder: re.Pattern[str] | None, text: str) -> str:
    return finder.sub(HIDDEN, text) if finder else text


class _Guard(logging.Filter):
    """Stands on the ``apprise`` and ``urllib3.connectionpool`` loggers for the process's
    life (a service Apprise gave up waiting for still logs after ``send`` returned)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._finder: re.Pattern[str] | None = None

    def hide(self, secrets: Iterable[str]) -> None:
        given = set(secrets)
        with self._lock:
            if not given <= self._secrets:
                self._secrets |= given
                self._finder = _finder(self._secrets)

    def scrub(self, text: str) -> str:
        return _scrub(self._finder, text)

    def filter(self, record: logging.LogRecord) -> bool:
        if _quiet.get() or (record.name == "apprise" and record.levelno < logging.INFO):
            return False
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: logging's own handler reports it
            return True
        clean = self.scrub(text)
        if clean != text:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
        return True


@functools.cache
def _guard() -> _Guard:
    guard = _Guard()
    for name in ("apprise", "urllib3.connectionpool"):
        logging.getLogger(name).addFilter(guard)
    return guard


@contextmanager
def _silenced() -> Iterator[None]:
    """Apprise says nothing while it reads a URL: its complaints about a bad one quote
    the URL, and the caller gets the reason as an answer instead."""
    _guard()
    token = _quiet.set(True)
    try:
        yield
    finally:
        _quiet.reset(token)


def _pieces(text: str) -> set[str]:
    """The parts of a URL between its separators, percent-decoded (a decoded part is
    split again: ``Bearer%20token`` is also ``token``)."""
    out: set[str] = set()
    for piece in _SEPARATORS.split(text):
        plain = unquote(piece)
        out |= {plain, *_SEPARATORS.split(plain)}
    return out


def _written(secrets: set[str]) -> set[str]:
    """Secrets as they may be written: as they are, and percent-encoded."""
    return secrets | {quote(s, safe="") for s in secrets}


# ---- reading URLs ------------------------------------------------------------------------


@functools.cache
def _plugins() -> NotificationManager:
    return NotificationManager()


def _load(url: str, asset: AppriseAsset | None = None) -> NotifyBase | str:
    """Apprise's service for ``url``, or one line saying why Apprise cannot use it."""
    scheme = _SCHEME.match(url)
    schema = scheme.group(1).lower() if scheme else ""
    try:
        with _silenced():
            plugin = Apprise.instantiate(url, asset=asset, suppress_exceptions=False)
    except Exception as e:  # the plugin's complaint may quote any part of the URL
        said = _scrub(_finder(_written(_pieces(url) - {schema})), _one_line(str(e)))
        return f"Apprise cannot use this {schema}:// URL: {said or type(e).__name__}"
    if plugin is not None:
        return plugin
    if scheme is None:
        return "not an Apprise URL: give one as scheme://…, e.g. mailto://, jsons://, discord://"
    if schema in ("http", "https"):
        return f"Apprise knows no service at this {schema}:// address; a plain webhook is jsons://…"
    known = _plugins()
    if schema not in known:
        return f"unknown notification scheme {schema}://: Apprise has no such service"
    if not known[schema].enabled:
        return f"{schema}:// notifications cannot be sent from this hub: a library is missing"
    return f"Apprise cannot read this {schema}:// URL: a part is missing or malformed"


def validate(url: str) -> str | None:
    """Why Apprise cannot use ``url`` (one line, no secret of it), or None when it can:
    a bad ``--notify`` URL is refused when the policy is stored, not on its first run."""
    loaded = _load(url)
    return loaded if isinstance(loaded, str) else None


def _private(plugin: NotifyBase) -> str:
    """Apprise's privacy form, and the values it passes on (headers…) hidden too."""
    base, _, query = plugin.url(privacy=True).partition("?")
    args = []
    for arg in query.split("&") if query else []:
        raw, _, _ = arg.partition("=")
        key = unquote(raw)
        args.append(f"{key}={HIDDEN}" if key.startswith(_PASSED_ON) else arg)
    return f"{base}?{'&'.join(args)}" if args else base


def _trimmed(private: str, url: str) -> str:
    """Only the query arguments the URL itself gives: Apprise adds every default."""
    given = {
        unquote(arg.partition("=")[0]).lower()
        for arg in url.partition("?")[2].partition("#")[0].split("&")
    }
    base, _, query = private.partition("?")
    args = [arg for arg in query.split("&") if unquote(arg.partition("=")[0]).lower() in given]
    return f"{base}?{'&'.join(args)}" if args else base


def _unparsable(url: str) -> str:
    scheme = _SCHEME.match(url)
    return f"<unparsable {scheme.group(1).lower()}:// URL>" if scheme else "<unparsable URL>"


def redact(url: str) -> str:
    """The URL as an answer or a log may show it: Apprise's privacy form, with its tokens
    and passwords hidden."""
    loaded = _load(url)
    if isinstance(loaded, str):
        return _unparsable(url)
    with _silenced():
        return _trimmed(_private(loaded), url)


def _secrets(plugin: NotifyBase) -> set[str]:
    """What of the service's URL its redacted form hides, as written and encoded."""
    with _silenced():
        return _written(_pieces(plugin.url(privacy=False)) - _pieces(_private(plugin)))


# ---- sealing -------------------------------------------------------------------------------


def seal_urls(key: bytes, urls: list[str]) -> bytes | None:
    """The URLs sealed for the database (AES-256-GCM with the master key); None for none."""
    if not urls:
        return None
    return seal(key, json.dumps(urls).encode(), POLICY_NOTIFY)


def open_urls(key: bytes, sealed: bytes | None) -> list[str]:
    if sealed is None:
        return []
    try:
        urls = json.loads(unseal(key, sealed, POLICY_NOTIFY))
    except SealBroken:
        raise CredentialError(
            "the policy's notification URLs do not open with the master key: they were "
            "sealed under another key, or altered"
        ) from None
    return [str(u) for u in urls]


# ---- the message -----------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    kind: NotifyType


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{seconds:.0f} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


def _when(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _failed(vm: PolicyRunVM) -> bool:
    return vm.status is not JobStatus.COMPLETED


def _summary(run: PolicyRun) -> str:
    vms, failed = run.vms, [vm for vm in run.vms if _failed(vm)]
    if run.status in (PolicyRunStatus.MISSED, PolicyRunStatus.CANCELLED, PolicyRunStatus.RUNNING):
        return f"run {run.status}"
    if failed:
        if len(vms) == 1:
            return f"{vms[0].vm_name} failed"
        return f"{len(failed)} of {_plural(len(vms), 'VM')} failed"
    if run.status is PolicyRunStatus.FAILED:
        return "run failed"
    if len(vms) == 1:
        return f"{vms[0].vm_name} backed up"
    return f"all {_plural(len(vms), 'VM')} backed up" if vms else "nothing to back up"


def _kind(run: PolicyRun) -> NotifyType:
    if run.status is PolicyRunStatus.COMPLETED and not any(map(_failed, run.vms)):
        return NotifyType.SUCCESS
    if run.status is PolicyRunStatus.CANCELLED:
        return NotifyType.WARNING
    return NotifyType.FAILURE


def _header(run: PolicyRun) -> list[str]:
    planned = run.scheduled_for
    if run.trigger is RunTrigger.MANUAL or planned is None:
        what = f"Run {run.id}, started by hand"
    elif run.trigger is RunTrigger.CATCH_UP:
        what = f"Run {run.id}, caught up after the hub was down: scheduled for {_when(planned)}"
    else:
        what = f"Run {run.id}, scheduled for {_when(planned)}"
    lines = [f"{what}: {run.status}."]
    if run.started_at and run.finished_at:
        took = _duration((run.finished_at - run.started_at).total_seconds())
        lines.append(
            f"Started {_when(run.started_at)}, finished {_when(run.finished_at)} ({took})."
        )
    elif run.started_at:
        lines.append(f"Started {_when(run.started_at)}.")
    if run.vms:
        total = sum(vm.bytes_transferred for vm in run.vms)
        lines.append(f"Transferred {_size(total)} in all.")
    return lines


def _vm_lines(vm: PolicyRunVM, name: str) -> list[str]:
    outcome = [str(vm.status) if vm.status else "not queued"]
    if vm.status is not None:
        moved = _size(vm.bytes_transferred)
        took = f" in {_duration(vm.duration_seconds)}" if vm.duration_seconds is not None else ""
        outcome.append(moved + took)
    if vm.backup_type:
        outcome.append(str(vm.backup_type))
    lines = [f"- {name}: {', '.join(outcome)}"]
    if _failed(vm):
        lines.append(f"  reason: {_one_line(vm.error or '') or 'none given'}")
    return lines


def _vm_section(title: str, vms: list[PolicyRunVM], names: dict[str, str], of: int) -> list[str]:
    if not vms:
        return []
    lines = ["", f"{title} ({len(vms)} of {of}):"]
    for vm in vms:
        lines += _vm_lines(vm, names[vm.vm_path])
    return lines


def message(run: PolicyRun) -> Message:
    """The run's notification: a title that says how it went, and a plain-text body
    (readable in mail and chat) with every VM's outcome, failures first."""
    names: dict[str, str] = {}
    taken = [vm.vm_name for vm in run.vms]
    for vm in run.vms:  # a name two VMs share is told apart by the path
        names[vm.vm_path] = vm.vm_name if taken.count(vm.vm_name) == 1 else vm.vm_path
    body = _header(run)
    if run.error:
        missed = run.status is PolicyRunStatus.MISSED
        body += ["", f"{'Missed' if missed else 'The run failed'}: {_one_line(run.error)}"]
    of = len(run.vms)
    body += _vm_section("Failed", [vm for vm in run.vms if _failed(vm)], names, of)
    body += _vm_section("Backed up", [vm for vm in run.vms if not _failed(vm)], names, of)
    if run.retention:
        body += ["", "Retention:", *(f"- {_one_line(line)}" for line in run.retention)]
    body += ["", f"More: sendense policy show {shlex.quote(run.policy_name)}"]
    title = f"Sendense: policy {run.policy_name} — {_summary(run)}"
    return Message(title=title, body="\n".join(body), kind=_kind(run))


# ---- sending ----------------------------------------------------------------------------


def _reason(result: NotifyResult) -> str:
    said = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
    if said:
        return _one_line(said[-1]).rstrip(".")
    return "no answer in time" if result.status.name == "TIMEOUT" else "failed"


class Notifier:
    """Sends policy runs' notifications; one for the hub's life."""

    def __init__(self) -> None:
        _guard()  # before Apprise says anything
        self.asset = AppriseAsset(app_id="Sendense", app_desc="Sendense backups")

    def send(self, urls: list[str], run: PolicyRun) -> str | None:
        """Send the run's message to every URL; the error (secrets hidden) when any failed."""
        if not urls:
            return None
        targets = Apprise(asset=self.asset)
        shown: dict[str, str] = {}  # Apprise's privacy form -> ours, to name a failure
        failed: list[str] = []
        for url in urls:
            loaded = _load(url, self.asset)
            if isinstance(loaded, str):
                failed.append(f"{_unparsable(url)} ({loaded})")
                continue
            _guard().hide(_secrets(loaded))
            with _silenced():
                shown[loaded.url(privacy=True)] = _trimmed(_private(loaded), url)
            targets.add(loaded)
        if len(targets):
            failed += self._deliver(targets, shown, message(run))
        if not failed:
            return None
        return f"{len(failed)} of {len(urls)} notification targets failed: " + "; ".join(failed)

    def _deliver(self, targets: Apprise, shown: dict[str, str], note: Message) -> list[str]:
        try:
            with targets.notify(
                body=note.body,
                title=note.title,
                notify_type=note.kind,
                body_format=NotifyFormat.TEXT,
            ) as result:
                return [f"{shown.get(r.url, r.name)} ({_reason(r)})" for r in result if not r]
        except Exception as e:  # a notification must never break the end of a run
            return [f"Apprise failed: {_guard().scrub(_one_line(str(e)) or type(e).__name__)}"]
