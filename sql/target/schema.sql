-- The modern schema the dispatch platform moves to (Supabase style): UUID keys, the legacy key
-- kept as a unique `legacy_id`, references as UUIDs with real constraints, enums for statuses,
-- timestamptz, money as numeric(12,2), and a `metadata` jsonb for legacy fields with no column.
-- Names differ from the source on purpose (plural tables, renamed columns, auth_user and
-- dispatch_profile merged into profiles): mapping is real work.

CREATE TYPE doctor_status   AS ENUM ('inactive', 'active', 'suspended');
CREATE TYPE profile_role    AS ENUM ('admin', 'doctor', 'technician', 'assistant', 'staff');
CREATE TYPE sex             AS ENUM ('male', 'female', 'unknown');
CREATE TYPE order_status    AS ENUM ('new', 'in_progress', 'shipped', 'delivered', 'cancelled');
CREATE TYPE jaw_kind        AS ENUM ('upper', 'lower');
CREATE TYPE project_status  AS ENUM ('draft', 'active', 'done');
CREATE TYPE case_status     AS ENUM ('open', 'in_review', 'approved', 'closed', 'cancelled');
CREATE TYPE case_state      AS ENUM ('submitted', 'planning', 'review', 'approved', 'manufacturing', 'shipped', 'closed');
CREATE TYPE task_status     AS ENUM ('todo', 'doing', 'done', 'blocked');
CREATE TYPE message_level   AS ENUM ('info', 'warning', 'error');
CREATE TYPE payment_method  AS ENUM ('card', 'transfer', 'cash', 'check');
CREATE TYPE payment_status  AS ENUM ('pending', 'completed', 'refunded', 'failed');

