//! The reference legacy tables: how many rows each has in production, which columns, which
//! parents, which faults it can carry, and how one row is made.
//!
//! Every value of a row comes from that row's own random source (see `rng`), and every
//! reference points at a parent that is not rejected (or, for an orphan fault, at an id past
//! the parent's last one), so each table's expected outcome is exact.

use super::copy::Line;
use super::faults::FaultKind::{self, *};
use super::rng::Rng;
use super::World;

/// 2015-01-01 00:00:00 and 2024-12-31, as seconds since the epoch: production's time span.
const T0: i64 = 1_420_070_400;
const T1: i64 = 1_735_603_200;
const DAY: i64 = 86_400;

pub struct RowCtx<'a> {
    pub id: i64,
    pub rng: Rng,
    pub fault: Option<FaultKind>,
    pub world: &'a World,
}

impl RowCtx<'_> {
    fn is(&self, f: FaultKind) -> bool {
        self.fault == Some(f)
    }

    /// A parent that will be migrated, or (for an orphan fault) one that no longer exists.
    fn parent(&mut self, table: &str) -> i64 {
        if self.is(OrphanFk) {
            return self.world.rows(table) + 1 + self.rng.range(0, 999);
        }
        self.clean(table)
    }

    fn clean(&mut self, table: &str) -> i64 {
        let ids = self.world.clean_ids(table);
        i64::from(*self.rng.pick(ids))
    }

    /// A clean row of this same table with a smaller id, if there is one.
    fn earlier_clean(&mut self, table: &str) -> Option<i64> {
        let ids = self.world.clean_ids(table);
        let below = ids.partition_point(|&c| i64::from(c) < self.id);
        (below > 0).then(|| i64::from(ids[(self.rng.next() % below as u64) as usize]))
    }

    fn ts(&mut self) -> i64 {
        self.rng.range(T0, T1)
    }

    fn day(&mut self) -> i64 {
        self.rng.range(T0 / DAY, T1 / DAY)
    }

    /// A timestamp, or year 0001 / 2999 for a date fault.
    fn ts_or_fault(&mut self, line: &mut Line<'_>) {
        if self.is(DateOutOfRange) {
            line.raw(if self.rng.chance(0.5) {
                "0001-01-01 00:00:00"
            } else {
                "2999-12-31 00:00:00"
            });
        } else {
            let t = self.ts();
            line.ts(t);
        }
    }

    fn padded(&mut self, s: &str) -> String {
        if self.is(WhitespacePadding) {
            if self.rng.chance(0.5) {
                format!("{s}   ")
            } else {
                format!("  {s} ")
            }
        } else {
            s.to_owned()
        }
    }

    fn email(&mut self, local: &str) -> String {
        if self.is(MalformedEmail) {
            self.rng
                .pick(&[
                    format!("{local}.example.com"),
                    format!("{local}@"),
                    format!("{local} at example dot com"),
                ])
                .clone()
        } else {
            format!("{local}@{}", self.rng.pick(&DOMAINS))
        }
    }
}

pub struct TableSpec {
    pub name: &'static str,
    /// The table it becomes in the modern schema.
    pub target: &'static str,
    /// Rows at scale 1.0.
    pub base_rows: i64,
    /// A lookup table, the same size at every scale.
    pub fixed: bool,
    pub columns: &'static [&'static str],
    pub faults: &'static [FaultKind],
    pub row: fn(&mut RowCtx<'_>, &mut Line<'_>),
}

const FIRST: [&str; 16] = [
    "Ana", "Ben", "Chloé", "David", "Elena", "Farid", "Grace", "Hugo", "Irene", "Jonas", "Kira",
    "Luis", "Maya", "Noah", "Olga", "Pavel",
];
const LAST: [&str; 16] = [
    "Garcia", "Müller", "Smith", "Novak", "Rossi", "Kim", "Dubois", "Silva", "Cohen", "Ivanova",
    "Okafor", "Tanaka", "Nielsen", "Costa", "Weber", "Larsen",
];
const MOJIBAKE: [&str; 4] = ["JosÃ© MÃ¼ller", "FranÃ§oise", "ZoÃ« BrontÃ«", "Ã…sa StrÃ¶m"];
const DOMAINS: [&str; 4] =
    ["example.com", "clinic.example", "mail.example.org", "ortho.example.net"];
