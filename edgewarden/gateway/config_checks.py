"""The configuration's cross-references, checked after the schema: every tag a section
names exists (and is writable where it is written), a tag's source fits its connection's
protocol, no two tags read one source, tag names are ASCII identifiers unique regardless
of case, interlocks, fallback and applied tags refer to
actions, and the time budget (``comms_timeout_ms`` plus one cycle) can hold. Each problem
is one line naming its key path; edgewarden/gateway/config.py reports them all at once.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from edgewarden.gateway.io.protocols import PROTOCOLS

if TYPE_CHECKING:
    from edgewarden.gateway.config import Settings, TagSpec


def source_problems(name: str, tag: TagSpec, conn: Any) -> list[str]:
    """A tag's source fields must fit its connection's type (the protocol's own rules)."""
    return PROTOCOLS[conn.type].source_problems(name, tag)


def cross_problems(s: Settings) -> list[str]:
    """References between sections. Each problem names its key path."""
    out: list[str] = []
    tags = s.tags
    for name, tag in tags.items():
        if tag.connection not in s.connections:
            out.append(f"tags.{name}.connection: no connection named {tag.connection!r} "
                       f"(known: {sorted(s.connections)})")
            continue
        out.extend(source_problems(name, tag, s.connections[tag.connection]))

    def need_tag(path: str, name: str, *, writable: bool = False) -> TagSpec | None:
        tag = tags.get(name)
        if tag is None:
            out.append(f"{path}: no tag named {name!r} in [tags]")
        elif writable and not tag.writable:
            out.append(f"{path}: tag {name!r} must be writable (set tags.{name}.writable = true)")
        return tag

    for i, name in enumerate(s.policy.observations):
        need_tag(f"policy.observations[{i}]", name)
    for i, name in enumerate(s.policy.actions):
        need_tag(f"policy.actions[{i}]", name, writable=True)
        if name not in s.safety.actions:
            out.append(f"policy.actions[{i}]: action {name!r} has no [safety.actions.{name}] "
                       "(bounds, rate and safe value are required for every action)")
    if len(set(s.policy.observations)) != len(s.policy.observations):
        out.append("policy.observations: a tag is listed twice")
    if len(set(s.policy.actions)) != len(s.policy.actions):
        out.append("policy.actions: a tag is listed twice")
    hb = need_tag("safety.heartbeat_tag", s.safety.heartbeat_tag, writable=True)
    if hb is not None and hb.datatype in ("double", "float", "bool"):
        out.append(f"safety.heartbeat_tag: tag {s.safety.heartbeat_tag!r} must have an integer datatype "
                   f"(got {hb.datatype!r})")
    if s.safety.estop_input is not None:
        need_tag("safety.estop_input", s.safety.estop_input)
    for key in ("hand_auto_tag", "plc_remote_tag", "plc_watchdog_tag"):
        if getattr(s.safety, key) is not None:
            need_tag(f"safety.{key}", getattr(s.safety, key))
    out.extend(_alias_problems(s))
    out.extend(_name_problems(s))
    out.extend(_safety_problems(s, need_tag))
    out.extend(_budget_problems(s))
    for name in s.safety.limits:
        need_tag(f"safety.limits.{name}", name)
    for name, act in s.safety.actions.items():
        tag = need_tag(f"safety.actions.{name}", name, writable=True)
        if tag is not None and tag.range is not None:
            lo, hi = tag.range
            if act.min < lo or act.max > hi:
                out.append(f"safety.actions.{name}: bounds [{act.min}, {act.max}] exceed the tag's "
                           f"valid range [{lo}, {hi}]")
        if name not in s.policy.actions:
            out.append(f"safety.actions.{name}: not one of policy.actions {s.policy.actions}")
    return out


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _name_problems(s: Settings) -> list[str]:
    """Tag names are ASCII identifiers, unique regardless of case: ``T`` and ``t``, an NFC
    and an NFD ``Å``, a Latin ``T`` and a Cyrillic ``Т`` would be two tags an operator
    reads as one (and an environment variable, whose name ignores case, could land on
    either). A server's own name belongs in the tag's description."""
    out: list[str] = []
    seen: dict[str, str] = {}
    for name in s.tags:
        if not _NAME.fullmatch(name):
            out.append(f"tags.{name}: a tag name is ASCII letters, digits and _, not starting with a digit "
                       f"(got {name!r}; keep the plant's own name in description)")
            continue
        other = seen.setdefault(name.lower(), name)
        if other != name:
            out.append(f"tags.{name}: differs from tags.{other} only in case: give each tag a name of its own")
    return out


def _alias_problems(s: Settings) -> list[str]:
    """Two tags on one source (the same OPC UA node, overlapping Modbus registers or the
    same coil): two names for one value, so a limit on one and a write to the other
    would not see each other."""
    out: list[str] = []
    owner: dict[tuple[Any, ...], str] = {}
    for name, tag in s.tags.items():
        conn = s.connections.get(tag.connection)
        if conn is None:
            continue  # named by _cross_problems
        protocol = PROTOCOLS[conn.type]
        for key in protocol.source_keys(tag):
            other = owner.setdefault((tag.connection, *key), name)
            if other != name:
                out.append(f"tags.{name}: reads the same source as tags.{other} ({protocol.describe_key(tag, key)} "
                           f"on connection {tag.connection!r}): give each value one tag")
                break
    return out


def _safety_problems(s: Settings, need_tag: Any) -> list[str]:
    """Interlocks, fallback and applied-output references."""
    from edgewarden.gateway.safety.expr import parse_condition, parse_restriction

    out: list[str] = []
    actions = s.safety.actions
    for name, act in actions.items():
        if act.applied is not None:
            need_tag(f"safety.actions.{name}.applied", act.applied)
    for name, il in s.safety.interlocks.items():
        for clause in parse_condition(il.when):
            need_tag(f"safety.interlocks.{name}.when", clause.tag)
        r = parse_restriction(il.then)
        act = actions.get(r.tag)
        if act is None:
            out.append(f"safety.interlocks.{name}.then: {r.tag!r} is not an action in [safety.actions]")
            continue
        # The safe state must be allowed by every interlock, or the e-stop itself would break one.
        if (r.op == "<=" and act.safe > r.value) or (r.op == ">=" and act.safe < r.value):
            out.append(f"safety.interlocks.{name}.then: the safe value {act.safe} of {r.tag!r} "
                       f"violates {il.then!r}")
        if not act.min <= r.value <= act.max:
            out.append(f"safety.interlocks.{name}.then: {r.value} lies outside {r.tag!r}'s "
                       f"[min, max] = [{act.min}, {act.max}]")
    observed = set(s.policy.observations)
    for name, pid in s.policy.pid.items():
        if name not in s.policy.actions:
            out.append(f"policy.pid.{name}: not one of policy.actions {s.policy.actions}")
        for key, tag in (("pv", pid.pv), ("setpoint", pid.setpoint)):
            if isinstance(tag, str) and tag not in observed:
                out.append(f"policy.pid.{name}.{key}: {tag!r} is not one of policy.observations: the loop "
                           "reads the policy's input (add it there)")
    if s.policy.kind == "monitor" and s.gateway.auto_start:
        out.append('gateway.auto_start: kind = "monitor" writes nothing and never starts: set it false')
    fb = s.safety.fallback
    for name, pid in fb.pid.items():
        if name not in actions:
            out.append(f"safety.fallback.pid.{name}: not an action in [safety.actions]")
        need_tag(f"safety.fallback.pid.{name}.pv", pid.pv)
        if isinstance(pid.setpoint, str):
            need_tag(f"safety.fallback.pid.{name}.setpoint", pid.setpoint)
    for name in fb.agreement_tolerance:
        if name not in actions:
            out.append(f"safety.fallback.agreement_tolerance.{name}: not an action in [safety.actions]")
    for name, band in s.safety.authority.band.items():
        if name not in s.policy.actions:
            out.append(f"safety.authority.band.{name}: not one of policy.actions {s.policy.actions}")
        elif band <= 0:
            out.append(f"safety.authority.band.{name}: {band:g} must be more than 0 (engineering units around "
                       "the incumbent's proposal)")
    return out


def _budget_problems(s: Settings) -> list[str]:
    """Settings with which the time budget (comms_timeout_ms + one cycle) cannot hold, or
    with which a healthy plant would be called stale."""
    out: list[str] = []
    gw = s.gateway
    period_ms = 1000.0 / gw.cycle_hz
    if gw.comms_timeout_ms < 2 * period_ms:
        out.append(f"gateway.comms_timeout_ms: {gw.comms_timeout_ms:g} ms is less than two cycles "
                   f"({2 * period_ms:g} ms at cycle_hz = {gw.cycle_hz:g}): one late answer would trip")
    age = gw.data_age_limit_ms
    if gw.max_data_age_ms is not None and not period_ms < age <= gw.comms_timeout_ms:
        out.append(f"gateway.max_data_age_ms: {age:g} ms must exceed one cycle ({period_ms:g} ms) and not "
                   f"exceed comms_timeout_ms ({gw.comms_timeout_ms:g} ms)")
    for name, tag in s.tags.items():
        if tag.stale_ms is not None and tag.stale_ms <= period_ms:
            out.append(f"tags.{name}.stale_ms: {tag.stale_ms:g} ms is not more than one cycle ({period_ms:g} ms): "
                       "every sample would be stale before the next read")
        if tag.freeze_s is not None and tag.freeze_s * 1000.0 <= period_ms:
            out.append(f"tags.{name}.freeze_s: {tag.freeze_s:g} s is not more than one cycle ({period_ms:g} ms)")
    for name, conn in s.connections.items():
        out.extend(conn.timing_problems(name, period_ms, age))
    return out


def warnings(s: Settings) -> list[str]:
    """What is allowed but not advised (insecure links, certificates near or past their
    expiry): ``config check`` prints each, the daemon logs each at start-up."""
    from edgewarden.gateway.certs.files import expiry_warnings

    return [w for name, conn in s.connections.items() for w in conn.warnings(name)] + expiry_warnings(s)
