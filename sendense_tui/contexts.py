"""A VM of the inventory as a context the hub knows: the backup modal and the CBT key
both need one, and the hub makes it once (``add_vm``), so the console keeps it."""

from __future__ import annotations

from engine.contract.hub import VMContext, VMIn
from engine.contract.inventory import VMInfo
from sendense_tui.state import ConsoleState


async def ensure_context(state: ConsoleState, vcenter_id: int, vm: VMInfo) -> VMContext:
    """The VM's context, added on the hub first when the console has none for it."""
    context = state.contexts.get(vm.path)
    if context is None:
        context = await state.client.add_vm(VMIn(vcenter_id=vcenter_id, path=vm.path))
        state.contexts[vm.path] = context
    return context


async def enable_cbt(state: ConsoleState, vcenter_id: int, vm: VMInfo) -> VMContext:
    """CBT turned on through the hub (it needs a context: added first if missing)."""
    context = await ensure_context(state, vcenter_id, vm)
    context = await state.client.enable_cbt(context.context_id)
    state.contexts[vm.path] = context
    return context
