"""Fuzz: valid publish / consume frame sequences, mutated, against the in-process broker over a raw socket.

Whatever the bytes, the broker must answer with a precise error or not at all: never 541 INTERNAL_ERROR, never a
crash (a fresh connection works afterwards), and never a poisoned delivery (every frame a consumer receives parses
with pamqp, content headers included). A malformed property list must be refused at publish, not queued.

The seed sequence touches the paths that decode client data late: a headers exchange (x-match on the headers
table), a queue with a length limit that dead-letters its overflow (x-death is written into the headers and the
properties re-encoded), per-message expiration and user_id checks, consumer and queue arguments.

``make test`` runs ``FUZZ_EXAMPLES`` examples; set ``AMQPD_LONG_FUZZ=<seconds>`` to run the ``slow`` variant for
that long (it prints how many sequences it tried). Beyond 3 minutes, lift the suite's per-test faulthandler limit:
``AMQPD_LONG_FUZZ=600 pytest -s -o faulthandler_timeout=0 tests/test_fuzz_malformed.py -k long``.
"""

from __future__ import annotations

import datetime
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import body, commands, frame, header
from pamqp.base import Frame

from tests.support.raw_client import RawClient

pytestmark = pytest.mark.integration

EXTERNAL = bool(os.environ.get("AMQP_URL"))
FUZZ_EXAMPLES = 200
FRAME_HEADER = struct.Struct(">BHI")


def marshal(channel: int, value: Any) -> bytes:
    return frame.marshal(value, channel)


def publish(routing_key: str, properties: commands.Basic.Properties, payload: bytes, exchange: str = "") -> list[bytes]:
    return [
        marshal(1, commands.Basic.Publish(exchange=exchange, routing_key=routing_key)),
        marshal(1, header.ContentHeader(0, len(payload), properties)),
        marshal(1, body.ContentBody(payload)),
    ]


RICH_PROPERTIES = commands.Basic.Properties(
    content_type="application/json",
    content_encoding="utf-8",
    headers={
        "a": 1,
        "s": "text",
        "big": 2**40,
        "f": 2.5,
        "list": [1, "two", 3.0, {"nested": True}],
        "table": {"inner": {"deeper": "x"}},
        "ts": datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC),
        "none": None,
    },
    delivery_mode=2,
    priority=3,
    correlation_id="corr",
    reply_to="nowhere",
    expiration="60000",
    message_id="mid",
    timestamp=datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC),
    message_type="kind",
    user_id="guest",
    app_id="fuzz",
)


def seed_frames(queue: str, overflow: str) -> list[bytes]:
    """The frames the mutations start from (channel 1 is open, the queues and bindings exist)."""
    return [
        *publish(queue, RICH_PROPERTIES, b"rich body"),
        *publish(queue, commands.Basic.Properties(delivery_mode=1), b"plain"),
        *publish(overflow, commands.Basic.Properties(headers={"k": "v", "n": [1, 2]}, delivery_mode=2), b"overflowing"),
        *publish(overflow, commands.Basic.Properties(headers={"k": "w"}), b"second"),
        *publish("", commands.Basic.Properties(headers={"a": 1, "s": "text"}), b"headers", exchange="amq.headers"),
        marshal(1, commands.Basic.Consume(queue=queue, consumer_tag="extra", arguments={"x-priority": 1})),
        marshal(1, commands.Queue.Declare(queue="", exclusive=True, arguments={"x-message-ttl": 10, "x-q": {"a": 1}})),
        marshal(1, commands.Basic.Qos(prefetch_count=100)),
    ]


# --------------------------------------------------------------------------------------------- mutations

Mutation = Callable[[list[bytearray]], None]


def _flip(index: int, pos: int, xor: int) -> Mutation:
    def apply(frames: list[bytearray]) -> None:
        f = frames[index % len(frames)]
        if f:
            f[pos % len(f)] ^= xor

    return apply


def _truncate(index: int, pos: int) -> Mutation:
    def apply(frames: list[bytearray]) -> None:
        f = frames[index % len(frames)]
        if f:
            del f[pos % len(f) :]

    return apply


