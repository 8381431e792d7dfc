"""Waiting for vCenter tasks, with their faults turned into one line."""

from __future__ import annotations

import time
from typing import Any

from pyVmomi import vim, vmodl

POLL_FIRST = 0.02
POLL_MAX = 1.0


def fault_message(exc: BaseException) -> str:
    """vSphere faults carry their text in `msg` (often empty): fall back to the fault name."""
    msg = getattr(exc, "msg", None) or ""
    name = type(exc).__name__.rsplit(".", 1)[-1]
    return f"{name}: {msg}" if msg and name not in msg else name


def wait(task: Any, timeout: float = 3600.0) -> Any:
    """Block until the task ends; its result, or its fault raised as a pyVmomi MethodFault.

    Reads only info.state/result/error through the property collector: the whole
    `info` of some tasks (vcsim's snapshot removal) names an entity pyVmomi rejects.
    """
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=task, skip=False)],
        propSet=[
            vmodl.query.PropertyCollector.PropertySpec(
                type=vim.Task, pathSet=["info.state", "info.result", "info.error"], all=False
            )
        ],
    )
    collector = _collector(task)
    delay = POLL_FIRST
    deadline = time.monotonic() + timeout
    while True:
        result = collector.RetrievePropertiesEx(
            [spec], vmodl.query.PropertyCollector.RetrieveOptions()
        )
        props = {p.name: p.val for obj in result.objects for p in obj.propSet or ()}
        state = props.get("info.state")
        if state == vim.TaskInfo.State.success:
            return props.get("info.result")
        if state == vim.TaskInfo.State.error:
            raise props["info.error"]
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task._moId} did not finish in {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, POLL_MAX)


def _collector(task: Any) -> Any:
    si = vim.ServiceInstance("ServiceInstance", task._stub)
    return si.RetrieveContent().propertyCollector
