use std::sync::Arc;

use runtime::domain::{Inclusion, PlannedEntity, TableName};
use runtime::mapping::{MappingFile, MappingSet};
use runtime::ports::Target;

use super::migrate_restarting;
use crate::data_mapping::build;
use crate::fake::{context, legacy, modern, name, MemRows, MemTarget};
use crate::pipeline::MigrateEntity;

fn source() -> MemRows {
    MemRows::default()
        .with(
            "dispatch_role",
            &["id", "name", "kind"],
            &[
                &[Some("1"), Some("Field"), Some("field")],
                // No name: the target's NOT NULL refuses it.
                &[Some("2"), None, Some("office")],
                &[Some("3"), Some("Office"), Some("OFFICE")],
            ],
        )
        .with(
            "dispatch_technician",
            &["id", "name", "role_id", "email"],
            &[
                &[Some("10"), Some("Ada"), Some("1"), Some("ada@example.org")],
                // Its role is refused: the target holds no row to point at.
                &[Some("11"), Some("Bob"), Some("2"), None],
                // No role 9 at all.
                &[Some("12"), Some("Cy"), Some("9"), None],
                &[Some("13"), Some("Di"), Some("3"), Some("di@example.org")],
                &[Some("14"), Some("Ed"), Some("3"), None],
            ],
        )
}

/// The entity of a source table as the plan hands it to the execution agent, two rows a batch.
fn entity(set: &MappingSet, table: &str, parents: &[(&str, &str)]) -> MigrateEntity {
    let spec = set.spec(&name(table)).expect("mapped").clone();
    MigrateEntity {
        entity: PlannedEntity {
            table: name(table),
            target: Some(spec.target.clone()),
            inclusion: Inclusion::Requested,
            estimated_rows: 0,
            bytes: 0,
            batch_size: 2,
            forecast: None,
            deferred_foreign_keys: vec![],
            later_parents: vec![],
            scripts: vec![],
        },
        spec,
        parents: parents.iter().map(|(s, t)| (name(s), name(t))).collect::<Vec<(TableName, _)>>(),
        keys: set.keys,
        target: modern(),
        constraints_suspended: false,
    }
}

#[tokio::test]
async fn every_row_is_migrated_or_rejected_with_its_reason_and_the_validation_proves_it() {
    let file = MappingFile::parse(
        "[entities.dispatch_role.columns]\nkind = { from = \"kind\", transforms = [\"lower\"] }\n",
        "memory.toml",
    )
    .unwrap();
    let set = build(&legacy(), &modern(), &file).unwrap();
    let (ctx, rows) = (context().await.0, Arc::new(source()));
    let memory = Arc::new(MemTarget::default());
    let target: Arc<dyn Target> = memory.clone();
    let roles = entity(&set, "dispatch_role", &[]);
    let technicians = entity(&set, "dispatch_technician", &[("dispatch_role", "roles")]);

    let done = migrate_restarting(&ctx, rows.clone(), target.clone(), &roles).await.unwrap();
    assert_eq!((done.rows_read, done.migrated, done.rejected, done.target_rows), (3, 2, 1, 2));
    assert_eq!(done.rejected_by_rule.get("not_null"), Some(&1), "{:?}", done.rejected_by_rule);
    let done = migrate_restarting(&ctx, rows.clone(), target.clone(), &technicians).await.unwrap();
    assert_eq!((done.rows_read, done.migrated, done.rejected, done.target_rows), (5, 3, 2, 3));
    assert_eq!(done.batches, 3, "two rows a batch");
    let mut refused = memory.rejected(&name("dispatch_technician"));
    refused.sort();
    assert_eq!(refused, [("11".into(), "reference".into()), ("12".into(), "reference".into())]);
    assert_eq!(memory.entity_state(&name("dispatch_technician")).as_deref(), Some("done"));

    // Each technician points at the UUID its role got.
    let role_ids: Vec<(String, String)> =
        memory.rows(&name("roles")).into_iter().map(|r| (r.legacy, r.id)).collect();
    for t in memory.rows(&name("technicians")) {
        let role = t.values["role_id"].clone().expect("a role");
        assert!(role_ids.iter().any(|(_, id)| *id == role), "{t:?} points at {role_ids:?}");
    }

    // Carried on again, the same run writes nothing twice.
    let again = migrate_restarting(&ctx, rows.clone(), target.clone(), &technicians).await.unwrap();
    assert_eq!((again.migrated, again.rejected, again.target_rows), (3, 2, 3));

    for req in [&roles, &technicians] {
        let proof = crate::validation::validate(&ctx, rows.clone(), target.clone(), req).await;
        let proof = proof.unwrap();
        assert!(proof.passed, "{}", proof.detail);
        assert_eq!(proof.source_rows, proof.migrated + proof.rejected);
    }
    let proof = crate::validation::validate(&ctx, rows.clone(), target.clone(), &technicians);
    let links = proof.await.unwrap().links;
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!((links[0].source, links[0].target), (3, 3));
}

#[tokio::test]
async fn a_row_changed_in_the_target_fails_the_validation_by_its_key() {
    let set = build(&legacy(), &modern(), &MappingFile::default()).unwrap();
    let (ctx, rows) = (context().await.0, Arc::new(source()));
    let memory = Arc::new(MemTarget::default());
    let target: Arc<dyn Target> = memory.clone();
    let mut roles = entity(&set, "dispatch_role", &[]);
    // The inferred mapping matches "OFFICE" to the enum's label by itself.
    let done = migrate_restarting(&ctx, rows.clone(), target.clone(), &roles).await.unwrap();
    assert_eq!((done.migrated, done.rejected), (2, 1));
    // The same rows proven against a mapping that writes names in capitals: they differ.
    roles.spec.columns.iter_mut().filter(|c| c.target == "name").for_each(|c| {
        c.transforms.push(runtime::mapping::Transform::Upper);
    });
    let proof = crate::validation::validate(&ctx, rows, target, &roles).await.unwrap();
    assert!(!proof.passed);
    assert_eq!(proof.rows_differing, 2, "{}", proof.detail);
    let keys: Vec<&str> = proof.differences.iter().map(|d| d.legacy_key.as_str()).collect();
    assert_eq!(keys, ["1", "3"]);
    assert_eq!(proof.differences[0].column, "name");
}
