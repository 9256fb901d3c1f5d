import Foundation
import PostgresNIO
import SwiftletCore
import SwiftletStore

extension PostgresStore {
    /// A named schema change; `version` is what `schema_migration` records once it is applied.
    struct Migration: Sendable {
        var version: String
        var statements: [PostgresQuery]
    }

    /// In order; later migrations append here, one per feature (never edit a shipped one).
    static var migrations: [Migration] {
        [
            v1, v2ChangeNotify, v3Leadership, v4HostFeed, v5WatchHolderWriter, v6Identity, projectQuota,
            tokenExpiryAudit,
            migrationTable, snapshotTable,
        ]
    }

    /// Each project's quota (JSON; NULL: none).
    static var projectQuota: Migration {
        Migration(version: "project-quota", statements: ["ALTER TABLE project ADD COLUMN quota text"])
    }

    /// Every committed change to a table is announced on `changeChannel` as "<writer>:<table>"
    /// (the writer is the connection's application name), whatever statement made it: other
    /// controllers drop what they cached from it. NOTIFY is delivered at commit, once per
    /// distinct payload per transaction.
    static var v2ChangeNotify: Migration {
        let tables = [
            "project", "token", "image", "signing_key", "flavor", "server_group", "instance", "vm_handle", "event",
            "host", "join_token", "host_credential", "network", "port", "security_group", "security_group_rule",
            "instance_security_group", "build", "build_cache", "pool",
        ]
        var statements: [PostgresQuery] = [
            """
            CREATE FUNCTION swiftlet_announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('swiftlet_changes', current_setting('application_name') || ':' || TG_TABLE_NAME);
                RETURN NULL;
            END $$
            """
        ]
        for table in tables {
            // Table names are this list's literals, not input: safe to splice.
            statements.append(
                PostgresQuery(
                    unsafeSQL: """
                        CREATE TRIGGER \(table)_announce AFTER INSERT OR UPDATE OR DELETE ON \(table)
                        FOR EACH STATEMENT EXECUTE FUNCTION swiftlet_announce_change()
                        """))
        }
        return Migration(version: "v2-change-notify", statements: statements)
    }

    /// Applies each migration not yet recorded, each in its own transaction. The advisory lock
    /// serialises controllers that start at once: the second one waits, then finds the version
    /// recorded and skips it.
    public func migrate() async throws(SwiftletError) {
        try await refuseNewerSchema()
        for migration in Self.migrations {
            let applied = try await transaction { db in
                try await db.lock(.migration)
                try await db.execute(
                    """
                    CREATE TABLE IF NOT EXISTS schema_migration (
                        version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())
                    """)
                let done = try await db.value(
                    Bool.self,
                    "SELECT EXISTS (SELECT 1 FROM schema_migration WHERE version = \(migration.version))")
                if done == true { return false }
                for statement in migration.statements { try await db.execute(statement) }
                try await db.execute(
                    "INSERT INTO schema_migration (version, applied_at) VALUES (\(migration.version), now())")
                return true
            }
            if applied {
                logger.info("applied database migration", metadata: ["version": "\(migration.version)"])
                countWrite(catalog: true)
            }
        }
    }

    /// 500 `store.newer_schema` when `schema_migration` records versions this binary does not
    /// know. Checked outside the migrations' lock: a newer controller migrating at the same time
    /// is found by the next start.
    private func refuseNewerSchema() async throws(SwiftletError) {
        let recorded = try await read { db in
            guard try await db.value(Bool.self, "SELECT to_regclass('schema_migration') IS NOT NULL") == true else {
                return [String]()
            }
            return try await db.values(String.self, "SELECT version FROM schema_migration")
        }
        let unknown = Set(recorded).subtracting(Self.migrations.map(\.version))
        if !unknown.isEmpty { throw SwiftletError.newerSchema(database: databaseName, unknown: unknown.sorted()) }
    }