def _insert(index: int, pos: int, data: bytes) -> Mutation:
    def apply(frames: list[bytearray]) -> None:
        f = frames[index % len(frames)]
        f[pos % (len(f) + 1) : pos % (len(f) + 1)] = data

    return apply


def _payload_word(index: int, offset: int, fmt: str, value: int, *, keep_frame_size: bool = True) -> Mutation:
    """Overwrite a field inside a frame's payload (a property-flags word, a table length...)."""
    size = struct.calcsize(fmt)

    def apply(frames: list[bytearray]) -> None:
        f = frames[index % len(frames)]
        payload_len = len(f) - 8
        if payload_len < size:  # also a frame cut short by an earlier mutation
            return
        pos = 7 + offset % (payload_len - size + 1)
        struct.pack_into(fmt, f, pos, value)

    return apply


def _extend_payload(index: int, pos: int, data: bytes) -> Mutation:
    """Insert into a frame's payload and fix its size field, so the framing stays valid and only the content
    (a table, a property list, method arguments) is wrong."""

    def apply(frames: list[bytearray]) -> None:
        f = frames[index % len(frames)]
        payload_len = len(f) - 8
        if payload_len < 0:
            return
        at = 7 + pos % (payload_len + 1)
        f[at:at] = data
        struct.pack_into(">I", f, 3, payload_len + len(data))

    return apply


def _cut_payload(index: int, pos: int, count: int) -> Mutation:
    def apply(frames: list[bytearray]) -> None:
        f = frames[index % len(frames)]
        payload_len = len(f) - 8
        if payload_len <= 0:
            return
        at = pos % payload_len
        n = min(count, payload_len - at)
        del f[7 + at : 7 + at + n]
        struct.pack_into(">I", f, 3, payload_len - n)

    return apply


indexes = st.integers(0, 10_000)
mutations = st.one_of(
    st.builds(_flip, indexes, indexes, st.integers(1, 255)),
    st.builds(_truncate, indexes, indexes),
    st.builds(_insert, indexes, indexes, st.binary(min_size=1, max_size=6)),
    st.builds(_payload_word, indexes, indexes, st.just(">H"), st.integers(0, 0xFFFF)),  # e.g. property flags
    st.builds(_payload_word, indexes, indexes, st.just(">I"), st.integers(0, 0xFFFF)),  # e.g. a table length
    st.builds(_payload_word, indexes, indexes, st.just(">B"), st.integers(0, 255)),  # a type tag, a length
    st.builds(_extend_payload, indexes, indexes, st.binary(min_size=1, max_size=8)),
    st.builds(_cut_payload, indexes, indexes, st.integers(1, 8)),
)


# --------------------------------------------------------------------------------------------- the run


def read_all(client: RawClient) -> list[tuple[int, Any]]:
    """Every frame until the broker hangs up; each one must parse with pamqp (RawClient.read_frame unmarshals)."""
    got: list[tuple[int, Any]] = []
    while True:
        try:
            item = client.read_frame()
        except (ValueError, UnicodeDecodeError, struct.error) as exc:  # pamqp could not parse what we received
            raise AssertionError(f"a frame from the broker does not parse with pamqp: {exc!r}") from None
        if item is None:
            return got
        got.append(item)  # no Close-Ok to a Connection.Close: our side is shut, the broker hangs up on EOF


def setup(client: RawClient, tag: str) -> tuple[str, str]:
    client.open_channel(1)
    queue, overflow = queue_names(tag)
    client.send_method(1, commands.Queue.Declare(queue=queue, exclusive=True))
    client.expect(1, commands.Queue.DeclareOk)
    client.send_method(
        1,
        commands.Queue.Declare(
            queue=overflow,
            exclusive=True,
            arguments={"x-max-length": 1, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue},
        ),
    )
    client.expect(1, commands.Queue.DeclareOk)
    client.send_method(
        1, commands.Queue.Bind(queue=queue, exchange="amq.headers", arguments={"x-match": "any", "a": 1})
    )
    client.expect(1, commands.Queue.BindOk)
    client.send_method(1, commands.Basic.Consume(queue=queue, consumer_tag="c", no_ack=True))
    client.expect(1, commands.Basic.ConsumeOk)
    return queue, overflow


