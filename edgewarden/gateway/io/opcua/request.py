"""The cycle's Read request of one link, with a fast path where asyncua allows it.

asyncua's public ``read_attributes`` builds a ReadValueId per node and encodes the whole
request on every call, in pure Python; the body of a cycle's Read never changes, so the
fast path encodes it once and only the request header per cycle, then sends the message
through the session's own protocol object exactly as asyncua does (request handle and
id, security token, chunking, signing/encryption) and checks the answer as
``read_attributes`` does. That leans on asyncua internals, so it runs only on the asyncua
versions it was written and tested against (``FAST_PATH_VERSIONS``); on any other the
public ``read_attributes`` is used, and the answer is the same (tested equal on a real
server: tests/unit/io/test_io_fill.py). The cost of each is in docs/performance.md.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from asyncua import Client, ua
from asyncua.client.ua_client import UASocketProtocol
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import nodeid_to_binary, struct_from_binary, struct_to_binary

from edgewarden.gateway.errors import ProtocolError

FAST_PATH_VERSIONS = ("2.1",)  # major.minor of asyncua the fast path was checked against


def fast_path_supported(asyncua_version: str | None = None) -> bool:
    v = asyncua_version if asyncua_version is not None else version("asyncua")
    return ".".join(v.split(".")[:2]) in FAST_PATH_VERSIONS


class ReadRequest:
    """One link's cycle Read of ``node_ids`` (Value attribute); ``fast`` None: by version."""

    def __init__(self, node_ids: list[ua.NodeId], fast: bool | None = None) -> None:
        self.node_ids = node_ids
        self.fast = fast_path_supported() if fast is None else fast
        params = ua.ReadParameters()
        params.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=ua.AttributeIds.Value) for n in node_ids]
        self._type_id = nodeid_to_binary(ua.ReadRequest().TypeId)
        self._body = struct_to_binary(params)
        self.header = ua.RequestHeader()

    def encode(self, timeout_s: float, proto: UASocketProtocol) -> bytes:
        """The request as asyncua would encode it: a fresh header, the body encoded once."""
        hdr = self.header
        proto._setup_request_header(hdr, timeout_s)  # noqa: SLF001 (asyncua's own handle/token bookkeeping)
        hdr.Timestamp = datetime.now(UTC)
        return self._type_id + struct_to_binary(hdr) + self._body

    async def read(self, client: Client, timeout_s: float) -> list[ua.DataValue]:
        if not self.fast:
            try:
                return await client.uaclient.read_attributes(self.node_ids, ua.AttributeIds.Value)
            except (ua.UaError, OSError, TimeoutError, ConnectionError):
                raise  # comms (and a Bad service result): the transport handles them
            except Exception as exc:  # noqa: BLE001 - asyncua could not decode the peer's ReadResponse
                raise ProtocolError(f"protocol fault: a ReadResponse that does not decode "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        proto = client.uaclient.protocol
        if proto is None or proto.transport is None:
            raise ConnectionError("Connection is not open")
        if proto.pre_request_hook is not None:  # surfaces a failed keep-alive, as send_request does
            await proto.pre_request_hook()
        binreq = self.encode(timeout_s, proto)
        request_id = proto._request_id + 1  # noqa: SLF001
        proto.revolve_security_token()
        msg = proto._connection.message_to_binary(  # noqa: SLF001
            binreq, message_type=ua.MessageType.SecureMessage, request_id=request_id)
        proto._request_id = request_id  # noqa: SLF001
        future: asyncio.Future[Buffer] = asyncio.get_running_loop().create_future()
        proto._callbackmap[request_id] = future  # noqa: SLF001
        proto.transport.write(msg)
        data = await future
        proto.check_answer(data, " in response to ReadRequest")
        response = decode_response(ua.ReadResponse, data)
        response.ResponseHeader.ServiceResult.check()
        return response.Results  # type: ignore[no-any-return]


def decode_response(kind: type, data: Buffer) -> Any:
    """A response body from the peer's bytes; bytes that do not decode as ``kind`` (whatever
    the decoder raises on them: struct.error, an unknown enum value, bad UTF-8 ...) are a
    ProtocolError of the link, not an exception of the cycle."""
    try:
        return struct_from_binary(kind, data)
    except Exception as exc:  # noqa: BLE001 - decoding untrusted bytes: any failure is the reply's
        raise ProtocolError(f"protocol fault: a {kind.__name__} that does not decode "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
