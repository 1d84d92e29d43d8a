"""The initial schema: every table of the manager.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

Column types are spelled out here (not imported from bai.manager.models) so
that this migration keeps creating the same schema whatever the models
become.  Enum columns are VARCHARs with CHECK constraints named by the
metadata's naming convention.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

#: JSON documents: JSONB on PostgreSQL.
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
#: Timezone-aware timestamps (stored as UTC).
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "domains",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("modified_at", TIMESTAMP, nullable=False),
        sa.Column("total_resource_slots", JSON_DOC, nullable=False),
        sa.Column("allowed_vfolder_hosts", JSON_DOC, nullable=False),
        sa.Column("allowed_docker_registries", JSON_DOC, nullable=False),
        sa.Column("integration_id", sa.String(length=512), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_domains")),
    )
    op.create_table(
        "images",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("registry", sa.String(length=256), nullable=False),
        sa.Column("image", sa.String(length=256), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("architecture", sa.String(length=32), nullable=False),
        sa.Column("digest", sa.String(length=128), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("labels", JSON_DOC, nullable=False),
        sa.Column("resources", JSON_DOC, nullable=False),
        sa.Column("accelerators", JSON_DOC, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("name", "architecture", name=op.f("uq_images_name_architecture")),
    )
    op.create_index(op.f("ix_images_name"), "images", ["name"], unique=False)
    op.create_table(
        "keypair_resource_policies",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column(
            "default_for_unspecified",
            sa.Enum(
                "LIMITED",
                "UNLIMITED",
                name="default_for_unspecified",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("total_resource_slots", JSON_DOC, nullable=False),
        sa.Column("max_session_lifetime", sa.Integer(), nullable=False),
        sa.Column("max_concurrent_sessions", sa.Integer(), nullable=False),
        sa.Column("max_pending_session_count", sa.Integer(), nullable=True),
        sa.Column("max_pending_session_resource_slots", JSON_DOC, nullable=True),
        sa.Column("max_containers_per_session", sa.Integer(), nullable=False),
        sa.Column("idle_timeout", sa.BigInteger(), nullable=False),
        sa.Column("allowed_vfolder_hosts", JSON_DOC, nullable=False),
        sa.Column("max_vfolder_count", sa.Integer(), nullable=False),
        sa.Column("max_vfolder_size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_keypair_resource_policies")),
    )
    op.create_table(
        "project_resource_policies",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("max_vfolder_count", sa.Integer(), nullable=False),
        sa.Column("max_quota_scope_size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_project_resource_policies")),
    )
    op.create_table(
        "resource_presets",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("resource_slots", JSON_DOC, nullable=False),
        sa.Column("shared_memory", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_resource_presets")),
    )
    op.create_table(
        "scaling_groups",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("wsproxy_addr", sa.String(length=1024), nullable=True),
        sa.Column("driver", sa.String(length=64), nullable=False),
        sa.Column("driver_opts", JSON_DOC, nullable=False),
        sa.Column("scheduler", sa.String(length=64), nullable=False),
        sa.Column("scheduler_opts", JSON_DOC, nullable=False),
        sa.Column("use_host_network", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scaling_groups")),
    )
    op.create_table(
        "shared_config",
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("value", JSON_DOC, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_shared_config")),
    )
    op.create_table(
        "user_resource_policies",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("max_vfolder_count", sa.Integer(), nullable=False),
        sa.Column("max_quota_scope_size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_user_resource_policies")),
    )
    op.create_table(
        "agents",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "ALIVE",
                "LOST",
                "RESTARTING",
                "TERMINATED",
                name="agent_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("status_changed", TIMESTAMP, nullable=True),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("scaling_group", sa.String(length=64), nullable=False),
        sa.Column("schedulable", sa.Boolean(), nullable=False),
        sa.Column("available_slots", JSON_DOC, nullable=False),
        sa.Column("addr", sa.String(length=128), nullable=False),
        sa.Column("public_host", sa.String(length=256), nullable=True),
        sa.Column("first_contact", TIMESTAMP, nullable=False),
        sa.Column("lost_at", TIMESTAMP, nullable=True),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("architecture", sa.String(length=32), nullable=False),
        sa.Column("compute_plugins", JSON_DOC, nullable=False),
        sa.ForeignKeyConstraint(
            ["scaling_group"],
            ["scaling_groups.name"],
            name=op.f("fk_agents_scaling_group_scaling_groups"),
            onupdate="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
    )
    op.create_index(op.f("ix_agents_scaling_group"), "agents", ["scaling_group"], unique=False)
    op.create_index(op.f("ix_agents_status"), "agents", ["status"], unique=False)
    op.create_table(
        "groups",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("domain_name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("modified_at", TIMESTAMP, nullable=False),
        sa.Column("total_resource_slots", JSON_DOC, nullable=False),
        sa.Column("allowed_vfolder_hosts", JSON_DOC, nullable=False),
        sa.Column("integration_id", sa.String(length=512), nullable=True),
        sa.Column("resource_policy", sa.String(length=256), nullable=True),
        sa.ForeignKeyConstraint(
            ["domain_name"],
            ["domains.name"],
            name=op.f("fk_groups_domain_name_domains"),
            onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["resource_policy"],
            ["project_resource_policies.name"],
            name=op.f("fk_groups_resource_policy_project_resource_policies"),
            onupdate="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
        sa.UniqueConstraint("name", "domain_name", name=op.f("uq_groups_name_domain_name")),
    )
    op.create_index(op.f("ix_groups_domain_name"), "groups", ["domain_name"], unique=False)
    op.create_table(
        "image_aliases",
        sa.Column("alias", sa.String(length=256), nullable=False),
        sa.Column("image_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_image_aliases_image_id_images"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("alias", name=op.f("pk_image_aliases")),
    )
    op.create_index(op.f("ix_image_aliases_image_id"), "image_aliases", ["image_id"], unique=False)
    op.create_table(
        "sgroups_for_domains",
        sa.Column("scaling_group", sa.String(length=64), nullable=False),
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["domain"],
            ["domains.name"],
            name=op.f("fk_sgroups_for_domains_domain_domains"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["scaling_group"],
            ["scaling_groups.name"],
            name=op.f("fk_sgroups_for_domains_scaling_group_scaling_groups"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("scaling_group", "domain", name=op.f("pk_sgroups_for_domains")),
    )
    op.create_index(
        op.f("ix_sgroups_for_domains_domain"), "sgroups_for_domains", ["domain"], unique=False
    )
    op.create_table(
        "users",
        sa.Column("uuid", sa.Uuid(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=64), nullable=False),
        sa.Column("password", sa.String(length=256), nullable=True),
        sa.Column("need_password_change", sa.Boolean(), nullable=False),
        sa.Column("full_name", sa.String(length=64), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "inactive",
                "deleted",
                "before-verification",
                name="user_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("status_info", sa.String(length=64), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("modified_at", TIMESTAMP, nullable=False),
        sa.Column("domain_name", sa.String(length=64), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "superadmin",
                "admin",
                "user",
                "monitor",
                name="user_role",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("resource_policy", sa.String(length=256), nullable=True),
        sa.Column("allowed_client_ip", JSON_DOC, nullable=True),
        sa.ForeignKeyConstraint(
            ["domain_name"],
            ["domains.name"],
            name=op.f("fk_users_domain_name_domains"),
            onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["resource_policy"],
            ["user_resource_policies.name"],
            name=op.f("fk_users_resource_policy_user_resource_policies"),
            onupdate="CASCADE",
        ),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_index(op.f("ix_users_domain_name"), "users", ["domain_name"], unique=False)
    op.create_table(
        "association_groups_users",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("group_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_association_groups_users_group_id_groups"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.uuid"],
            name=op.f("fk_association_groups_users_user_id_users"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "group_id", name=op.f("pk_association_groups_users")),
    )
    op.create_index(
        op.f("ix_association_groups_users_group_id"),
        "association_groups_users",
        ["group_id"],
        unique=False,
    )
    op.create_table(
        "error_logs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column(
            "severity",
            sa.Enum(
                "critical",
                "error",
                "warning",
                name="error_log_severity",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("user", sa.Uuid(), nullable=True),
        sa.Column("is_read", sa.Boolean(), nullable=False),
        sa.Column("is_cleared", sa.Boolean(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("context_lang", sa.String(length=64), nullable=False),
        sa.Column(
            "context_env",
            JSON_DOC,
            nullable=True,
        ),
        sa.Column("request_url", sa.Text(), nullable=True),
        sa.Column("request_status", sa.Integer(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user"],
            ["users.uuid"],
            name=op.f("fk_error_logs_user_users"),
            onupdate="CASCADE",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_error_logs")),
    )
    op.create_index(op.f("ix_error_logs_created_at"), "error_logs", ["created_at"], unique=False)
    op.create_index(op.f("ix_error_logs_user"), "error_logs", ["user"], unique=False)
    op.create_table(
        "keypairs",
        sa.Column("access_key", sa.String(length=20), nullable=False),
        sa.Column("secret_key", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=256), nullable=False),
        sa.Column("user", sa.Uuid(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("modified_at", TIMESTAMP, nullable=False),
        sa.Column("last_used", TIMESTAMP, nullable=True),
        sa.Column("rate_limit", sa.Integer(), nullable=False),
        sa.Column("num_queries", sa.BigInteger(), nullable=False),
        sa.Column("resource_policy", sa.String(length=256), nullable=False),
        sa.Column("ssh_public_key", sa.Text(), nullable=True),
        sa.Column("ssh_private_key", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["resource_policy"],
            ["keypair_resource_policies.name"],
            name=op.f("fk_keypairs_resource_policy_keypair_resource_policies"),
            onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user"], ["users.uuid"], name=op.f("fk_keypairs_user_users"), onupdate="CASCADE"
        ),
        sa.PrimaryKeyConstraint("access_key", name=op.f("pk_keypairs")),
    )
    op.create_index(op.f("ix_keypairs_user"), "keypairs", ["user"], unique=False)
    op.create_index(op.f("ix_keypairs_user_id"), "keypairs", ["user_id"], unique=False)
    op.create_table(
        "session_templates",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("domain_name", sa.String(length=64), nullable=False),
        sa.Column("group_id", sa.Uuid(), nullable=True),
        sa.Column("user_uuid", sa.Uuid(), nullable=False),
        sa.Column(
            "type",
            sa.Enum(
                "task",
                "cluster",
                name="session_template_type",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=128), nullable=True),
        sa.Column("template", JSON_DOC, nullable=False),
        sa.ForeignKeyConstraint(
            ["domain_name"],
            ["domains.name"],
            name=op.f("fk_session_templates_domain_name_domains"),
            onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_session_templates_group_id_groups")
        ),
        sa.ForeignKeyConstraint(
            ["user_uuid"], ["users.uuid"], name=op.f("fk_session_templates_user_uuid_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_templates")),
    )
    op.create_index(
        op.f("ix_session_templates_user_uuid"), "session_templates", ["user_uuid"], unique=False
    )
    op.create_table(
        "sgroups_for_groups",
        sa.Column("scaling_group", sa.String(length=64), nullable=False),
        sa.Column("group", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group"],
            ["groups.id"],
            name=op.f("fk_sgroups_for_groups_group_groups"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["scaling_group"],
            ["scaling_groups.name"],
            name=op.f("fk_sgroups_for_groups_scaling_group_scaling_groups"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("scaling_group", "group", name=op.f("pk_sgroups_for_groups")),
    )
    op.create_index(
        op.f("ix_sgroups_for_groups_group"), "sgroups_for_groups", ["group"], unique=False
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("creation_id", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "session_type",
            sa.Enum(
                "interactive",
                "batch",
                "inference",
                "system",
                name="session_type",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column(
            "cluster_mode",
            sa.Enum(
                "single-node",
                "multi-node",
                name="cluster_mode",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("cluster_size", sa.Integer(), nullable=False),
        sa.Column("domain_name", sa.String(length=64), nullable=False),
        sa.Column("group_id", sa.Uuid(), nullable=False),
        sa.Column("user_uuid", sa.Uuid(), nullable=False),
        sa.Column("access_key", sa.String(length=20), nullable=False),
        sa.Column("scaling_group_name", sa.String(length=64), nullable=True),
        sa.Column("designated_agent", sa.String(length=64), nullable=True),
        sa.Column("image", sa.String(length=512), nullable=False),
        sa.Column("architecture", sa.String(length=32), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "PENDING",
                "SCHEDULED",
                "PREPARING",
                "PULLING",
                "PREPARED",
                "CREATING",
                "RUNNING",
                "RESTARTING",
                "RUNNING_DEGRADED",
                "TERMINATING",
                "TERMINATED",
                "ERROR",
                "CANCELLED",
                name="session_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("status_info", sa.String(length=64), nullable=True),
        sa.Column(
            "status_data",
            JSON_DOC,
            nullable=True,
        ),
        sa.Column("status_history", JSON_DOC, nullable=False),
        sa.Column("status_changed", TIMESTAMP, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("terminated_at", TIMESTAMP, nullable=True),
        sa.Column("starts_at", TIMESTAMP, nullable=True),
        sa.Column("batch_timeout", sa.BigInteger(), nullable=True),
        sa.Column("startup_command", sa.Text(), nullable=True),
        sa.Column("bootstrap_script", sa.Text(), nullable=True),
        sa.Column("callback_url", sa.Text(), nullable=True),
        sa.Column(
            "result",
            sa.Enum(
                "UNDEFINED",
                "SUCCESS",
                "FAILURE",
                name="session_result",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("requested_slots", JSON_DOC, nullable=False),
        sa.Column("occupying_slots", JSON_DOC, nullable=False),
        sa.Column("vfolder_mounts", JSON_DOC, nullable=False),
        sa.Column("environ", JSON_DOC, nullable=False),
        sa.Column("num_queries", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["access_key"],
            ["keypairs.access_key"],
            name=op.f("fk_sessions_access_key_keypairs"),
            onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["domain_name"],
            ["domains.name"],
            name=op.f("fk_sessions_domain_name_domains"),
            onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_sessions_group_id_groups")
        ),
        sa.ForeignKeyConstraint(
            ["scaling_group_name"],
            ["scaling_groups.name"],
            name=op.f("fk_sessions_scaling_group_name_scaling_groups"),
            onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_uuid"], ["users.uuid"], name=op.f("fk_sessions_user_uuid_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    op.create_index(
        op.f("ix_sessions_access_key_status"), "sessions", ["access_key", "status"], unique=False
    )
    op.create_index(op.f("ix_sessions_name"), "sessions", ["name"], unique=False)
    op.create_index(
        op.f("ix_sessions_status_scaling_group_name"),
        "sessions",
        ["status", "scaling_group_name"],
        unique=False,
    )
    op.create_table(
        "sgroups_for_keypairs",
        sa.Column("scaling_group", sa.String(length=64), nullable=False),
        sa.Column("access_key", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(
            ["access_key"],
            ["keypairs.access_key"],
            name=op.f("fk_sgroups_for_keypairs_access_key_keypairs"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["scaling_group"],
            ["scaling_groups.name"],
            name=op.f("fk_sgroups_for_keypairs_scaling_group_scaling_groups"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "scaling_group", "access_key", name=op.f("pk_sgroups_for_keypairs")
        ),
    )
    op.create_index(
        op.f("ix_sgroups_for_keypairs_access_key"),
        "sgroups_for_keypairs",
        ["access_key"],
        unique=False,
    )
    op.create_table(
        "kernels",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("cluster_role", sa.String(length=16), nullable=False),
        sa.Column("cluster_idx", sa.Integer(), nullable=False),
        sa.Column("local_rank", sa.Integer(), nullable=False),
        sa.Column("cluster_hostname", sa.String(length=64), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=True),
        sa.Column("agent_addr", sa.String(length=128), nullable=True),
        sa.Column("image", sa.String(length=512), nullable=False),
        sa.Column("architecture", sa.String(length=32), nullable=False),
        sa.Column("container_id", sa.String(length=64), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "PENDING",
                "SCHEDULED",
                "PREPARING",
                "PULLING",
                "PREPARED",
                "CREATING",
                "RUNNING",
                "RESTARTING",
                "RUNNING_DEGRADED",
                "TERMINATING",
                "TERMINATED",
                "ERROR",
                "CANCELLED",
                name="kernel_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("status_info", sa.String(length=64), nullable=True),
        sa.Column(
            "status_data",
            JSON_DOC,
            nullable=True,
        ),
        sa.Column("status_history", JSON_DOC, nullable=False),
        sa.Column("status_changed", TIMESTAMP, nullable=False),
        sa.Column("requested_slots", JSON_DOC, nullable=False),
        sa.Column("occupied_slots", JSON_DOC, nullable=False),
        sa.Column("attached_devices", JSON_DOC, nullable=False),
        sa.Column("resource_opts", JSON_DOC, nullable=False),
        sa.Column("kernel_host", sa.String(length=128), nullable=True),
        sa.Column("repl_in_port", sa.Integer(), nullable=True),
        sa.Column("repl_out_port", sa.Integer(), nullable=True),
        sa.Column("stdin_port", sa.Integer(), nullable=True),
        sa.Column("stdout_port", sa.Integer(), nullable=True),
        sa.Column("service_ports", JSON_DOC, nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("terminated_at", TIMESTAMP, nullable=True),
        sa.Column(
            "last_stat",
            JSON_DOC,
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["agent"], ["agents.id"], name=op.f("fk_kernels_agent_agents"), onupdate="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_kernels_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kernels")),
    )
    op.create_index(op.f("ix_kernels_agent_status"), "kernels", ["agent", "status"], unique=False)
    op.create_index(op.f("ix_kernels_session_id"), "kernels", ["session_id"], unique=False)
    op.create_index(op.f("ix_kernels_status"), "kernels", ["status"], unique=False)
    op.create_table(
        "session_dependencies",
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("depends_on", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "session_id <> depends_on", name=op.f("ck_session_dependencies_no_self_dependency")
        ),
        sa.ForeignKeyConstraint(
            ["depends_on"],
            ["sessions.id"],
            name=op.f("fk_session_dependencies_depends_on_sessions"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_session_dependencies_session_id_sessions"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "depends_on", name=op.f("pk_session_dependencies")),
    )
    op.create_index(
        op.f("ix_session_dependencies_depends_on"),
        "session_dependencies",
        ["depends_on"],
        unique=False,
    )


#: Tables in creation order (dependencies first); downgrade drops them in reverse.
_TABLES = (
    "domains",
    "images",
    "keypair_resource_policies",
    "project_resource_policies",
    "resource_presets",
    "scaling_groups",
    "shared_config",
    "user_resource_policies",
    "agents",
    "groups",
    "image_aliases",
    "sgroups_for_domains",
    "users",
    "association_groups_users",
    "error_logs",
    "keypairs",
    "session_templates",
    "sgroups_for_groups",
    "sessions",
    "sgroups_for_keypairs",
    "kernels",
    "session_dependencies",
)


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.drop_table(table)