-- A plausible instant: what production's clean data holds.
CREATE DOMAIN plausible_ts AS timestamptz CHECK (VALUE >= '1990-01-01' AND VALUE < '2100-01-01');
CREATE DOMAIN email_address AS text CHECK (VALUE ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$');

CREATE TABLE offices (
    id          uuid PRIMARY KEY,
    legacy_id   integer NOT NULL UNIQUE,
    name        text NOT NULL CHECK (name <> ''),
    address     text,
    phone       text,
    email       email_address,
    timezone    text NOT NULL DEFAULT 'UTC',
    is_active   boolean NOT NULL,
    created_at  plausible_ts NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE profiles (
    id             uuid PRIMARY KEY,
    legacy_id      integer NOT NULL UNIQUE,           -- dispatch_profile.id
    legacy_user_id integer NOT NULL UNIQUE,           -- auth_user.id
    username       text NOT NULL UNIQUE,
    email          email_address NOT NULL,
    full_name      text NOT NULL,
    office_id      uuid REFERENCES offices (id),
    role           profile_role NOT NULL,
    phone          text,
    is_active      boolean NOT NULL,
    is_staff       boolean NOT NULL,
    settings       jsonb NOT NULL DEFAULT '{}',
    joined_at      plausible_ts NOT NULL,
    last_login_at  plausible_ts,
    metadata       jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);
CREATE UNIQUE INDEX profiles_email_ci ON profiles (lower(email));

CREATE TABLE doctors (
    id              uuid PRIMARY KEY,
    legacy_id       integer NOT NULL UNIQUE,
    office_id       uuid NOT NULL REFERENCES offices (id),
    profile_id      uuid NOT NULL REFERENCES profiles (id),
    license_number  text NOT NULL UNIQUE,
    specialty       text,
    status          doctor_status NOT NULL,
    created_at      plausible_ts NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE patients (
    id             uuid PRIMARY KEY,
    legacy_id      integer NOT NULL UNIQUE,
    doctor_id      uuid NOT NULL REFERENCES doctors (id),
    office_id      uuid NOT NULL REFERENCES offices (id),
    first_name     text NOT NULL,
    last_name      text NOT NULL,
    date_of_birth  date CHECK (date_of_birth >= '1900-01-01' AND date_of_birth <= '2030-01-01'),
    email          email_address,
    phone          text,
    sex            sex NOT NULL DEFAULT 'unknown',
    created_at     plausible_ts NOT NULL,
    metadata       jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE orders (
    id          uuid PRIMARY KEY,
    legacy_id   integer NOT NULL UNIQUE,
    patient_id  uuid NOT NULL REFERENCES patients (id),
    doctor_id   uuid NOT NULL REFERENCES doctors (id),
    office_id   uuid NOT NULL REFERENCES offices (id),
    status      order_status NOT NULL,
    total       numeric(12,2) NOT NULL CHECK (total >= 0),
    currency    char(3) NOT NULL,
    notes       text,
    created_at  plausible_ts NOT NULL,
    updated_at  plausible_ts,
    metadata    jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE products (
    id         uuid PRIMARY KEY,
    legacy_id  integer NOT NULL UNIQUE,
    sku        text NOT NULL UNIQUE,
    name       text NOT NULL,
    price      numeric(12,2) NOT NULL CHECK (price >= 0),
    is_active  boolean NOT NULL,
    metadata   jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE jaws (
    id          uuid PRIMARY KEY,
    legacy_id   integer NOT NULL UNIQUE,
    patient_id  uuid NOT NULL REFERENCES patients (id),
    order_id    uuid REFERENCES orders (id),
    kind        jaw_kind NOT NULL,
    scan_url    text,
    created_at  plausible_ts NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE projects (
    id           uuid PRIMARY KEY,
    legacy_id    integer NOT NULL UNIQUE,
    name         text NOT NULL,
    description  text,
    status       project_status NOT NULL,
    created_at   plausible_ts NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE treatment_plans (
    id           uuid PRIMARY KEY,
    legacy_id    integer NOT NULL UNIQUE,
    patient_id   uuid NOT NULL REFERENCES patients (id),
    project_id   uuid REFERENCES projects (id),
    title        text NOT NULL,
    step_count   integer NOT NULL CHECK (step_count >= 0),
    is_approved  boolean NOT NULL,
    data         jsonb NOT NULL,
    created_at   plausible_ts NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE patient_events (
    id           uuid PRIMARY KEY,
    legacy_id    integer NOT NULL UNIQUE,
    patient_id   uuid NOT NULL REFERENCES patients (id),
    event_type   text NOT NULL,
    payload      jsonb NOT NULL,
    occurred_at  plausible_ts NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE cases (
    id          uuid PRIMARY KEY,
    legacy_id   integer NOT NULL UNIQUE,
    patient_id  uuid NOT NULL REFERENCES patients (id),
    doctor_id   uuid NOT NULL REFERENCES doctors (id),
    title       text NOT NULL,
    status      case_status NOT NULL,
    priority    smallint NOT NULL CHECK (priority BETWEEN 1 AND 5),
    opened_at   plausible_ts NOT NULL,
    closed_at   plausible_ts,
    metadata    jsonb NOT NULL DEFAULT '{}',
    CHECK (closed_at IS NULL OR closed_at >= opened_at),
    deleted_at  timestamptz
);

CREATE TABLE case_states (
    id          uuid PRIMARY KEY,
    legacy_id   integer NOT NULL UNIQUE,
    case_id     uuid NOT NULL REFERENCES cases (id),
    state       case_state NOT NULL,
    changed_at  plausible_ts NOT NULL,
    note        text,
    metadata    jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE tasks (
    id              uuid PRIMARY KEY,
    legacy_id       integer NOT NULL UNIQUE,
    case_id         uuid NOT NULL REFERENCES cases (id),
    assignee_id     uuid REFERENCES profiles (id),
    parent_task_id  uuid REFERENCES tasks (id),
    title           text NOT NULL,
    status          task_status NOT NULL,
    due_date        date,
    created_at      plausible_ts NOT NULL,
    completed_at    plausible_ts,
    metadata        jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE case_messages (
    id         uuid PRIMARY KEY,
    legacy_id  integer NOT NULL UNIQUE,
    case_id    uuid NOT NULL REFERENCES cases (id),
    sender_id  uuid NOT NULL REFERENCES profiles (id),
    body       text NOT NULL,
    sent_at    plausible_ts NOT NULL,
    is_read    boolean NOT NULL,
    metadata   jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE message_attachments (
    id            uuid PRIMARY KEY,
    legacy_id     integer NOT NULL UNIQUE,
    message_id    uuid NOT NULL REFERENCES case_messages (id),
    file_name     text NOT NULL,
    content_type  text,
    size_bytes    bigint NOT NULL CHECK (size_bytes >= 0),
    url           text,
    metadata      jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE case_files (
    id           uuid PRIMARY KEY,
    legacy_id    integer NOT NULL UNIQUE,
    case_id      uuid NOT NULL REFERENCES cases (id),
    file_name    text NOT NULL,
    kind         text NOT NULL,
    size_bytes   bigint NOT NULL CHECK (size_bytes >= 0),
    uploaded_at  plausible_ts NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE system_messages (
    id            uuid PRIMARY KEY,
    legacy_id     integer NOT NULL UNIQUE,
    recipient_id  uuid NOT NULL REFERENCES profiles (id),
    sender_id     uuid REFERENCES profiles (id),
    subject       text NOT NULL,
    body          text NOT NULL,
    level         message_level NOT NULL,
    is_read       boolean NOT NULL,
    created_at    plausible_ts NOT NULL,
    metadata      jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE operations (
    id            uuid PRIMARY KEY,
    legacy_id     integer NOT NULL UNIQUE,
    office_id     uuid NOT NULL REFERENCES offices (id),
    doctor_id     uuid NOT NULL REFERENCES doctors (id),
    kind          text NOT NULL,
    amount        numeric(12,2) NOT NULL CHECK (amount >= 0),
    performed_at  plausible_ts NOT NULL,
    metadata      jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE purchases (
    id            uuid PRIMARY KEY,
    legacy_id     integer NOT NULL UNIQUE,
    doctor_id     uuid NOT NULL REFERENCES doctors (id),
    order_id      uuid NOT NULL REFERENCES orders (id),
    amount        numeric(12,2) NOT NULL CHECK (amount >= 0),
    purchased_at  plausible_ts NOT NULL,
    metadata      jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE payments (
    id         uuid PRIMARY KEY,
    legacy_id  integer NOT NULL UNIQUE,
    order_id   uuid NOT NULL REFERENCES orders (id),
    doctor_id  uuid NOT NULL REFERENCES doctors (id),
    amount     numeric(12,2) NOT NULL CHECK (amount > 0),
    method     payment_method NOT NULL,
    status     payment_status NOT NULL,
    paid_at    plausible_ts NOT NULL,
    metadata   jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE offers (
    id          uuid PRIMARY KEY,
    legacy_id   integer NOT NULL UNIQUE,
    doctor_id   uuid NOT NULL REFERENCES doctors (id),
    product_id  uuid NOT NULL REFERENCES products (id),
    price       numeric(12,2) NOT NULL CHECK (price >= 0),
    valid_from  date NOT NULL,
    valid_to    date,
    created_at  plausible_ts NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    UNIQUE (doctor_id, product_id),
    deleted_at  timestamptz
);

CREATE TABLE discounts (
    id          uuid PRIMARY KEY,
    legacy_id   integer NOT NULL UNIQUE,
    offer_id    uuid REFERENCES offers (id),
    doctor_id   uuid REFERENCES doctors (id),
    percent     numeric(5,2) CHECK (percent > 0 AND percent <= 100),
    amount      numeric(12,2) CHECK (amount > 0),
    valid_from  date NOT NULL,
    valid_to    date NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    CHECK (offer_id IS NOT NULL OR doctor_id IS NOT NULL),
    CHECK ((percent IS NULL) <> (amount IS NULL)),
    CHECK (valid_to > valid_from),
    deleted_at  timestamptz
);

CREATE TABLE roles (
    id           uuid PRIMARY KEY,
    legacy_id    integer NOT NULL UNIQUE,
    name         text NOT NULL UNIQUE,
    description  text,
    metadata     jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);

CREATE TABLE role_permissions (
    id          uuid PRIMARY KEY,
    legacy_id   integer NOT NULL UNIQUE,
    role_id     uuid NOT NULL REFERENCES roles (id),
    permission  text NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    UNIQUE (role_id, permission),
    deleted_at  timestamptz
);

CREATE TABLE technician_roles (
    id           uuid PRIMARY KEY,
    legacy_id    integer NOT NULL UNIQUE,
    name         text NOT NULL UNIQUE,
    description  text,
    level        smallint NOT NULL CHECK (level BETWEEN 1 AND 10),
    is_active    boolean NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    deleted_at  timestamptz
);
