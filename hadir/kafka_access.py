"""Who may do what on Kafka, and how each client logs in.

Every client authenticates with SASL/SCRAM-SHA-512 as one principal per role, and the broker's
StandardAuthorizer denies whatever no ACL allows (anonymous clients get nothing). ``hadir infra
up`` creates the principals' credentials and the ACLs below; docs/operations.md has the table.
A locally managed stack generates each principal's password into ``<home>/secrets`` (0600); a
stack run elsewhere gives each process the one principal it runs as (HADIR_INFRA_KAFKA_USER
and HADIR_INFRA_KAFKA_PASSWORD).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from hadir import topics
from hadir.config import ConfigError, InfraSettings
from hadir.secrets import local_secret

Principal = Literal["admin", "gateway", "intake", "core", "sink", "reviewer", "compliance"]
MECHANISM = "SCRAM-SHA-512"
INTAKE_APP = "hadir-intake"
SINK_GROUP = "hadir-clickhouse-sink"


@dataclass(frozen=True)
class Grants:
    """A principal's ACLs: topics it reads and writes, consumer groups it uses, and name
    prefixes under which it owns topics and groups outright (a faust app's changelogs)."""

    reads: tuple[topics.Topic, ...] = ()
    writes: tuple[topics.Topic, ...] = ()
    groups: tuple[str, ...] = ()
    owns_prefix: tuple[str, ...] = field(default=())


# The admin (`hadir infra up`, reference data, enrolment, the CLI's operator commands) is the
# broker's super user and needs no ACL. Every other principal gets exactly this.
GRANTS: dict[str, Grants] = {
    # the phone edge: check-ins, appeals and requests in; its keys, codes and accepted ids
    "gateway": Grants(
        reads=(topics.DEVICES, topics.ACTIVATIONS, topics.ACCEPTED, topics.APPEALS,
               topics.EXCUSE_REQUESTS),
        writes=(topics.RAW, topics.DEVICES, topics.ACTIVATIONS, topics.ACCEPTED,
                topics.APPEALS, topics.EXCUSE_REQUESTS)),
    # the face stage
    "intake": Grants(
        reads=(topics.RAW, topics.FACES, topics.SELFIES),
        writes=(topics.FACED, topics.SELFIES, topics.DLQ, topics.VERDICTS, topics.ALERTS),
        groups=(INTAKE_APP,), owns_prefix=(f"{INTAKE_APP}-",)),
    # the person and device stages, with their tables' changelogs
    "core": Grants(
        reads=(topics.FACED, topics.BY_DEVICE, topics.EMPLOYEES, topics.OFFICES,
               topics.EXCUSES),
        writes=(topics.BY_DEVICE, topics.DLQ, topics.VERDICTS, topics.ALERTS),
        groups=(topics.CORE_APP,), owns_prefix=(f"{topics.CORE_APP}-",)),
    # into ClickHouse: every event and reference topic but the selfies' (raw) and the
    # internal ones
    "sink": Grants(
        reads=(topics.VERDICTS, topics.ALERTS, topics.DLQ, topics.EMPLOYEES, topics.OFFICES,
               topics.EXCUSES, topics.DECISIONS, topics.APPEALS, topics.EXCUSE_REQUESTS,
               topics.MONTHS, topics.ACCESS_LOG),
        writes=(topics.DLQ,), groups=(SINK_GROUP,)),
    # reviewers, heads of office and the dashboard: decisions and approvals out, alerts and
    # requests in; a selfie from the raw topic only for a signed-in reviewer (the dashboard
    # logs each view to the access log first)
    "reviewer": Grants(
        reads=(topics.ALERTS, topics.RAW, topics.USERS, topics.EXCUSE_REQUESTS,
               topics.DECISIONS),
        writes=(topics.DECISIONS, topics.EXCUSES, topics.EXCUSE_REQUESTS, topics.ACCESS_LOG),
        groups=("hadir-dashboard-",)),
    # the compliance team: the alerts, never a selfie
    "compliance": Grants(reads=(topics.ALERTS,), groups=("hadir-alerts-",)),
}
PRINCIPALS: tuple[Principal, ...] = ("admin", "gateway", "intake", "core", "sink", "reviewer",
                                     "compliance")


def login(infra: InfraSettings, principal: Principal) -> tuple[str, str]:
    """The user name and password ``principal`` logs in with."""
    if infra.managed:
        return principal, local_secret(infra, f"kafka-{principal}")
    if infra.kafka_user != principal or not infra.kafka_password:
        raise ConfigError(f"kafka_user / kafka_password: this process logs in to Kafka as "
                          f"{principal!r}; set HADIR_INFRA_KAFKA_USER={principal} and its "
                          "password (the stack is not managed here)")
    return infra.kafka_user, infra.kafka_password


def confluent(infra: InfraSettings, principal: Principal) -> dict[str, Any]:
    """A confluent-kafka (librdkafka) client's connection settings."""
    user, password = login(infra, principal)
    return {"bootstrap.servers": infra.bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": MECHANISM, "sasl.username": user, "sasl.password": password}


def aiokafka(infra: InfraSettings, principal: Principal) -> dict[str, Any]:
    """An aiokafka client's connection keyword arguments."""
    user, password = login(infra, principal)
    return {"bootstrap_servers": infra.bootstrap, "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": MECHANISM, "sasl_plain_username": user,
            "sasl_plain_password": password}


def faust_credentials(infra: InfraSettings, principal: Principal) -> Any:
    import faust

    user, password = login(infra, principal)
    return faust.SASLCredentials(username=user, password=password, mechanism=MECHANISM)


def provision(infra: InfraSettings) -> None:
    """Every principal's SCRAM credentials and ACLs (idempotent: run by `hadir infra up`)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient(confluent(infra, "admin"))
    if infra.managed:  # elsewhere, the operator made the users (docs/operations.md)
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        upserts = [UserScramCredentialUpsertion(p, info, login(infra, p)[1].encode())
                   for p in PRINCIPALS if p != "admin"]
        for future in admin.alter_user_scram_credentials(upserts).values():
            future.result()
    bindings = acl_bindings()
    try:
        for future in admin.create_acls(bindings, request_timeout=30).values():
            future.result()
    except KafkaException as exc:
        raise RuntimeError(f"creating Kafka ACLs failed: {exc}") from None


def acl_bindings() -> list[Any]:
    """The ACLs of :data:`GRANTS`, as the admin client takes them."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    def allow(principal: str, kind: ResourceType, name: str, pattern: ResourcePatternType,
              operation: AclOperation) -> AclBinding:
        return AclBinding(kind, name, pattern, f"User:{principal}", "*", operation,
                          AclPermissionType.ALLOW)

    literal, prefixed = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    out = []
    for principal, g in GRANTS.items():
        for t in g.reads:
            out.append(allow(principal, ResourceType.TOPIC, t.name, literal, AclOperation.READ))
        for t in g.writes:
            out.append(allow(principal, ResourceType.TOPIC, t.name, literal, AclOperation.WRITE))
        for t in {*g.reads, *g.writes}:
            out.append(allow(principal, ResourceType.TOPIC, t.name, literal,
                             AclOperation.DESCRIBE))
        for group in g.groups:
            pattern = prefixed if group.endswith("-") else literal
            out.append(allow(principal, ResourceType.GROUP, group, pattern, AclOperation.READ))
        for prefix in g.owns_prefix:
            out.append(allow(principal, ResourceType.TOPIC, prefix, prefixed, AclOperation.ALL))
    return out


def grants_table() -> str:
    """The markdown table of who may do what on Kafka (docs/operations.md holds it; a test
    keeps the two equal): ``python -m hadir.kafka_access`` prints it."""
    def names(ts: tuple[topics.Topic, ...]) -> str:
        return ", ".join(f"`{t.name}`" for t in ts) or "nothing"

    rows = ["| principal | reads | writes | groups and own topics |", "|---|---|---|---|",
            "| `admin` | everything (the broker's super user: `hadir infra up`, reference data, "
            "enrolment, the operator's commands, erasure) | everything | all |"]
    for principal, g in GRANTS.items():
        owned = [f"group `{x}`" + ("*" if x.endswith("-") else "") for x in g.groups]
        owned += [f"topics `{x}`*" for x in g.owns_prefix]
        rows.append(f"| `{principal}` | {names(g.reads)} | {names(g.writes)} | "
                    f"{', '.join(owned) or 'none'} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(grants_table(), end="")