const CITIES: [&str; 8] =
    ["Lisbon", "Porto", "Madrid", "Lyon", "Turin", "Graz", "Ghent", "Utrecht"];
const SPECIALTIES: [&str; 5] =
    ["orthodontics", "general dentistry", "prosthodontics", "endodontics", "pediatric dentistry"];

fn name(rng: &mut Rng) -> (&'static str, &'static str) {
    (*rng.pick(&FIRST[..]), *rng.pick(&LAST[..]))
}

fn json_or_bad(c: &mut RowCtx<'_>, good: String) -> String {
    if c.is(BadJson) {
        c.rng.pick(&["{\"steps\": [1, 2", "{'quote': 'single'}", "NaN", "{\"a\": }"]).to_string()
    } else {
        good
    }
}

pub const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "auth_user",
        target: "profiles",
        base_rows: 2_400,
        fixed: false,
        columns: &[
            "id",
            "username",
            "password",
            "email",
            "first_name",
            "last_name",
            "is_active",
            "is_staff",
            "date_joined",
            "last_login",
        ],
        faults: &[EmailCaseCollision, MalformedEmail, WhitespacePadding],
        row: |c, l| {
            let (first, last) = name(&mut c.rng);
            let email = if c.is(EmailCaseCollision) {
                // An earlier user's address with different letter case: unique in the legacy
                // database, a duplicate for the modern one's case-insensitive index.
                match c.earlier_clean("auth_user") {
                    Some(other) => {
                        format!("User.{other}@{}", DOMAINS[(other % 4) as usize]).to_uppercase()
                    }
                    None => format!("user.{}@example.com", c.id),
                }
            } else if c.is(MalformedEmail) {
                c.email(&format!("user.{}", c.id))
            } else {
                format!("user.{}@{}", c.id, DOMAINS[(c.id % 4) as usize])
            };
            let joined = c.ts();
            let login = c.rng.chance(0.8).then(|| joined + c.rng.range(0, 200 * DAY));
            let first = c.padded(first);
            l.int(c.id)
                .text(format!("user{}", c.id))
                .text("pbkdf2_sha256$260000$salt$hash")
                .text(&email);
            l.text(&first)
                .text(last)
                .bool(c.rng.chance(0.95))
                .bool(c.rng.chance(0.05))
                .ts(joined)
                .opt_ts(login)
                .end();
        },
    },
    TableSpec {
        name: "dispatch_office",
        target: "offices",
        base_rows: 48,
        fixed: false,
        columns: &[
            "id",
            "name",
            "address",
            "phone",
            "email",
            "timezone",
            "is_active",
            "created_at",
        ],
        faults: &[WhitespacePadding],
        row: |c, l| {
            let city = *c.rng.pick(&CITIES);
            let name = c.padded(&format!("{city} Dental Lab {}", c.id));
            l.int(c.id).text(&name).text(format!("{} Rua Central, {city}", c.rng.range(1, 400)));
            l.text(format!("+351 21 {:03} {:04}", c.rng.range(100, 999), c.rng.range(0, 9999)));
            l.text(format!("office{}@clinic.example", c.id)).text(c.rng.pick(&[
                "Europe/Lisbon",
                "Europe/Madrid",
                "Europe/Paris",
                "UTC",
            ]));
            let t = c.ts();
            l.int(i64::from(c.rng.chance(0.9))).ts(t).end();
        },
    },
    TableSpec {
        name: "dispatch_profile",
        target: "profiles",
        base_rows: 2_400,
        fixed: false,
        columns: &["id", "user_id", "office_id", "role", "phone", "settings", "created"],
        faults: &[BadJson, InvalidEnum],
        row: |c, l| {
            // Profile n belongs to user n: the modern profiles table merges the two.
            let office = c.rng.chance(0.85).then(|| c.clean("dispatch_office"));
            let role = if c.is(InvalidEnum) {
                *c.rng.pick(&["superuser??", "tech-lead", "intern"])
            } else {
                *c.rng.pick(&[
                    "doctor",
                    "Doctor ",
                    "TECHNICIAN",
                    "technician",
                    "admin",
                    "assistant",
                    "staff",
                ])
            };
            let good = format!("{{\"theme\": \"light\", \"notify\": {}}}", c.rng.chance(0.5));
            let settings = json_or_bad(c, good);
            let t = c.ts();
            l.int(c.id).int(c.id).opt_int(office).text(role);
            l.text(format!("+351 9{:08}", c.rng.range(0, 99_999_999))).text(&settings).ts(t).end();
        },
    },
    TableSpec {
        name: "dispatch_doctor",
        target: "doctors",
        base_rows: 610,
        fixed: false,
        columns: &[
            "id",
            "office_id",
            "profile_id",
            "license_no",
            "specialty",
            "status",
            "created_at",
        ],
        faults: &[DuplicateUnique, InvalidEnum],
        row: |c, l| {
            let license =
                match c.is(DuplicateUnique).then(|| c.earlier_clean("dispatch_doctor")).flatten() {
                    Some(other) => format!("LIC-{other:06}"),
                    None => format!("LIC-{:06}", c.id),
                };
            let status = if c.is(InvalidEnum) {
                c.rng.range(7, 9)
            } else {
                *c.rng.pick(&[1, 1, 1, 1, 0, 2])
            };
            let (office, profile) = (c.clean("dispatch_office"), c.clean("dispatch_profile"));
            let t = c.ts();
            l.int(c.id)
                .int(office)
                .int(profile)
                .text(&license)
                .text(c.rng.pick(&SPECIALTIES))
                .int(status)
                .ts(t)
                .end();
        },
    },
    TableSpec {
        name: "dispatch_patient",
        target: "patients",
        base_rows: 19_500,
        fixed: false,
        columns: &[
            "id",
            "doctor_id",
            "office_id",
            "first_name",
            "last_name",
            "birth_date",
            "email",
            "phone",
            "gender",
            "created_at",
        ],
        faults: &[MalformedEmail, DateOutOfRange, NullRequired, Mojibake, WhitespacePadding],
        row: |c, l| {
            let (first, last) = name(&mut c.rng);
            let first =
                if c.is(Mojibake) { (*c.rng.pick(&MOJIBAKE)).to_owned() } else { c.padded(first) };
            let (doctor, office) = (c.clean("dispatch_doctor"), c.clean("dispatch_office"));
            l.int(c.id)
                .int(doctor)
                .int(office)
                .text(&first)
                .opt_text((!c.is(NullRequired)).then_some(last));
            if c.is(DateOutOfRange) {
                l.raw(if c.rng.chance(0.5) { "0001-01-01" } else { "2999-01-01" });
            } else {
                let birth = c.rng.range(-25_000, 19_000);
                l.date(birth);
            }
            let email = c.rng.chance(0.7).then(|| c.email(&format!("patient{}", c.id)));
            let email = if c.is(MalformedEmail) {
                Some(c.email(&format!("patient{}", c.id)))
            } else {
                email
            };
            l.opt_text(email.as_deref()).text(format!("+351 9{:08}", c.rng.range(0, 99_999_999)));
            let t = c.ts();
            l.text(c.rng.pick(&["M", "F", "U"])).ts(t).end();
        },
    },
    TableSpec {
        name: "dispatch_order",
        target: "orders",
        base_rows: 23_272,
        fixed: false,
        columns: &[
            "id",
            "patient_id",
            "doctor_id",
            "office_id",
            "status",
            "total_cents",
            "currency",
            "notes",
            "created_at",
            "updated_at",
        ],
        faults: &[InvalidEnum, NegativeAmount, OrphanFk],
        row: |c, l| {
            let patient = c.parent("dispatch_patient");
            let (doctor, office) = (c.clean("dispatch_doctor"), c.clean("dispatch_office"));
            let status = if c.is(InvalidEnum) {
                *c.rng.pick(&["on hold", "LOST", "?"])
            } else {
                *c.rng.pick(&[
                    "new",
                    "in_progress",
                    "shipped",
                    "delivered",
                    "delivered",
                    "cancelled",
                    "Delivered",
                    "SHIPPED ",
                ])
            };
            let total = if c.is(NegativeAmount) {
                -c.rng.range(100, 50_000)
            } else {
                c.rng.range(0, 450_000)
            };
            let created = c.ts();
            let updated = c.rng.chance(0.6).then(|| created + c.rng.range(0, 60 * DAY));
            l.int(c.id).int(patient).int(doctor).int(office).text(status).int(total).text("EUR");
            l.opt_text(c.rng.chance(0.3).then_some("rush; call the clinic before shipping"))
                .ts(created)
                .opt_ts(updated)
                .end();
        },
    },
    TableSpec {
        name: "dispatch_product",
        target: "products",
        base_rows: 240,
        fixed: false,
        columns: &["id", "sku", "name", "price", "is_active"],
        faults: &[],
        row: |c, l| {
            let kind = *c.rng.pick(&[
                "Aligner set",
                "Retainer",
                "Night guard",
                "Crown",
                "Bridge",
                "Scan kit",
            ]);
            l.int(c.id)
                .text(format!("SKU-{:05}", c.id))
                .text(format!("{kind} #{}", c.id))
                .cents(c.rng.range(1_000, 250_000));
            l.int(i64::from(c.rng.chance(0.9))).end();
        },
    },
    TableSpec {
        name: "dispatch_jaw",
        target: "jaws",
        base_rows: 31_000,
        fixed: false,
        columns: &["id", "patient_id", "order_id", "kind", "scan_url", "created_at"],
        faults: &[InvalidEnum],
        row: |c, l| {
            let patient = c.clean("dispatch_patient");
            let order = c.rng.chance(0.8).then(|| c.clean("dispatch_order"));
            let kind = if c.is(InvalidEnum) { "both" } else { *c.rng.pick(&["upper", "lower"]) };
            let t = c.ts();
            l.int(c.id)
                .int(patient)
                .opt_int(order)
                .text(kind)
                .text(format!("s3://scans/{}/{}.stl", patient, c.id))
                .ts(t)
                .end();
        },
    },
    TableSpec {
        name: "dispatch_project",
        target: "projects",
        base_rows: 120,
        fixed: false,
        columns: &["id", "name", "description", "status", "created_at"],
        faults: &[],
        row: |c, l| {
            let t = c.ts();
            l.int(c.id)
                .text(format!("Project {}", c.id))
                .opt_text(c.rng.chance(0.5).then_some("clinical study"));
            l.int(c.rng.range(0, 2)).ts(t).end();
        },
    },
    TableSpec {
        name: "dispatch_treatment_plan",
        target: "treatment_plans",
        base_rows: 14_800,
        fixed: false,
        columns: &[
            "id",
            "patient_id",
            "project_id",
            "title",
            "steps",
            "approved",
            "data",
            "created_at",
        ],
        faults: &[BadJson],
        row: |c, l| {
            let patient = c.clean("dispatch_patient");
            let project = c.rng.chance(0.3).then(|| c.clean("dispatch_project"));
            let steps = c.rng.range(4, 40);
            let good = format!(
                "{{\"steps\": {steps}, \"stage\": {}, \"ipr\": {}}}",
                c.rng.range(0, steps),
                c.rng.chance(0.3)
            );
            let data = json_or_bad(c, good);
            let t = c.ts();
            l.int(c.id)
                .int(patient)
                .opt_int(project)
                .text(format!("Plan {}", c.id))
                .int(steps)
                .int(i64::from(c.rng.chance(0.7)));
            l.text(&data).ts(t).end();
        },
    },
    TableSpec {
        name: "dispatch_patient_event",
        target: "patient_events",
        base_rows: 350_000,
        fixed: false,
        columns: &["id", "patient_id", "event_type", "payload", "occurred_at"],
        faults: &[BadJson, DateOutOfRange],
        row: |c, l| {
            let patient = c.clean("dispatch_patient");
            let kind = *c.rng.pick(&["visit", "scan", "photo", "note", "call"]);
            let good =
                format!("{{\"by\": {}, \"ok\": {}}}", c.rng.range(1, 2400), c.rng.chance(0.9));
            let payload = json_or_bad(c, good);
            l.int(c.id).int(patient).text(kind).text(&payload);
            c.ts_or_fault(l);
            l.end();
        },
    },
    TableSpec {
        name: "dispatch_case",
        target: "cases",
        base_rows: 7_854,
        fixed: false,
        columns: &[
            "id",
            "patient_id",
            "doctor_id",
            "title",
            "status",
            "priority",
            "opened_at",
            "closed_at",
        ],
        faults: &[DateOutOfRange],
        row: |c, l| {
            let (patient, doctor) = (c.clean("dispatch_patient"), c.clean("dispatch_doctor"));
            let status = c.rng.range(0, 4);
            l.int(c.id)
                .int(patient)
                .int(doctor)
                .text(format!("Case {}", c.id))
                .int(status)
                .int(c.rng.range(1, 5));
            let opened = c.ts();
            if c.is(DateOutOfRange) {
                l.raw("0001-01-01 00:00:00");
            } else {
                l.ts(opened);
            }
            let closed = (status >= 3).then(|| opened + c.rng.range(DAY, 300 * DAY));
            l.opt_ts(closed).end();
        },
    },
    TableSpec {
        name: "dispatch_case_state",
        target: "case_states",
        base_rows: 5_464,
        fixed: false,
        columns: &["id", "case_id", "state", "changed_at", "note"],
        faults: &[InvalidEnum, NullRequired, OrphanFk],
        row: |c, l| {
            let case = c.parent("dispatch_case");
            let state = if c.is(InvalidEnum) {
                *c.rng.pick(&["on-hold", "waiting for doctor", "ARCHIVED?"])
            } else {
                *c.rng.pick(&[
                    "submitted",
                    "planning",
                    "review",
                    "Approved",
                    "manufacturing",
                    "shipped",
                    "closed",
                ])
            };
            let t = (!c.is(NullRequired)).then(|| c.ts());
            l.int(c.id)
                .int(case)
                .text(state)
                .opt_ts(t)
                .opt_text(c.rng.chance(0.2).then_some("moved by the lab"))
                .end();
        },
    },
    TableSpec {
        name: "dispatch_task",
        target: "tasks",
        base_rows: 768_962,
        fixed: false,
        columns: &[
            "id",
            "case_id",
            "assignee_id",
            "parent_task_id",
            "title",
            "status",
            "due_date",
            "created_at",
            "completed_at",
        ],
        faults: &[OrphanFk, NullRequired],
        row: |c, l| {
            let case = c.parent("dispatch_case");
            let assignee = c.rng.chance(0.9).then(|| c.clean("dispatch_profile"));
            // A third of the tasks are subtasks of an earlier one.
            let parent = if c.rng.chance(0.33) { c.earlier_clean("dispatch_task") } else { None };
            let title = (!c.is(NullRequired)).then(|| {
                *c.rng.pick(&["Review scan", "Design aligners", "QA check", "Ship", "Call doctor"])
            });
            let status = c.rng.range(0, 3);
            let created = c.ts();
            let due = c.rng.chance(0.7).then(|| created / DAY + c.rng.range(1, 30));
            let done = (status == 2).then(|| created + c.rng.range(3600, 20 * DAY));
            l.int(c.id).int(case).opt_int(assignee).opt_int(parent).opt_text(title).int(status);
            match due {
                Some(d) => l.date(d),
                None => l.null(),
            };
            l.ts(created).opt_ts(done).end();
        },
    },
    TableSpec {
        name: "dispatch_case_message",
        target: "case_messages",
        base_rows: 16_165,
        fixed: false,
        columns: &["id", "case_id", "sender_id", "body", "sent_at", "is_read"],
        faults: &[NullRequired, Mojibake],
        row: |c, l| {
            let (case, sender) = (c.clean("dispatch_case"), c.clean("dispatch_profile"));
            let body = if c.is(NullRequired) {
                None
            } else if c.is(Mojibake) {
                Some(format!("Obrigado, {} — confirmado", c.rng.pick(&MOJIBAKE)))
            } else {
                Some(format!("Please check the attached scan for case {case}.\nThanks!"))
            };
            let t = c.ts();
            l.int(c.id)
                .int(case)
                .int(sender)
                .opt_text(body.as_deref())
                .ts(t)
                .int(i64::from(c.rng.chance(0.8)))
                .end();
        },
    },
    TableSpec {
        name: "dispatch_message_attachment",
        target: "message_attachments",
        base_rows: 8_703,
        fixed: false,
        columns: &["id", "message_id", "file_name", "content_type", "size_bytes", "url"],
        faults: &[NegativeAmount],
        row: |c, l| {
            let message = c.clean("dispatch_case_message");
            let size = if c.is(NegativeAmount) {
                -c.rng.range(1, 1000)
            } else {
                c.rng.range(1_000, 30_000_000)
            };
            let (ext, mime) = *c.rng.pick(&[
                ("pdf", "application/pdf"),
                ("jpg", "image/jpeg"),
                ("stl", "model/stl"),
            ]);
            l.int(c.id)
                .int(message)
                .text(format!("attachment_{}.{ext}", c.id))
                .text(mime)
                .int(size);
            l.text(format!("s3://attachments/{}.{ext}", c.id)).end();
        },
    },
    TableSpec {
        name: "dispatch_case_file",
        target: "case_files",
        base_rows: 160_420,
        fixed: false,
        columns: &["id", "case_id", "file_name", "kind", "size_bytes", "uploaded_at"],
        faults: &[NullRequired],
        row: |c, l| {
            let case = c.clean("dispatch_case");
            let file = (!c.is(NullRequired)).then(|| format!("case_{case}_{}.stl", c.id));
            let t = c.ts();
            l.int(c.id)
                .int(case)
                .opt_text(file.as_deref())
                .text(c.rng.pick(&["scan", "photo", "xray", "report"]));
            l.int(c.rng.range(10_000, 80_000_000)).ts(t).end();
        },
    },
    TableSpec {
        name: "dispatch_system_message",
        target: "system_messages",
        base_rows: 2_039_588,
        fixed: false,
        columns: &[
            "id",
            "recipient_id",
            "sender_id",
            "subject",
            "body",
            "level",
            "is_read",
            "created_at",
        ],
        faults: &[OrphanFk, InvalidEnum],
        row: |c, l| {
            let recipient = c.parent("dispatch_profile");
            let sender = c.rng.chance(0.3).then(|| c.clean("dispatch_profile"));
            let level = if c.is(InvalidEnum) {
                "urgent!!"
            } else {
                *c.rng.pick(&["info", "info", "info", "warning", "error"])
            };
            let t = c.ts();
            l.int(c.id).int(recipient).opt_int(sender).text(c.rng.pick(&[
                "Case updated",
                "New message",
                "Payment received",
                "Task due",
            ]));
            l.text("Open agentctl-dispatch to see the details.")
                .text(level)
                .int(i64::from(c.rng.chance(0.7)))
                .ts(t)
                .end();
        },
    },
    TableSpec {
        name: "dispatch_operation",
        target: "operations",
        base_rows: 3_720,
        fixed: false,
        columns: &["id", "office_id", "doctor_id", "kind", "amount", "performed_at"],
        faults: &[NegativeAmount],
        row: |c, l| {
            let (office, doctor) = (c.clean("dispatch_office"), c.clean("dispatch_doctor"));
            let amount = if c.is(NegativeAmount) {
                -c.rng.range(100, 90_000)
            } else {
                c.rng.range(0, 900_000)
            };
            let t = c.ts();
            l.int(c.id)
                .int(office)
                .int(doctor)
                .text(c.rng.pick(&["fitting", "adjustment", "scan", "consult"]))
                .cents(amount)
                .ts(t)
                .end();
        },
    },
    TableSpec {
        name: "dispatch_purchase",
        target: "purchases",
        base_rows: 3_701,
        fixed: false,
        columns: &["id", "doctor_id", "order_id", "amount_cents", "purchased_at"],
        faults: &[OrphanFk],
        row: |c, l| {
            let doctor = c.clean("dispatch_doctor");
            let order = c.parent("dispatch_order");
            let t = c.ts();
            l.int(c.id).int(doctor).int(order).int(c.rng.range(500, 300_000)).ts(t).end();
        },
    },
    TableSpec {
        name: "dispatch_payment",
        target: "payments",
        base_rows: 16_014,
        fixed: false,
        columns: &["id", "order_id", "doctor_id", "amount", "method", "status", "paid_at"],
        faults: &[NegativeAmount, InvalidEnum],
        row: |c, l| {
            let (order, doctor) = (c.clean("dispatch_order"), c.clean("dispatch_doctor"));
            let amount = if c.is(NegativeAmount) {
                -c.rng.range(0, 50_000)
            } else {
                c.rng.range(1, 450_000)
            };
            let method = if c.is(InvalidEnum) {
                "bitcoin"
            } else {
                *c.rng.pick(&["card", "card", "transfer", "cash", "check", "CARD"])
            };
            let t = c.ts();
            l.int(c.id).int(order).int(doctor).cents(amount).text(method).text(c.rng.pick(&[
                "completed",
                "completed",
                "pending",
                "refunded",
                "failed",
            ]));
            l.ts(t).end();
        },
    },
    TableSpec {
        name: "dispatch_offer",
        target: "offers",
        base_rows: 788,
        fixed: false,
        columns: &[
            "id",
            "doctor_id",
            "product_id",
            "price",
            "valid_from",
            "valid_to",
            "created_at",
        ],
        faults: &[DuplicateUnique],
        row: |c, l| {
            // Clean offers enumerate distinct (doctor, product) pairs; a duplicate repeats an
            // earlier clean offer's pair: a doctor with a second offer for one product.
            let pair_of = |w: &World, id: i64| {
                let (d, p) = (w.clean_ids("dispatch_doctor"), w.clean_ids("dispatch_product"));
                let i = (id - 1) as usize;
                (i64::from(d[i % d.len()]), i64::from(p[(i / d.len()) % p.len()]))
            };
            let (doctor, product) =
                match c.is(DuplicateUnique).then(|| c.earlier_clean("dispatch_offer")).flatten() {
                    Some(other) => pair_of(c.world, other),
                    None => pair_of(c.world, c.id),
                };
            let from = c.day();
            let to = c.rng.chance(0.5).then(|| from + c.rng.range(30, 720));
            let t = c.ts();
            l.int(c.id).int(doctor).int(product).cents(c.rng.range(1_000, 200_000)).date(from);
            match to {
                Some(d) => l.date(d),
                None => l.null(),
            };
            l.ts(t).end();
        },
    },
    TableSpec {
        name: "dispatch_discount",
        target: "discounts",
        base_rows: 151,
        fixed: false,
        columns: &[
            "id",
            "offer_id",
            "doctor_id",
            "percent",
            "amount_cents",
            "valid_from",
            "valid_to",
        ],
        faults: &[NullRequired, DateOutOfRange, NegativeAmount],
        row: |c, l| {
            let (offer, doctor) = if c.is(NullRequired) {
                (None, None)
            } else if c.rng.chance(0.6) {
                (Some(c.clean("dispatch_offer")), None)
            } else {
                (None, Some(c.clean("dispatch_doctor")))
            };
            let by_percent = c.rng.chance(0.5);
            let sign = if c.is(NegativeAmount) { -1 } else { 1 };
            let (percent, amount) = if by_percent {
                (Some(sign * c.rng.range(500, 5_000)), None)
            } else {
                (None, Some(sign * c.rng.range(500, 20_000)))
            };
            let from = c.day();
            // A window that ends before it starts.
            let to = if c.is(DateOutOfRange) {
                from - c.rng.range(1, 90)
            } else {
                from + c.rng.range(7, 365)
            };
            l.int(c.id).opt_int(offer).opt_int(doctor);
            match percent {
                Some(p) => l.cents(p),
                None => l.null(),
            };
            l.opt_int(amount).date(from).date(to).end();
        },
    },
    TableSpec {
        name: "dispatch_role",
        target: "roles",
        base_rows: 24,
        fixed: true,
        columns: &["id", "name", "description"],
        faults: &[],
        row: |c, l| {
            l.int(c.id)
                .text(format!("role_{:02}", c.id))
                .opt_text(c.rng.chance(0.5).then_some("granted by the lab manager"))
                .end();
        },
    },
    TableSpec {
        name: "dispatch_role_permission",
        target: "role_permissions",
        base_rows: 1_346,
        fixed: false,
        columns: &["id", "role_id", "permission"],
        faults: &[DuplicateUnique],
        row: |c, l| {
            let (role, perm) = match c
                .is(DuplicateUnique)
                .then(|| c.earlier_clean("dispatch_role_permission"))
                .flatten()
            {
                Some(other) => (role_of(c.world, other), format!("dispatch.perm_{other}")),
                None => (role_of(c.world, c.id), format!("dispatch.perm_{}", c.id)),
            };
            l.int(c.id).int(role).text(&perm).end();
        },
    },
    TableSpec {
        name: "technician_roles",
        target: "technician_roles",
        base_rows: 31,
        fixed: true,
        columns: &["id", "name", "description", "level", "is_active"],
        faults: &[WhitespacePadding],
        row: |c, l| {
            let name = c.padded(&format!("Technician level {}", c.id));
            l.int(c.id)
                .text(&name)
                .opt_text(c.rng.chance(0.6).then_some("can sign off on aligner designs"));
            l.int(1 + (c.id - 1) % 10).int(i64::from(c.rng.chance(0.9))).end();
        },
    },
];

/// A role permission's role: a pure function of its id, so a duplicate can repeat it.
fn role_of(world: &World, id: i64) -> i64 {
    let roles = world.clean_ids("dispatch_role");
    i64::from(roles[(id as usize * 7) % roles.len()])
}

pub fn spec(name: &str) -> Option<&'static TableSpec> {
    TABLES.iter().find(|t| t.name == name)
}
