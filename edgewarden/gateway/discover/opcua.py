"""Browse an OPC UA server for tags: every Variable under a root (the Objects folder by
default), bounded in depth and count, with its data type, the EngineeringUnits and EURange
properties (OPC UA Part 8) and its access levels: AccessLevel (the node may be written)
and UserAccessLevel (this login may write it: a read-only login is right for monitor, not
for control, and the draft says which). The standard address space (namespace 0) is not
walked. A variable that holds an array (ValueRank 0 or more, or a value that is a list where
the rank allows either) is skipped with the reason: the gateway reads scalars, one node
per tag (a PLC's array is mapped to scalar variables on the server, one per element)."""

from __future__ import annotations

import asyncio
from typing import Any

from asyncua import Client, ua

from edgewarden.gateway.discover.draft import Found, tag_name

TYPES = {
    ua.ObjectIds.Double: "double", ua.ObjectIds.Float: "float", ua.ObjectIds.Boolean: "bool",
    ua.ObjectIds.Int16: "int16", ua.ObjectIds.UInt16: "uint16", ua.ObjectIds.Int32: "int32",
    ua.ObjectIds.UInt32: "uint32", ua.ObjectIds.Duration: "double",
}
CURRENT_WRITE = 0x02  # AccessLevelType bit (OPC UA Part 3)
SCALAR_OR_ONE_DIMENSION, ANY_RANK = -3, -2  # ValueRank values that allow a scalar or an array (Part 3)
READ_CHUNK = 200  # nodes per Read request: below the MaxNodesPerRead servers commonly allow
_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)


async def browse(client: Client, root: ua.NodeId, *, max_depth: int, max_nodes: int,
                 timeout_s: float) -> tuple[list[Found], list[str], str]:
    """(tags, skipped values with the reason, why the walk stopped early or "")."""
    variables: list[tuple[ua.NodeId, str, str]] = []  # node, browse name, browse path
    queue: list[tuple[ua.NodeId, int, str]] = [(root, 0, "")]
    seen = {root}
    truncated = ""
    while queue:
        node_id, depth, path = queue.pop(0)
        refs = await asyncio.wait_for(client.get_node(node_id).get_children_descriptions(
            refs=ua.ObjectIds.HierarchicalReferences), timeout_s)
        for ref in refs:
            child = ref.NodeId
            if ref.ReferenceTypeId == _PROPERTY or child in seen or child.NamespaceIndex == 0:
                continue  # properties are read with their variable; namespace 0 is the standard space
            seen.add(child)
            if len(seen) > max_nodes:
                truncated = f"--max-nodes {max_nodes} reached (browse a subtree with --root, or raise it)"
                queue.clear()
                break
            name = ref.BrowseName.Name or child.to_string()
            child_path = f"{path}/{name}" if path else name
            if ref.NodeClass == ua.NodeClass.Variable:
                variables.append((child, name, child_path))
            if depth + 1 < max_depth:
                queue.append((child, depth + 1, child_path))
            elif not truncated and ref.NodeClass == ua.NodeClass.Object:
                truncated = f"--max-depth {max_depth} reached below {child_path} (raise it, or use --root)"
    return *await _describe(client, variables, timeout_s), truncated


async def _describe(client: Client, variables: list[tuple[ua.NodeId, str, str]],
                    timeout_s: float) -> tuple[list[Found], list[str]]:
    ids = [v[0] for v in variables]
    if not ids:
        return [], []
    types = await _read(client, ids, ua.AttributeIds.DataType, timeout_s)
    ranks = await _read(client, ids, ua.AttributeIds.ValueRank, timeout_s)
    access = await _read(client, ids, ua.AttributeIds.AccessLevel, timeout_s)
    user_access = await _read(client, ids, ua.AttributeIds.UserAccessLevel, timeout_s)
    found: list[Found] = []
    skipped: list[str] = []
    taken: set[str] = set()
    maybe = [i for i, r in enumerate(ranks) if not isinstance(r, int) or r in (SCALAR_OR_ONE_DIMENSION, ANY_RANK)]
    values = dict(zip(maybe, await _read(client, [ids[i] for i in maybe], ua.AttributeIds.Value, timeout_s),
                      strict=True)) if maybe else {}
    rows = zip(variables, types, ranks, access, user_access, strict=True)
    for i, ((node_id, name, path), dtype, rank, level, user_level) in enumerate(rows):
        kind = TYPES.get(dtype.Identifier) if isinstance(dtype, ua.NodeId) and dtype.NamespaceIndex == 0 else None
        if kind is None:
            skipped.append(f"{path} ({node_id.to_string()}): data type {dtype} is not one the gateway reads")
            continue
        if (isinstance(rank, int) and rank >= 0) or isinstance(values.get(i), (list, tuple)):
            shape = f"ValueRank {rank}" if isinstance(rank, int) and rank >= 0 else "its value is a list"
            skipped.append(f"{path} ({node_id.to_string()}): an array of {kind} ({shape}); the gateway reads "
                           "scalars, one node per tag: map the elements it needs to scalar variables on the server")
            continue
        units, eu_range = await _properties(client, node_id, timeout_s)
        writable = isinstance(level, int) and bool(level & CURRENT_WRITE)
        by_us = isinstance(user_level, int) and bool(user_level & CURRENT_WRITE)
        found.append(Found(
            name=tag_name(name, taken), source={"node": node_id.to_string()}, datatype=kind, units=units,
            range=eu_range, writable=writable, description=path,
            note="" if by_us or not writable else "writable on the server, not by this login: monitor runs "
                 "with it; pid or a model needs a login that may write it"))
    return found, skipped


async def _read(client: Client, ids: list[ua.NodeId], attr: ua.AttributeIds, timeout_s: float) -> list[Any]:
    values = []
    for i in range(0, len(ids), READ_CHUNK):
        values += await asyncio.wait_for(client.uaclient.read_attributes(ids[i:i + READ_CHUNK], attr), timeout_s)
    return [dv.Value.Value if dv.StatusCode.is_good() and dv.Value is not None else None for dv in values]


async def _properties(client: Client, node_id: ua.NodeId, timeout_s: float) -> tuple[str, tuple[float, float] | None]:
    """EngineeringUnits → units (its DisplayName), EURange → range."""
    refs = await asyncio.wait_for(client.get_node(node_id).get_children_descriptions(
        refs=ua.ObjectIds.HasProperty), timeout_s)
    props = {r.BrowseName.Name: r.NodeId for r in refs if r.BrowseName.Name in ("EngineeringUnits", "EURange")}
    if not props:
        return "", None
    values = dict(zip(props, await _read(client, list(props.values()), ua.AttributeIds.Value, timeout_s),
                      strict=True))
    eu, rng = values.get("EngineeringUnits"), values.get("EURange")
    units = (eu.DisplayName.Text or "") if isinstance(eu, ua.EUInformation) else ""
    bounds = (float(rng.Low), float(rng.High)) if isinstance(rng, ua.Range) and rng.Low < rng.High else None
    return units, bounds
