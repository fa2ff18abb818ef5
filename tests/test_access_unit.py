"""broker.access without sockets: RabbitMQ's password hashes, the login decision, permission patterns, the
per-channel grants cache, topic permissions, limits, and the journal of settings the server persists."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from amqpd.broker.access.control import (
    PERMISSION,
    TOPIC_PERMISSION,
    USER,
    VHOST_LIMITS_KIND,
    VHOST_LIMITS_NAME,
    AccessControl,
)
from amqpd.broker.access.grants import CONFIGURE, EXCHANGE, QUEUE, READ, WRITE, Grants
from amqpd.broker.access.passwords import (
    MD5,
    SHA256,
    SHA512,
    PasswordHashError,
    check_password,
    decode_hash,
    hash_password,
)
from amqpd.broker.access.users import USER_LIMITS, VHOST_LIMITS, AccessConfigError, Permission, User, check_limits
from amqpd.broker.server.config import Config
from amqpd.broker.server.server import Server, parse_user_list
from amqpd.protocol.errors import ACCESS_REFUSED, ChannelError

# ------------------------------------------------------------------------------ password hashes


def test_sha256_hash_of_a_known_salt_and_password_is_rabbitmqs() -> None:
    # The vector from RabbitMQ's documentation (passwords.md, "Computing Password Hash").
    assert (
        hash_password("test12", SHA256, bytes.fromhex("908DC60A")) == "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
    )


def test_md5_hash_of_a_known_salt_and_password_is_rabbitmqs() -> None:
    assert hash_password("simon", MD5, bytes.fromhex("CAD5089B")) == "ytUIm8s3AnKsXQjptplKFytfVxI="


def test_a_hash_exported_by_rabbitmq_verifies_its_password() -> None:
    exported = "9/1i+jKFRpbTRV1PtRnzFFYibT3cEpP92JeZ8YKGtflf4e/u"  # guest, from a RabbitMQ definitions export
    assert check_password(exported, SHA256, "guest")
    assert not check_password(exported, SHA256, "Guest")
    assert not check_password(exported, SHA512, "guest")  # the algorithm is part of the hash


@pytest.mark.parametrize("algorithm", [SHA256, SHA512, MD5])
def test_every_algorithm_round_trips_with_a_fresh_four_byte_salt(algorithm: str) -> None:
    first, second = hash_password("pässwört", algorithm), hash_password("pässwört", algorithm)
    assert first != second  # a random salt each time
    digest_size = {SHA256: 32, SHA512: 64, MD5: 16}[algorithm]
    assert len(decode_hash(first)) == 4 + digest_size
    assert check_password(first, algorithm, "pässwört")
    assert check_password(second, algorithm, "pässwört")
    assert not check_password(first, algorithm, "passwort")


@pytest.mark.parametrize("bad", ["not base64!", "abc", "ünïcode"])
def test_a_hash_that_is_not_base64_is_refused(bad: str) -> None:
    with pytest.raises(PasswordHashError, match="not valid base64"):
        decode_hash(bad)
    with pytest.raises(PasswordHashError):
        User("u", bad)
    assert not check_password(bad, SHA256, "anything")


def test_an_unknown_hashing_algorithm_is_refused_with_the_known_ones() -> None:
    with pytest.raises(PasswordHashError, match=r"unknown password hashing algorithm 'rot13'.*sha256"):
        hash_password("x", "rot13")
    with pytest.raises(PasswordHashError):
        AccessControl().add_user("u", "x", hashing_algorithm="rot13")


def test_a_hash_too_short_to_hold_salt_and_digest_verifies_nothing() -> None:
    assert not check_password("AAAA", SHA256, "")  # 3 bytes
    assert not check_password("AAAAAA==", SHA256, "")  # exactly a salt


# ------------------------------------------------------------------------------ login


def access_with(*users: tuple[str, str | None], loopback: tuple[str, ...] = ("guest",)) -> AccessControl:
    access = AccessControl(loopback)
    for name, password in users:
        access.add_user(name, password)
    return access


def test_a_user_without_password_cannot_log_in_with_plain() -> None:
    access = access_with(("cert-user", None))
    assert access.users["cert-user"].password_hash == ""
    for attempt in ("", "x", "cert-user"):
        assert access.login("PLAIN", "cert-user", attempt, from_loopback=True) is None


def test_a_user_without_password_logs_in_with_external() -> None:
    access = access_with(("cert-user", None))
    user = access.login("EXTERNAL", "cert-user", None, from_loopback=False)
    assert user is not None and user.name == "cert-user"


def test_external_still_needs_the_user_to_exist() -> None:
    assert access_with().login("EXTERNAL", "nobody", None, from_loopback=True) is None


def test_loopback_users_log_in_only_from_this_host() -> None:
    access = access_with(("guest", "guest"), ("alice", "pw"), loopback=("guest",))
    assert access.login("PLAIN", "guest", "guest", from_loopback=True) is not None
    assert access.login("PLAIN", "guest", "guest", from_loopback=False) is None
    assert access.login("PLAIN", "alice", "pw", from_loopback=False) is not None


def test_an_empty_loopback_list_lets_guest_in_from_anywhere() -> None:
    access = access_with(("guest", "guest"), loopback=())
    assert access.login("PLAIN", "guest", "guest", from_loopback=False) is not None


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("guest", {"guest"}),
        ("guest,admin", {"guest", "admin"}),
        (" guest  admin ", {"guest", "admin"}),
        ("", set()),
        ("none", set()),
        ("guest,,", {"guest"}),
    ],
)
def test_loopback_users_setting_parses_names_and_none(text: str, names: set[str]) -> None:
    assert parse_user_list(text) == frozenset(names)


def test_the_server_applies_the_loopback_users_setting() -> None:
    assert Server(Config(loopback_users="none")).login("PLAIN", "guest", "guest", from_loopback=False) is not None
    assert Server(Config()).login("PLAIN", "guest", "guest", from_loopback=False) is None


def test_login_logs_never_contain_the_password(caplog: pytest.LogCaptureFixture) -> None:
    secret = "Sup3r-S3cret-Pa55"
    access = access_with(("guest", secret), ("alice", secret))
    caplog.set_level(logging.DEBUG)
    assert access.login("PLAIN", "alice", secret + "x", from_loopback=True) is None  # wrong password
    assert access.login("PLAIN", "guest", secret, from_loopback=False) is None  # right one, wrong host
    assert access.login("PLAIN", "nobody", secret, from_loopback=True) is None
    assert access.login("PLAIN", "alice", secret, from_loopback=True) is not None
    text = caplog.text
    assert "invalid credentials" in text and "can only connect via localhost" in text
    assert "alice" in text and "nobody" in text
    assert secret not in text


# ------------------------------------------------------------------------------ permission patterns


def test_an_empty_permission_matches_only_the_empty_name() -> None:
    configure, write, read = Permission.of("", "", ".*").patterns
    for pattern in (configure, write):
        assert pattern.pattern == "^$"
        assert pattern.search("") is not None
        assert pattern.search("q") is None
    assert read.search("anything") is not None


def test_a_permission_is_an_unanchored_search() -> None:
    pattern = Permission.of("foo", "", "").patterns[CONFIGURE]
    assert pattern.search("foo") is not None
    assert pattern.search("xfooy") is not None
    assert pattern.search("fo") is None
    anchored = Permission.of("^foo$", "", "").patterns[CONFIGURE]
    assert anchored.search("xfooy") is None


@pytest.mark.parametrize("which", ["configure", "write", "read"])
def test_a_bad_regular_expression_is_refused_with_a_clear_error(which: str) -> None:
    access = access_with(("u", "pw"))
    patterns = {"configure": ".*", "write": ".*", "read": ".*", which: "(unclosed"}
    with pytest.raises(AccessConfigError, match=rf"invalid regular expression '\(unclosed' for {which} permission"):
        access.set_permissions("u", "/", patterns["configure"], patterns["write"], patterns["read"])
    assert ("u", "/") not in access.permissions


def test_a_bad_topic_permission_regex_is_refused() -> None:
    access = access_with(("u", "pw"))
    with pytest.raises(AccessConfigError, match="invalid regular expression '\\[' for topic write permission"):
        access.set_topic_permissions("u", "/", "amq.topic", "[", ".*")
    assert not access.topic_permissions


def test_permissions_need_an_existing_user() -> None:
    with pytest.raises(AccessConfigError, match="no such user 'ghost'"):
        AccessControl().set_permissions("ghost", "/", ".*", ".*", ".*")


# ------------------------------------------------------------------------------ grants (the per-channel cache)


def grants_for(access: AccessControl, user: str = "u", vhost: str = "/") -> Grants:
    return Grants(access, access.users[user], vhost)


def refusal(action: Any, *args: Any) -> str:
    with pytest.raises(ChannelError) as info:
        action(*args)
    assert info.value.code == ACCESS_REFUSED
    return str(info.value.detail)


def test_a_revoked_write_takes_effect_on_the_next_publish_check() -> None:
    access = access_with(("u", "pw"))
    access.set_permissions("u", "/", ".*", ".*", ".*")
    grants = grants_for(access)
    grants.write_exchange("orders")
    grants.write_exchange("orders")  # answered from the cache
    access.set_permissions("u", "/", ".*", "^other$", ".*")
    detail = refusal(grants.write_exchange, "orders")
    assert detail == "access to exchange 'orders' in vhost '/' refused for user 'u'"
    grants.write_exchange("other")


def test_cleared_permissions_refuse_everything_at_once() -> None:
    access = access_with(("u", "pw"))
    access.set_permissions("u", "/", ".*", ".*", ".*")
    grants = grants_for(access)
    grants.check(QUEUE, "q", READ)
    access.clear_permissions("u", "/")
    refusal(grants.check, QUEUE, "q", READ)


def test_a_granted_permission_takes_effect_without_a_new_channel() -> None:
    access = access_with(("u", "pw"))
    access.set_permissions("u", "/", "", "", "")
    grants = grants_for(access)
    refusal(grants.check, QUEUE, "jobs", CONFIGURE)
    access.set_permissions("u", "/", "^jobs$", "", "")
    grants.check(QUEUE, "jobs", CONFIGURE)


def test_deleting_the_user_revokes_its_open_grants() -> None:
    access = access_with(("u", "pw"))
    access.set_permissions("u", "/", ".*", ".*", ".*")
    grants = grants_for(access)
    grants.write_exchange("x")
    access.delete_user("u")
    refusal(grants.write_exchange, "x")


def test_the_default_exchange_is_checked_as_amq_default() -> None:
    access = access_with(("u", "pw"), ("v", "pw"))
    access.set_permissions("u", "/", "", "^amq\\.default$", "")
    access.set_permissions("v", "/", "", "^$", "")  # "" would match an empty name if it were checked as such
    grants_for(access, "u").write_exchange("")
    detail = refusal(grants_for(access, "v").write_exchange, "")
    assert detail == "access to exchange 'amq.default' in vhost '/' refused for user 'v'"


def test_permissions_are_per_vhost_and_per_kind_of_check() -> None:
    access = access_with(("u", "pw"))
    access.set_permissions("u", "a", "^c", "^w", "^r")
    grants = grants_for(access, vhost="a")
    grants.check(EXCHANGE, "cx", CONFIGURE)
    grants.check(QUEUE, "wq", WRITE)
    grants.check(QUEUE, "rq", READ)
    assert refusal(grants.check, EXCHANGE, "wq", READ).startswith("access to exchange 'wq' in vhost 'a'")
    detail = refusal(grants.check, QUEUE, "cq", READ)
    assert detail == "access to queue 'cq' in vhost 'a' refused for user 'u'"
    refusal(grants_for(access, vhost="b").check, QUEUE, "rq", READ)


def test_topic_permissions_expand_username_and_vhost() -> None:
    access = access_with(("alice", "pw"))
    access.set_permissions("alice", "prod", ".*", ".*", ".*")
    access.set_topic_permissions("alice", "prod", "amq.topic", "^{username}\\.", "^{vhost}\\.{username}$")
    grants = grants_for(access, "alice", "prod")
    assert grants.has_topic_permissions
    grants.check_topic("amq.topic", "alice.orders", WRITE)
    grants.check_topic("amq.topic", "prod.alice", READ)
    detail = refusal(grants.check_topic, "amq.topic", "bob.orders", WRITE)
    assert detail == "access to topic 'bob.orders' in exchange 'amq.topic' in vhost 'prod' refused for user 'alice'"
    refusal(grants.check_topic, "amq.topic", "alice.orders", READ)


def test_no_topic_permission_for_an_exchange_means_allowed() -> None:
    access = access_with(("u", "pw"))
    access.set_permissions("u", "/", ".*", ".*", ".*")
    grants = grants_for(access)
    assert not grants.has_topic_permissions
    grants.check_topic("amq.topic", "any.key", WRITE)
    access.set_topic_permissions("u", "/", "amq.topic", "^a$", "^a$")
    grants.check_topic("other.topic", "any.key", WRITE)  # another exchange: no rule, allowed
    refusal(grants.check_topic, "amq.topic", "any.key", WRITE)
    access.clear_topic_permissions("u", "/", "amq.topic")
    assert not grants.has_topic_permissions
    grants.check_topic("amq.topic", "any.key", WRITE)


def test_a_changed_topic_permission_applies_to_cached_routing_keys() -> None:
    access = access_with(("u", "pw"))
    access.set_topic_permissions("u", "/", "t", "^a", "^a")
    grants = grants_for(access)
    grants.check_topic("t", "a.1", WRITE)
    access.set_topic_permissions("u", "/", "t", "^b", "^a")
    refusal(grants.check_topic, "t", "a.1", WRITE)


def test_the_grants_cache_stays_bounded() -> None:
    access = access_with(("u", "pw"))
    access.set_permissions("u", "/", ".*", ".*", ".*")
    grants = grants_for(access)
    for i in range(2000):
        grants.write_exchange(f"x{i}")
    assert grants.has_topic_permissions is False
    assert max(len(ok) for ok in grants._ok) <= 256


# ------------------------------------------------------------------------------ limits


@pytest.mark.parametrize(
    ("limits", "known", "message"),
    [
        ({"max-queues": 1}, USER_LIMITS, "unknown user limit 'max-queues'"),
        ({"max-channels": 1}, VHOST_LIMITS, "unknown vhost limit 'max-channels'"),
        ({"max_connections": 1}, VHOST_LIMITS, "unknown vhost limit 'max_connections'"),
        ({"max-connections": "ten"}, VHOST_LIMITS, "vhost limit 'max-connections' must be an integer"),
        ({"max-connections": 1.5}, VHOST_LIMITS, "must be an integer, not 1.5"),
        ({"max-connections": True}, VHOST_LIMITS, "must be an integer, not True"),
        ({"max-connections": None}, VHOST_LIMITS, "must be an integer, not None"),
        ({"max-connections": [1]}, VHOST_LIMITS, "must be an integer"),
        ([("max-connections", 1)], VHOST_LIMITS, "must be an object"),
    ],
)
def test_bad_limits_are_refused_naming_the_limit(limits: object, known: tuple[str, ...], message: str) -> None:
    what = "user" if known == USER_LIMITS else "vhost"
    with pytest.raises(AccessConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        check_limits(limits, known, what)


def test_valid_limits_are_integers() -> None:
    assert check_limits({"max-connections": 5, "max-queues": -1}, VHOST_LIMITS, "vhost") == {
        "max-connections": 5,
        "max-queues": -1,
    }
    assert check_limits({"max-channels": 2.0}, USER_LIMITS, "user") == {"max-channels": 2}


def test_a_negative_limit_means_no_limit() -> None:
    access = AccessControl()
    access.set_vhost_limits("/", {"max-connections": -1, "max-queues": 0})
    assert access.vhost_limit("/", "max-connections") is None
    assert access.vhost_limit("/", "max-queues") == 0
    assert access.vhost_limit("other", "max-queues") is None
    assert User("u", limits={"max-channels": -1}).limit("max-channels") is None


def test_setting_vhost_limits_replaces_the_whole_set() -> None:
    access = AccessControl()
    access.set_vhost_limits("/", {"max-connections": 3, "max-queues": 4})
    access.set_vhost_limits("/", {"max-queues": 5})
    assert access.vhost_limits["/"] == {"max-queues": 5}
    access.set_vhost_limits("/", {})
    assert "/" not in access.vhost_limits


def test_user_limits_merge_validate_and_clear() -> None:
    access = access_with(("u", "pw"))
    access.set_user_limits("u", {"max-connections": 2})
    access.set_user_limits("u", {"max-channels": 3})
    assert access.users["u"].limits == {"max-connections": 2, "max-channels": 3}
    with pytest.raises(AccessConfigError, match="unknown user limit 'max-queues'"):
        access.set_user_limits("u", {"max-queues": 1})
    assert access.users["u"].limits == {"max-connections": 2, "max-channels": 3}
    access.clear_user_limit("u", "max-channels")
    assert access.users["u"].limits == {"max-connections": 2}
    access.clear_user_limit("u", "all")
    assert access.users["u"].limits == {}


def test_replacing_a_user_keeps_its_limits_unless_given() -> None:
    access = access_with(("u", "pw"))
    access.set_user_limits("u", {"max-connections": 2})
    access.add_user("u", "new", tags="administrator")
    assert access.users["u"].limits == {"max-connections": 2}
    access.add_user("u", "new", limits={})
    assert access.users["u"].limits == {}


# ------------------------------------------------------------------------------ tags


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["administrator", "monitoring"], ("administrator", "monitoring")),
        ("administrator, monitoring", ("administrator", "monitoring")),
        ("", ()),
        (None, ()),
        (["a", "a", " b "], ("a", "b")),
    ],
)
def test_tags_are_a_list_or_a_comma_separated_string(tags: object, expected: tuple[str, ...]) -> None:
    assert AccessControl().add_user("u", "pw", tags=tags).tags == expected


def test_tags_of_another_type_are_refused() -> None:
    with pytest.raises(AccessConfigError, match="tags must be a list or a comma-separated string"):
        AccessControl().add_user("u", "pw", tags=7)


# ------------------------------------------------------------------------------ the journal and restore


class RecordingJournal:
    def __init__(self) -> None:
        self.settings: dict[tuple[str, str, str], dict[str, Any]] = {}

    def put(self, vhost: str, kind: str, name: str, value: dict[str, Any]) -> None:
        self.settings[(vhost, kind, name)] = value

    def delete(self, vhost: str, kind: str, name: str) -> None:
        self.settings.pop((vhost, kind, name), None)


def test_every_change_is_journaled_and_restores_to_the_same_state() -> None:
    journal = RecordingJournal()
    access = AccessControl(journal=journal)
    access.add_user("alice", "pw", tags=["administrator"], limits={"max-channels": 4})
    access.add_user("bob", "pw2")
    access.set_permissions("alice", "/", "^a", "^b", "^c")
    access.set_permissions("bob", "v", ".*", "", ".*")
    access.set_topic_permissions("alice", "/", "amq.topic", "^{username}", ".*")
    access.set_topic_permissions("alice", "/", "t2", "x", "y")
    access.set_vhost_limits("v", {"max-queues": 3})
    assert set(journal.settings) == {
        ("", USER, "alice"),
        ("", USER, "bob"),
        ("/", PERMISSION, "alice"),
        ("v", PERMISSION, "bob"),
        ("/", TOPIC_PERMISSION, "alice"),
        ("v", VHOST_LIMITS_KIND, VHOST_LIMITS_NAME),
    }

    restored = AccessControl()
    for (vhost, kind, name), value in journal.settings.items():
        restored.restore(vhost, kind, name, value)
    assert restored.users == access.users
    assert restored.permissions == access.permissions
    assert restored.topic_permissions == access.topic_permissions
    assert restored.vhost_limits == access.vhost_limits
    assert restored.login("PLAIN", "alice", "pw", from_loopback=False) is not None


def test_deleting_a_user_deletes_its_stored_permissions() -> None:
    journal = RecordingJournal()
    access = AccessControl(journal=journal)
    access.add_user("u", "pw")
    access.set_permissions("u", "/", ".*", ".*", ".*")
    access.set_permissions("u", "v", ".*", ".*", ".*")
    access.set_topic_permissions("u", "/", "amq.topic", ".*", ".*")
    assert access.delete_user("u")
    assert journal.settings == {}
    assert not access.permissions and not access.topic_permissions
    assert not access.delete_user("u")


def test_clearing_the_last_topic_permission_deletes_the_stored_setting() -> None:
    journal = RecordingJournal()
    access = AccessControl(journal=journal)
    access.add_user("u", "pw")
    access.set_topic_permissions("u", "/", "a", ".*", ".*")
    access.set_topic_permissions("u", "/", "b", ".*", ".*")
    access.clear_topic_permissions("u", "/", "a")
    assert journal.settings[("/", TOPIC_PERMISSION, "u")] == {"b": {"write": ".*", "read": ".*"}}
    access.clear_topic_permissions("u", "/")
    assert ("/", TOPIC_PERMISSION, "u") not in journal.settings
    assert not access.clear_topic_permissions("u", "/")


def test_restore_ignores_settings_of_other_kinds() -> None:
    access = AccessControl()
    generation = access.generation
    access.restore("/", "policy", "p", {"pattern": ".*"})
    assert access.generation == generation
    assert not access.users and not access.permissions


def test_forgetting_a_vhost_drops_its_permissions_and_limits_only() -> None:
    access = access_with(("u", "pw"))
    access.set_permissions("u", "gone", ".*", ".*", ".*")
    access.set_permissions("u", "kept", ".*", ".*", ".*")
    access.set_topic_permissions("u", "gone", "amq.topic", ".*", ".*")
    access.set_vhost_limits("gone", {"max-queues": 1})
    access.forget_vhost("gone")
    assert set(access.permissions) == {("u", "kept")}
    assert not access.topic_permissions and not access.vhost_limits
    assert "u" in access.users
