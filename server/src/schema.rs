//! The bindings table, created when missing and used as it is when the platform made it.

/// Creates schema, enum type and table unless they exist. The advisory lock keeps instances that
/// start together from racing on the creation.
pub const ENSURE_TABLE: &str = r#"
DO $$
BEGIN
  PERFORM pg_advisory_xact_lock(727465);
  IF to_regnamespace('dashboard') IS NULL THEN
    CREATE SCHEMA dashboard;
  END IF;
  IF to_regclass('dashboard."connectionBindings"') IS NULL THEN
    IF to_regtype('dashboard."enum_connectionBindings_type"') IS NULL THEN
      CREATE TYPE dashboard."enum_connectionBindings_type" AS ENUM ('mqtt', 'ws');
    END IF;
    CREATE TABLE dashboard."connectionBindings" (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      "deviceId" varchar(255) NOT NULL,
      "lastConnectedAt" timestamptz NOT NULL,
      server varchar(255) NOT NULL,
      "connectingStatus" boolean NOT NULL,
      type dashboard."enum_connectionBindings_type" NOT NULL,
      created timestamptz NOT NULL DEFAULT now(),
      updated timestamptz NOT NULL DEFAULT now(),
      UNIQUE ("deviceId", type)
    );
  END IF;
END
$$;
"#;

/// The SQL name of the `type` column's type: the platform's enum may be named differently.
pub const BINDING_TYPE: &str = r#"
SELECT format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = 'dashboard."connectionBindings"'::regclass AND attname = 'type'
"#;
