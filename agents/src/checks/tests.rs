use super::{impossible_date, parse_time, read_time, CheckExpr, TimeKind, Val};

fn eval(check: &str, cols: &[(&str, Val)]) -> Option<bool> {
    let parsed = CheckExpr::parse(check).unwrap_or_else(|e| panic!("{check}: {e}"));
    parsed.holds(&|name: &str| {
        cols.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()).unwrap_or(Val::Null)
    })
}

fn ts(s: &str) -> Val {
    Val::Time(parse_time(s).unwrap())
}

#[test]
fn what_postgres_prints_is_understood() {
    use Val::*;
    assert_eq!(eval("(name <> ''::text)", &[("name", Text("Lab".into()))]), Some(true));
    assert_eq!(eval("(name <> ''::text)", &[("name", Text(String::new()))]), Some(false));
    assert_eq!(eval("(total >= 0::numeric)", &[("total", Num(-0.01))]), Some(false));
    assert_eq!(eval("(priority >= 1 AND priority <= 5)", &[("priority", Num(5.0))]), Some(true));
    let dob = "(date_of_birth >= '1900-01-01'::date AND date_of_birth <= '2030-01-01'::date)";
    assert_eq!(eval(dob, &[("date_of_birth", ts("0001-01-01"))]), Some(false));
    assert_eq!(eval(dob, &[("date_of_birth", ts("1984-02-29"))]), Some(true));
    let closed = "(closed_at IS NULL OR closed_at::timestamp with time zone >= \
        opened_at::timestamp with time zone)";
    assert_eq!(eval(closed, &[("opened_at", ts("2020-01-01 10:00:00"))]), Some(true));
    assert_eq!(
        eval(closed, &[("opened_at", ts("2020-01-02")), ("closed_at", ts("2020-01-01"))]),
        Some(false)
    );
    assert_eq!(eval("(offer_id IS NOT NULL OR doctor_id IS NOT NULL)", &[]), Some(false));
    assert_eq!(
        eval("((percent IS NULL) <> (amount IS NULL))", &[("percent", Num(5.0))]),
        Some(true)
    );
    assert_eq!(
        eval(
            "((percent IS NULL) <> (amount IS NULL))",
            &[("percent", Num(5.0)), ("amount", Num(1.0))]
        ),
        Some(false)
    );
    assert_eq!(
        eval(
            "(valid_to > valid_from)",
            &[("valid_from", ts("2021-03-01")), ("valid_to", ts("2021-02-01"))]
        ),
        Some(false)
    );
    let email = r"(VALUE ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$'::text)";
    assert_eq!(eval(email, &[("VALUE", Text("a@b.co".into()))]), Some(true));
    assert_eq!(eval(email, &[("VALUE", Text("a at b dot co".into()))]), Some(false));
    let plausible =
        "(VALUE >= '1990-01-01 00:00:00+00'::timestamp with time zone AND VALUE < '2100-01-01 \
            00:00:00+00'::timestamp with time zone)";
    assert_eq!(eval(plausible, &[("VALUE", ts("2999-12-31 00:00:00"))]), Some(false));
    assert_eq!(eval(plausible, &[("VALUE", ts("2019-06-01 12:30:00"))]), Some(true));
    let any =
        "(VALUE::text = ANY (ARRAY['YES'::character varying, 'NO'::character varying]::text[]))";
    assert_eq!(eval(any, &[("VALUE", Text("NO".into()))]), Some(true));
    assert_eq!(eval(any, &[("VALUE", Text("MAYBE".into()))]), Some(false));
    // A varchar column's IN and NOT IN, as PostgreSQL 15 prints them.
    let list = "((ARRAY['S3'::character varying, 'S4'::character varying])::text[])";
    let not_in = format!("((sku)::text <> ALL {list})");
    assert_eq!(eval(&not_in, &[("sku", Text("S4".into()))]), Some(false));
    assert_eq!(eval(&not_in, &[("sku", Text("S9".into()))]), Some(true));
    let is_in = format!("((sku)::text = ANY {list})");
    assert_eq!(eval(&is_in, &[("sku", Text("S3".into()))]), Some(true));
    assert_eq!(eval(&is_in, &[("sku", Text("S9".into()))]), Some(false));
    // NULL in the list: NOT IN is unknown for a value not in it, and passes.
    let with_null = "(code <> ALL (ARRAY['a'::text, NULL::text]))";
    assert_eq!(eval(with_null, &[("code", Text("b".into()))]), None);
    assert_eq!(eval(with_null, &[("code", Text("a".into()))]), Some(false));
    assert_eq!(eval("(lower(email) <> ''::text)", &[("email", Text("X".into()))]), Some(true));
}

