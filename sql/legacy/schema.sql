-- The legacy dispatch platform: Django-style tables with integer keys, as production has them.
-- Loaded by `agentctl dataset generate`. Foreign keys are added after the data, NOT VALID, the
-- way the production database got them late: they are in the catalog (so the dependency graph
-- is visible) but rows that predate them may point at parents that were hard-deleted.

CREATE TABLE auth_user (
    id           integer PRIMARY KEY,
    username     varchar(150) NOT NULL,
    password     varchar(128) NOT NULL,
    email        varchar(254),
    first_name   varchar(150) NOT NULL DEFAULT '',
    last_name    varchar(150) NOT NULL DEFAULT '',
    is_active    boolean NOT NULL DEFAULT true,
    is_staff     boolean NOT NULL DEFAULT false,
    date_joined  timestamp NOT NULL,
    last_login   timestamp
);

CREATE TABLE dispatch_office (
    id          integer PRIMARY KEY,
    name        varchar(200) NOT NULL,       -- padded with trailing spaces in places
    address     text,
    phone       varchar(40),
    email       varchar(254),
    timezone    varchar(64),
    is_active   smallint NOT NULL DEFAULT 1, -- 0/1
    created_at  timestamp
);

CREATE TABLE dispatch_profile (
    id          integer PRIMARY KEY,
    user_id     integer NOT NULL,
    office_id   integer,
    role        varchar(30),                 -- free text: 'doctor', 'Technician ', 'ADMIN', ...
    phone       varchar(40),
    settings    text,                        -- JSON in a text column
    created     timestamp
);

CREATE TABLE dispatch_doctor (
    id          integer PRIMARY KEY,
    office_id   integer,
    profile_id  integer,
    license_no  varchar(40),
    specialty   varchar(100),
    status      smallint,                    -- 0 inactive, 1 active, 2 suspended
    created_at  timestamp
);

CREATE TABLE dispatch_patient (
    id          integer PRIMARY KEY,
    doctor_id   integer,
    office_id   integer,
    first_name  varchar(100),
    last_name   varchar(100),
    birth_date  date,
    email       varchar(254),
    phone       varchar(40),
    gender      char(1),                     -- 'M', 'F', 'U'
    created_at  timestamp
);

CREATE TABLE dispatch_order (
    id           integer PRIMARY KEY,
    patient_id   integer,
    doctor_id    integer,
    office_id    integer,
    status       varchar(20),                -- free text: new, in_progress, shipped, delivered, cancelled
    total_cents  integer,                    -- money in cents
    currency     char(3),
    notes        text,
    created_at   timestamp,
    updated_at   timestamp
);

CREATE TABLE dispatch_product (
    id          integer PRIMARY KEY,
    sku         varchar(40),
    name        varchar(200),
    price       numeric(10,2),
    is_active   smallint
);

CREATE TABLE dispatch_jaw (
    id          integer PRIMARY KEY,
    patient_id  integer,
    order_id    integer,
    kind        varchar(10),                 -- 'upper', 'lower'
    scan_url    text,
    created_at  timestamp
);

CREATE TABLE dispatch_project (
    id           integer PRIMARY KEY,
    name         varchar(200),
    description  text,
    status       smallint,                   -- 0 draft, 1 active, 2 done
    created_at   timestamp
);

CREATE TABLE dispatch_treatment_plan (
    id          integer PRIMARY KEY,
    patient_id  integer,
    project_id  integer,
    title       varchar(200),
    steps       integer,
    approved    smallint,
    data        text,                        -- JSON in a text column
    created_at  timestamp
);

CREATE TABLE dispatch_patient_event (
    id           integer PRIMARY KEY,
    patient_id   integer,
    event_type   varchar(40),
    payload      text,                       -- JSON in a text column
    occurred_at  timestamp
);

CREATE TABLE dispatch_case (
    id          integer PRIMARY KEY,
    patient_id  integer,
    doctor_id   integer,
    title       varchar(200),
    status      smallint,                    -- 0 open, 1 in_review, 2 approved, 3 closed, 4 cancelled
    priority    smallint,
    opened_at   timestamp,
    closed_at   timestamp
);

CREATE TABLE dispatch_case_state (
    id          integer PRIMARY KEY,
    case_id     integer,
    state       varchar(30),                 -- free text
    changed_at  timestamp,
    note        text
);

CREATE TABLE dispatch_task (
    id              integer PRIMARY KEY,
    case_id         integer,
    assignee_id     integer,                 -- a profile
    parent_task_id  integer,                 -- a task of the same case
    title           varchar(200),
    status          smallint,                -- 0 todo, 1 doing, 2 done, 3 blocked
    due_date        date,
    created_at      timestamp,
    completed_at    timestamp
);

CREATE TABLE dispatch_case_message (
    id         integer PRIMARY KEY,
    case_id    integer,
    sender_id  integer,                      -- a profile
    body       text,
    sent_at    timestamp,
    is_read    smallint
);

CREATE TABLE dispatch_message_attachment (
    id            integer PRIMARY KEY,
    message_id    integer,
    file_name     varchar(255),
    content_type  varchar(100),
    size_bytes    bigint,
    url           text
);

CREATE TABLE dispatch_case_file (
    id           integer PRIMARY KEY,
    case_id      integer,
    file_name    varchar(255),
    kind         varchar(20),
    size_bytes   bigint,
    uploaded_at  timestamp
);

CREATE TABLE dispatch_system_message (
    id            integer PRIMARY KEY,
    recipient_id  integer,                   -- a profile
    sender_id     integer,                   -- a profile, NULL for the system itself
    subject       varchar(200),
    body          text,
    level         varchar(10),               -- info, warning, error
    is_read       smallint,
    created_at    timestamp
);

CREATE TABLE dispatch_operation (
    id            integer PRIMARY KEY,
    office_id     integer,
    doctor_id     integer,
    kind          varchar(20),
    amount        numeric(12,2),
    performed_at  timestamp
);

CREATE TABLE dispatch_purchase (
    id            integer PRIMARY KEY,
    doctor_id     integer,
    order_id      integer,
    amount_cents  integer,
    purchased_at  timestamp
);

CREATE TABLE dispatch_payment (
    id         integer PRIMARY KEY,
    order_id   integer,
    doctor_id  integer,
    amount     numeric(12,2),
    method     varchar(20),
    status     varchar(20),
    paid_at    timestamp
);

CREATE TABLE dispatch_offer (
    id          integer PRIMARY KEY,
    doctor_id   integer,
    product_id  integer,
    price       numeric(10,2),
    valid_from  date,
    valid_to    date,
    created_at  timestamp
);

CREATE TABLE dispatch_discount (
    id            integer PRIMARY KEY,
    offer_id      integer,
    doctor_id     integer,
    percent       numeric(5,2),
    amount_cents  integer,
    valid_from    date,
    valid_to      date
);

CREATE TABLE dispatch_role (
    id           integer PRIMARY KEY,
    name         varchar(80),
    description  text
);

CREATE TABLE dispatch_role_permission (
    id          integer PRIMARY KEY,
    role_id     integer,
    permission  varchar(100)
);

CREATE TABLE technician_roles (
    id           integer PRIMARY KEY,
    name         varchar(80),
    description  text,
    level        smallint,
    is_active    smallint
);
