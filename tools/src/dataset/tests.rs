use super::faults::{FaultKind, FaultProfile};
use super::spec::TABLES;
use super::World;

fn bytes(world: &World) -> Vec<u8> {
    let mut out = Vec::new();
    for t in TABLES {
        world.write_rows(t, 1, world.rows(t.name), &mut out);
    }
    out
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_another_seed_does_not() {
    let profile = FaultProfile::production();
    let a = bytes(&World::build(0.002, 42, &profile).unwrap());
    let b = bytes(&World::build(0.002, 42, &profile).unwrap());
    let c = bytes(&World::build(0.002, 43, &profile).unwrap());
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn every_row_is_clean_or_carries_exactly_one_counted_fault() {
    let world = World::build(0.05, 7, &FaultProfile::production()).unwrap();
    let report = world.report(0.05, &Default::default());
    for t in &report.tables {
        let faulty: i64 = t.faults.values().sum();
        assert_eq!(t.clean + faulty, t.rows, "{}", t.table);
        if let (Some(m), Some(r)) = (t.expected_migrated, t.expected_rejected) {
            assert_eq!(m + r, t.rows, "{}", t.table);
        }
    }
    let offers = report.tables.iter().find(|t| t.table == "dispatch_offer").unwrap();
    let dup = offers.faults[&FaultKind::DuplicateUnique] as f64 / offers.rows as f64;
    assert!((0.4..0.6).contains(&dup), "offers lose about half: {dup}");
}

#[test]
fn row_counts_follow_the_scale_with_a_floor_and_fixed_lookups() {
    let full = World::build(1.0, 1, &FaultProfile::clean()).unwrap();
    assert_eq!(full.rows("dispatch_system_message"), 2_039_588);
    assert_eq!(full.rows("dispatch_task"), 768_962);
    let total: i64 = TABLES.iter().map(|t| full.rows(t.name)).sum();
    assert!(total >= 3_470_000, "{total}");
    let tiny = World::build(0.0001, 1, &FaultProfile::clean()).unwrap();
    assert_eq!(tiny.rows("dispatch_discount"), 5);
    assert_eq!(tiny.rows("technician_roles"), 31);
}

#[test]
fn bad_profiles_are_refused_with_the_reason() {
    let e = FaultProfile::clean()
        .with_overrides("[dispatch_office]\norphan_fk = 0.1\n", "f.toml")
        .map(|p| World::build(1.0, 1, &p).err());
    assert_eq!(
        e.unwrap().unwrap().0,
        "the fault profile gives dispatch_office `orphan_fk`, which that table cannot carry (it \
            can: whitespace_padding)"
    );
    let e = FaultProfile::clean()
        .with_overrides("[dispatch_offer]\nduplicate_unique = 1.5\n", "f.toml")
        .unwrap_err();
    assert_eq!(
        e.0,
        "f.toml: [dispatch_offer] duplicate_unique = 1.5 is not a rate between 0 and 1"
    );
    let e = FaultProfile::clean()
        .with_overrides("[dispatch_offer]\nduplicates = 0.5\n", "f.toml")
        .unwrap_err();
    assert!(e.0.starts_with("f.toml: [dispatch_offer]: unknown fault kind `duplicates`"), "{e}");
    assert!(World::build(0.0, 1, &FaultProfile::clean()).is_err());
}
