"""Raw-frame checks for the access tests: run a few methods as one user and report exactly how the broker answered.

`attempt(url, *steps)` opens a `RawClient` on the URL's vhost, opens channel 1, sends the steps in order (each but
the last must succeed) and returns the answer to the last one: the reply method's pamqp class, or the `CloseInfo`
of the Channel.Close / Connection.Close that refused it. After a channel-level refusal it proves the connection
still serves (it opens channel 2) before closing politely, so a test that expects a channel error also proves the
error stayed on the channel.

`connection_refusal(url)` runs the handshake and returns how Connection.Open (or login) was refused, if it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pamqp import commands, common, encode, heartbeat
from pamqp.base import Frame

from tests.support.raw_client import CLIENT_CAPABILITIES, EOF, PROTOCOL_HEADER, CloseInfo, RawClient


@dataclass(frozen=True)
class Publish:
    """A step that publishes one message in confirm mode; it succeeds with Basic.Ack."""

    exchange: str
    routing_key: str = "unroutable"
    properties: commands.Basic.Properties = field(default_factory=commands.Basic.Properties)


Step = Frame | Publish
Outcome = type[Frame] | CloseInfo


def channel_refusal(code: int, text: str, class_id: int, method_id: int) -> CloseInfo:
    return CloseInfo("channel", code, text, class_id, method_id, 1)


def connection_close(code: int, text: str, class_id: int, method_id: int) -> CloseInfo:
    return CloseInfo("connection", code, text, class_id, method_id, 0)


def close_info(close: commands.Channel.Close | commands.Connection.Close, channel: int) -> CloseInfo:
    """A Channel.Close or Connection.Close as the `CloseInfo` tests compare with."""
    kind = "channel" if isinstance(close, commands.Channel.Close) else "connection"
    code, text = close.reply_code or 0, close.reply_text or ""
    return CloseInfo(kind, code, text, close.class_id or 0, close.method_id or 0, channel)


def _answer(client: RawClient, step: Step) -> Frame | CloseInfo:
    """Send one step and read the broker's answer (its reply method, or how it closed)."""
    if isinstance(step, Publish):
        client.publish(1, b"body", exchange=step.exchange, routing_key=step.routing_key, properties=step.properties)
    else:
        client.send_method(1, step)
    while True:
        got = client.read_frame()
        if got is None:
            return EOF
        channel, value = got
        if isinstance(value, heartbeat.Heartbeat):
            continue
        if isinstance(value, commands.Channel.Close | commands.Connection.Close):
            return close_info(value, channel)
        if isinstance(value, Frame):
            return value


def attempt(url: str, *steps: Step) -> Outcome:
    with RawClient.open(url) as client:
        client.open_channel(1)
        if any(isinstance(s, Publish) for s in steps):
            client.send_method(1, commands.Confirm.Select())
            client.expect(1, commands.Confirm.SelectOk)
        for step in steps[:-1]:
            answer = _answer(client, step)
            assert isinstance(answer, Frame), f"setup step {step!r} was refused: {answer}"
        outcome = _answer(client, steps[-1])
        if isinstance(outcome, CloseInfo):
            if outcome.kind == "channel":
                client.send_method(1, commands.Channel.CloseOk())
                client.open_channel(2)  # the refusal closed the channel, not the connection
                client.close_connection()
            elif outcome.kind == "connection":
                client.send_method(0, commands.Connection.CloseOk())
                assert client.read_frame() is None, "the broker did not hang up after Connection.Close-Ok"
            return outcome
        client.close_connection()
        return type(outcome)


def amqplain_response(user: str, password: str) -> str:
    """AMQPLAIN's response: a field table (LOGIN, PASSWORD) without its length prefix. pamqp takes the response
    as a str and writes it UTF-8 encoded, so this only serves ASCII credentials (every byte below 0x80)."""
    table = encode.field_table({"LOGIN": user, "PASSWORD": password})[4:]
    assert max(table) < 0x80, "AMQPLAIN credentials too long or not ASCII for this helper"
    return table.decode("ascii")


def connection_refusal(
    url: str, *, mechanism: str = "PLAIN", response: str | None = None, capabilities: bool = True
) -> CloseInfo | None:
    """Handshake as the URL's user into its vhost. None when Connection.Open-Ok came (the connection is then
    closed politely); else the Connection.Close (answered with Close-Ok, and the broker must hang up after it)
    or EOF when the broker hung up without a word."""
    with RawClient(url) as client:
        client.send_frame(PROTOCOL_HEADER)
        client.expect(0, commands.Connection.Start)
        props: common.FieldTable = {"product": "amqpd access tests"}
        if capabilities:
            props["capabilities"] = CLIENT_CAPABILITIES
        client.send_method(
            0,
            commands.Connection.StartOk(
                client_properties=props,
                mechanism=mechanism,
                response=f"\0{client.user}\0{client.password}" if response is None else response,
                locale="en_US",
            ),
        )
        got = client.read_frame()
        if got is not None and isinstance(got[1], commands.Connection.Tune):
            tune = got[1]
            client.send_method(0, commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0))
            client.send_method(0, commands.Connection.Open(virtual_host=client.vhost))
            got = client.read_frame()
        if got is None:
            return EOF
        value = got[1]
        if isinstance(value, commands.Connection.OpenOk):
            client.close_connection()
            return None
        assert isinstance(value, commands.Connection.Close), f"unexpected {value!r}"
        client.send_method(0, commands.Connection.CloseOk())
        assert client.read_frame() is None, "the broker did not hang up after Connection.Close-Ok"
        return close_info(value, 0)