    /// The whole schema of SQLiteStore's migrations v1 to v5, with the same constraints. One
    /// statement a query: the extended protocol takes no more.
    private static var v1: Migration {
        var statements: [PostgresQuery] = [
            """
            CREATE TABLE project (
                id text PRIMARY KEY, name text NOT NULL UNIQUE, require_signed boolean NOT NULL DEFAULT false,
                created_at timestamptz NOT NULL)
            """,
            """
            CREATE TABLE token (
                id text PRIMARY KEY, project_id text NOT NULL REFERENCES project(id) ON DELETE CASCADE,
                admin boolean NOT NULL, secret_hash text NOT NULL UNIQUE, created_at timestamptz NOT NULL)
            """,
            "CREATE INDEX token_project ON token(project_id)",
            """
            CREATE TABLE image (
                id text PRIMARY KEY, project_id text NOT NULL REFERENCES project(id),
                name text NOT NULL, kind text NOT NULL, sha256 text NOT NULL,
                size_bytes bigint NOT NULL CHECK (size_bytes > 0), properties text NOT NULL,
                created_at timestamptz NOT NULL,
                visibility text NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'public')),
                tags text NOT NULL DEFAULT '[]', signature text, signing_key_id text,
                UNIQUE (project_id, name))
            """,
            "CREATE INDEX image_sha256 ON image(sha256)",
            "CREATE INDEX image_public ON image(visibility) WHERE visibility = 'public'",
            """
            CREATE TABLE signing_key (
                id text PRIMARY KEY, project_id text NOT NULL REFERENCES project(id) ON DELETE CASCADE,
                name text NOT NULL, public_key text NOT NULL CHECK (length(public_key) = 44),
                created_at timestamptz NOT NULL,
                UNIQUE (project_id, name), UNIQUE (project_id, public_key))
            """,
            """
            CREATE TABLE flavor (
                name text PRIMARY KEY, vcpus bigint NOT NULL CHECK (vcpus > 0),
                memory_mib bigint NOT NULL CHECK (memory_mib > 0))
            """,
            """
            CREATE TABLE server_group (
                id text PRIMARY KEY, project_id text NOT NULL REFERENCES project(id),
                name text NOT NULL, policy text NOT NULL CHECK (policy IN ('affinity', 'anti-affinity')),
                created_at timestamptz NOT NULL, UNIQUE (project_id, name))
            """,
            // Instance ids sort bytewise ("C"), as in SQLite, so keyset pages do not depend on the
            // database's locale.
            """
            CREATE TABLE instance (
                id text COLLATE "C" PRIMARY KEY, project_id text NOT NULL REFERENCES project(id),
                name text NOT NULL, image_id text NOT NULL REFERENCES image(id) ON DELETE RESTRICT,
                state text NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL,
                host_id text, memory_mib bigint NOT NULL DEFAULT 0, vcpus bigint NOT NULL DEFAULT 0,
                server_group_id text REFERENCES server_group(id), revision bigint NOT NULL DEFAULT 1,
                UNIQUE (project_id, name))
            """,
            "CREATE INDEX instance_state ON instance(state)",
            "CREATE INDEX instance_placement ON instance(host_id, state, memory_mib, vcpus)",
            "CREATE INDEX instance_server_group ON instance(server_group_id)",
            "CREATE INDEX instance_created ON instance(created_at, id)",
            "CREATE INDEX instance_project_created ON instance(project_id, created_at, id)",
            "CREATE INDEX instance_image ON instance(image_id)",
            """
            CREATE TABLE vm_handle (
                instance_id text COLLATE "C" PRIMARY KEY REFERENCES instance(id) ON DELETE CASCADE,
                handle bytea NOT NULL)
            """,
            """
            CREATE TABLE event (
                id bigserial PRIMARY KEY, instance_id text NOT NULL, time timestamptz NOT NULL,
                type text NOT NULL, message text NOT NULL)
            """,
            "CREATE INDEX event_instance ON event(instance_id, id)",
            """
            CREATE TABLE host (
                id text PRIMARY KEY, body text NOT NULL, cordoned boolean NOT NULL DEFAULT false)
            """,
            """
            CREATE TABLE join_token (
                id text PRIMARY KEY, secret_hash text NOT NULL CHECK (length(secret_hash) = 64),
                expires_at timestamptz NOT NULL, used_at timestamptz)
            """,
            """
            CREATE TABLE host_credential (
                host_id text PRIMARY KEY, name text NOT NULL, certificate_serial text NOT NULL,
                revoked boolean NOT NULL DEFAULT false, joined_at timestamptz NOT NULL)
            """,
            "CREATE UNIQUE INDEX host_credential_live_name ON host_credential(name) WHERE NOT revoked",
            // Addresses are integers so that UNIQUE (network_id, address) makes IPAM safe.
            """
            CREATE TABLE network (
                id text PRIMARY KEY, project_id text NOT NULL REFERENCES project(id),
                name text NOT NULL, first_address bigint NOT NULL,
                prefix_length integer NOT NULL CHECK (prefix_length BETWEEN 8 AND 30), gateway bigint NOT NULL,
                mtu integer NOT NULL CHECK (mtu BETWEEN 576 AND 9000),
                mode text NOT NULL CHECK (mode IN ('isolated', 'nat')), bridge text NOT NULL UNIQUE,
                created_at timestamptz NOT NULL, vni integer NOT NULL UNIQUE, UNIQUE (project_id, name))
            """,
            """
            CREATE TABLE port (
                id text PRIMARY KEY, network_id text NOT NULL REFERENCES network(id) ON DELETE RESTRICT,
                instance_id text COLLATE "C" NOT NULL REFERENCES instance(id) ON DELETE CASCADE,
                address bigint NOT NULL, mac text NOT NULL UNIQUE, tap text NOT NULL UNIQUE,
                UNIQUE (network_id, address))
            """,
            "CREATE INDEX port_instance ON port(instance_id)",
            """
            CREATE TABLE security_group (
                id text PRIMARY KEY, project_id text NOT NULL REFERENCES project(id),
                name text NOT NULL, description text NOT NULL, created_at timestamptz NOT NULL,
                UNIQUE (project_id, name))
            """,
            """
            CREATE TABLE security_group_rule (
                id text PRIMARY KEY, group_id text NOT NULL REFERENCES security_group(id) ON DELETE CASCADE,
                protocol text NOT NULL CHECK (protocol IN ('tcp', 'udp', 'icmp', 'any')),
                port_min integer CHECK (port_min BETWEEN 1 AND 65535),
                port_max integer CHECK (port_max BETWEEN 1 AND 65535 AND port_max >= port_min),
                source text NOT NULL, position integer NOT NULL)
            """,
            "CREATE INDEX security_group_rule_group ON security_group_rule(group_id, position)",
            """
            CREATE TABLE instance_security_group (
                instance_id text COLLATE "C" NOT NULL REFERENCES instance(id) ON DELETE CASCADE,
                group_id text NOT NULL REFERENCES security_group(id) ON DELETE RESTRICT,
                PRIMARY KEY (instance_id, group_id))
            """,
            "CREATE INDEX instance_security_group_group ON instance_security_group(group_id)",
            """
            CREATE TABLE build (
                id text PRIMARY KEY, project_id text NOT NULL REFERENCES project(id) ON DELETE CASCADE,
                state text NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
                body text NOT NULL, created_at timestamptz NOT NULL)
            """,
            "CREATE INDEX build_project_created ON build(project_id, created_at, id)",
            """
            CREATE TABLE build_cache (
                project_id text NOT NULL REFERENCES project(id) ON DELETE CASCADE,
                inputs_digest text NOT NULL CHECK (length(inputs_digest) = 64),
                image_id text NOT NULL REFERENCES image(id) ON DELETE CASCADE,
                PRIMARY KEY (project_id, inputs_digest))
            """,
            "CREATE INDEX build_cache_image ON build_cache(image_id)",
            """
            CREATE TABLE pool (
                id text PRIMARY KEY, project_id text NOT NULL REFERENCES project(id),
                image_id text NOT NULL REFERENCES image(id) ON DELETE RESTRICT,
                memory_mib bigint NOT NULL CHECK (memory_mib > 0), vcpus bigint NOT NULL CHECK (vcpus > 0),
                size integer NOT NULL CHECK (size BETWEEN 1 AND 64), created_at timestamptz NOT NULL,
                UNIQUE (image_id, memory_mib, vcpus))
            """,
        ]
        for flavor in Flavor.defaults {
            statements.append(
                """
                INSERT INTO flavor (name, vcpus, memory_mib) VALUES (\(flavor.name), \(flavor.vcpus), \(flavor.memoryMib))
                """)
        }
        statements.append(
            """
            INSERT INTO project (id, name, require_signed, created_at)
            VALUES (\(Project.adminProjectId), 'admin', false, now())
            """)
        return Migration(version: "v1", statements: statements)
    }
}
