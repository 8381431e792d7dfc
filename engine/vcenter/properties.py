"""Bulk reads through the property collector: one paged retrieval instead of a round trip
per object and per property (the difference between seconds and minutes at 5,000 VMs)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pyVmomi import vmodl

from engine.vcenter.connection import VCenter

PAGE_SIZE = 1000


def retrieve(
    vc: VCenter, spec: vmodl.query.PropertyCollector.FilterSpec
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Yield (object, {property path: value}) with RetrievePropertiesEx/Continue paging."""
    pc = vc.content.propertyCollector
    options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=PAGE_SIZE)
    result = pc.RetrievePropertiesEx([spec], options)
    while result is not None:
        for content in result.objects:
            yield content.obj, {p.name: p.val for p in content.propSet or ()}
        if not result.token:
            break
        result = pc.ContinueRetrievePropertiesEx(result.token)


def object_spec_for(objects: Iterable[Any]) -> list[vmodl.query.PropertyCollector.ObjectSpec]:
    return [vmodl.query.PropertyCollector.ObjectSpec(obj=o, skip=False) for o in objects]


def prop_spec(type_: type, paths: list[str]) -> vmodl.query.PropertyCollector.PropertySpec:
    return vmodl.query.PropertyCollector.PropertySpec(type=type_, pathSet=paths, all=False)


def container_filter(
    vc: VCenter, view: Any, prop_specs: list[vmodl.query.PropertyCollector.PropertySpec]
) -> vmodl.query.PropertyCollector.FilterSpec:
    """Every object in a container view, with the given properties."""
    traverse = vmodl.query.PropertyCollector.TraversalSpec(
        name="view", path="view", skip=False, type=type(view)
    )
    obj_spec = vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[traverse])
    return vmodl.query.PropertyCollector.FilterSpec(objectSet=[obj_spec], propSet=prop_specs)
