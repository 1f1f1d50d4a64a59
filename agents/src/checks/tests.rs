use super::{any_time, canonical_time, parse_time, CheckExpr, Val};

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
fn the_fast_time_reader_agrees_with_the_general_one() {
    let samples = [
        "2024-02-29",
        "2024-02-29 13:45:07",
        "2024-02-29T13:45:07.5",
        "1999-12-31 23:59:59.999999+00",
        "2001-03-04 05:06:07.123-05:30",
        "2021-03-04 05:06:07 UTC",
        "2021-03-04 05:06:07Z",
        "0001-01-01 00:00:00",
        "2024-01-05 10:00",
    ];
    for s in samples {
        assert_eq!(canonical_time(s), any_time(s), "{s}");
        assert!(canonical_time(s).is_some(), "{s} takes the fast path");
    }
    // Not the server's form: the general reader decides.
    for s in [
        "2024-1-5",
        "2024-01-05 7:05",
        "2024-01-05 10:00:00.1234567",
        "2024-13-01",
        "2024-02-30",
        "2024-01-05 24:00:00",
        "2024-01-05 10:00:00 Europe/Paris",
    ] {
        assert_eq!(canonical_time(s), None, "{s}");
    }
    assert_eq!(parse_time(" 2024-1-5 "), any_time("2024-1-5"));
    assert_eq!(
        parse_time("2024-01-05 10:00:00 Europe/Paris"),
        canonical_time("2024-01-05 10:00:00"),
        "the zone is ignored"
    );
}