#[test]
fn null_never_fails_a_check() {
    assert_eq!(eval("(total >= 0::numeric)", &[]), None);
    assert_eq!(eval("(priority >= 1 AND priority <= 5)", &[]), None);
}

#[test]
fn what_it_cannot_read_is_said_not_guessed() {
    assert!(CheckExpr::parse("(my_func(x) > 0)").unwrap_err().0.contains("my_func"));
    assert!(CheckExpr::parse("(x > ").is_err());
}

#[test]
fn times_are_read_in_the_servers_own_form_only_and_as_their_type_keeps_them() {
    let at = |s: &str, kind| read_time(s, kind);
    let noon = parse_time("2024-02-29 12:00:00").expect("the server's form");
    assert_eq!(parse_time("2024-02-29T12:00"), Some(noon));
    assert_eq!(parse_time("2024-02-29 12:00:00+00"), Some(noon), "UTC is any kind's reading");
    assert_eq!(at("2024-02-29 12:00:00", TimeKind::Date), parse_time("2024-02-29"));
    assert_eq!(at("2024-02-29 14:30:00+02:30", TimeKind::Timestamptz), Some(noon));
    assert_eq!(
        at("2024-02-29 12:00:00", TimeKind::Timestamptz),
        None,
        "an instant without a zone is the target session's to read"
    );
    assert_eq!(
        at("2024-02-29 12:00:00-05", TimeKind::Timestamp),
        Some(noon),
        "a timestamp without time zone ignores the zone"
    );
    assert_eq!(parse_time("2024-02-29 12:00:00-05"), None, "the kind decides what a zone means");
    // Forms the server reads and this does not: not read, so never judged.
    for s in [
        "infinity",
        "-infinity",
        "0044-03-15 BC",
        "0044-03-15 12:00:00 BC",
        "12020-01-01 00:00:00",
        "2024-1-5",
        "Jan 5 2024",
        "2024-01-05 10:00:00 Europe/Paris",
        "2024-01-05 10:00:00.1234567",
        "2024-01-05 24:00:00",
    ] {
        for kind in [TimeKind::Date, TimeKind::Timestamp, TimeKind::Timestamptz] {
            assert_eq!(at(s, kind), None, "{s} as {kind:?}");
        }
        assert!(!impossible_date(s), "{s} may be a time");
    }
    for s in ["2024-13-01", "2024-02-30", "2023-04-31 10:00", "2024-00-10", "2024-01-32"] {
        assert!(impossible_date(s), "{s} is no day of any calendar");
    }
    assert!(!impossible_date("2023-02-29"), "a February 29 is left to the server");
}

#[test]
fn texts_compare_by_equality_only_ordering_is_the_collations() {
    use Val::*;
    let code = |v: &str| [("code", Text(v.into()))];
    assert_eq!(eval("(code <> 'X'::text)", &code("Y")), Some(true));
    assert_eq!(eval("(code = 'X'::text)", &code("Y")), Some(false));
    assert_eq!(eval("(code > 'M'::text)", &code("a")), None, "en_US and C disagree on this");
}
