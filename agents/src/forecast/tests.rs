use runtime::mapping::MappingFile;

use super::forecast;
use crate::data_mapping::build;
use crate::fake::{legacy, modern, name, MemRows};

#[tokio::test]
async fn the_forecast_names_every_row_the_target_would_refuse_and_why() {
    let (source, target) = (legacy(), modern());
    let set = build(&source, &target, &MappingFile::default()).unwrap();
    let rows = MemRows::default()
        .with(
            "dispatch_role",
            &["id", "name", "kind"],
            &[
                &[Some("1"), Some("Field"), Some("field")],
                &[Some("2"), None, Some("office")],
                &[Some("3"), Some("Office"), Some("office")],
            ],
        )
        .with(
            "dispatch_technician",
            &["id", "name", "role_id", "email"],
            &[
                &[Some("10"), Some("Ada"), Some("1"), Some("ada@example.org")],
                // Its role is refused (no name): it cannot point at it.
                &[Some("11"), Some("Bob"), Some("2"), None],
                // No role 9 at all.
                &[Some("12"), Some("Cy"), Some("9"), None],
                // The same email as Ada: the unique key refuses the second.
                &[Some("13"), Some("Di"), Some("3"), Some("ada@example.org")],
                &[Some("14"), Some("Ed"), Some("3"), Some("ed@example.org")],
            ],
        );
    let order = [name("dispatch_role"), name("dispatch_technician")];
    let forecasts =
        forecast(&order, &set, &target, &rows).await.expect("the forecast reads every row");
    let (roles, technicians) = (&forecasts[0].1, &forecasts[1].1);
    assert_eq!((roles.rows, roles.migrate, roles.reject), (3, 2, 1));
    assert_eq!((technicians.rows, technicians.migrate, technicians.reject), (5, 2, 3));
    let rules: Vec<(&str, i64)> =
        technicians.reasons.iter().map(|r| (r.rule.as_str(), r.count)).collect();
    assert_eq!(rules.iter().map(|(_, n)| n).sum::<i64>(), 3, "{rules:?}");
    assert!(rules.iter().any(|(rule, _)| rule.starts_with("unique")), "{rules:?}");
    // The two references fail for two causes: a line each, its words true of its rows.
    let references: Vec<(String, Vec<String>)> = technicians
        .reasons
        .iter()
        .filter(|r| r.rule.starts_with("reference"))
        .map(|r| (r.reason.clone(), r.examples.clone()))
        .collect();
    assert_eq!(references.len(), 2, "{references:?}");
    for (why, example) in [("is itself rejected", "11"), ("does not exist in the source", "12")] {
        assert!(
            references.iter().any(|(r, e)| r.contains(why) && e == &[example.to_owned()]),
            "{why}: {references:?}"
        );
    }
}

#[test]
fn a_group_of_references_names_a_parent_only_while_every_row_points_at_it() {
    let mut words = "remark.about_id: the remark row it points at (999) is not migrated".to_owned();
    super::joined(&mut words, "remark.about_id: the remark row it points at (999) is not migrated");
    assert_eq!(words, "remark.about_id: the remark row it points at (999) is not migrated");
    super::joined(&mut words, "remark.about_id: the remark row it points at (48) is not migrated");
    assert_eq!(words, "remark.about_id: the remark row it points at is not migrated");
    super::joined(&mut words, "remark.about_id: the remark row it points at (7) is not migrated");
    assert_eq!(words, "remark.about_id: the remark row it points at is not migrated");
}