def queue_names(tag: str) -> tuple[str, str]:
    return f"fuzz-{tag:>8}", f"fuzz-{tag:>8}-overflow"


# Queue names differ per example but not in length; the seed holds placeholders of that length, filled in by
# run_one, so the frame sizes the mutations see are the real ones.
Q_HOLDER, O_HOLDER = (name.replace(" ", "@") for name in queue_names(""))
SEED = seed_frames(Q_HOLDER, O_HOLDER)


def run_one(url: str, mutated: bytes, counter: list[int]) -> None:
    counter[0] += 1
    with RawClient.open(url, timeout=10) as client:
        queue, overflow = setup(client, str(counter[0]))
        named = mutated.replace(O_HOLDER.encode(), overflow.encode()).replace(Q_HOLDER.encode(), queue.encode())
        client.send_frame(named)
        client.sock.shutdown(socket.SHUT_WR)  # the broker reads everything, answers, then sees EOF
        received = read_all(client)
    for _channel, value in received:
        if isinstance(value, commands.Connection.Close | commands.Channel.Close):
            assert value.reply_code != 541, f"541 for client data: {value.reply_text}"
    with RawClient.open(url, timeout=10) as fresh:  # the broker survived
        fresh.open_channel(1)
        fresh.close_connection()


def mutate(seed: list[bytes], ops: list[Mutation]) -> bytes:
    frames = [bytearray(f) for f in seed]
    for op in ops:
        op(frames)
    return b"".join(frames)


def _check(url: str, ops: list[Mutation], counter: list[int]) -> None:
    run_one(url, mutate(SEED, ops), counter)


@pytest.fixture
def fuzz_url(amqp_url: str) -> str:
    if EXTERNAL:
        pytest.skip("fuzzes the in-process amqpd (RabbitMQ answers several malformed publishes with 541)")
    return amqp_url


def test_mutated_publish_and_consume_frames_never_earn_541_nor_poison_a_consumer(fuzz_url: str) -> None:
    counter = [0]

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(ops=st.lists(mutations, min_size=1, max_size=4))
    def check(ops: list[Mutation]) -> None:
        _check(fuzz_url, ops, counter)

    check()
    assert counter[0] >= FUZZ_EXAMPLES // 2


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_mutated_frames_for_a_long_while(fuzz_url: str) -> None:
    seconds = float(os.environ.get("AMQPD_LONG_FUZZ", "0"))
    if not seconds:
        pytest.skip("set AMQPD_LONG_FUZZ=<seconds> to fuzz for that long")
    counter = [0]
    start = time.monotonic()

    # Rounds of fresh random examples until the time is up (one endless hypothesis run could not be stopped).
    @settings(max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(ops=st.lists(mutations, min_size=1, max_size=8))
    def check(ops: list[Mutation]) -> None:
        _check(fuzz_url, ops, counter)

    try:
        while time.monotonic() - start < seconds:
            check()
    finally:
        print(f"\nfuzzed {counter[0]} mutated sequences in {time.monotonic() - start:.0f} s")


def test_the_unmutated_seed_is_accepted_and_delivered(fuzz_url: str) -> None:
    """The seed itself is valid: both messages to the queue, the dead-lettered overflow and the headers-routed
    one reach the consumer, and nothing is refused."""
    with RawClient.open(fuzz_url, timeout=10) as client:
        queue, overflow = setup(client, "seed")
        client.send_frame(b"".join(seed_frames(queue, overflow)))
        client.sock.shutdown(socket.SHUT_WR)
        received = read_all(client)
    kinds: list[Frame | Any] = [value for _c, value in received]
    assert not [v for v in kinds if isinstance(v, commands.Connection.Close | commands.Channel.Close)]
    assert sum(isinstance(v, commands.Basic.Deliver) for v in kinds) == 4
