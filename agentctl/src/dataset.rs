//! `agentctl dataset` and `agentctl demo`: the reference legacy database, and the whole job on
//! a private PostgreSQL cluster.

use std::path::PathBuf;

use agents::orchestrator::PlanGoal;
use runtime::config::{Config, DbFlags, Vars};
use tools::cluster::{ensure_database, DaemonCluster};
use tools::dataset::faults::FaultProfile;
use tools::dataset::{self, DatasetReport, GenerateOptions, World};

use crate::cli::{BenchCmd, DatasetCmd, DatasetShape, DemoOpts, Format};
use crate::exit::Exit;
use crate::print_json;
use crate::session::{Connections, Session, SessionOptions};

fn profile(shape: &DatasetShape) -> Result<FaultProfile, Exit> {
    if shape.no_faults {
        return Ok(FaultProfile::clean());
    }
    let base = FaultProfile::production();
    match &shape.faults {
        None => Ok(base),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Exit::config(format!("reading {}: {e}", path.display())))?;
            base.with_overrides(&text, &path.display().to_string()).map_err(Exit::config)
        }
    }
}

pub async fn dataset(config: &Config, cmd: DatasetCmd) -> Result<(), Exit> {
    match cmd {
        DatasetCmd::Faults { shape, format } => {
            let world = World::build(shape.scale, shape.seed, &profile(&shape)?).map_err(Exit::config)?;
            let report = world.report(shape.scale, &Default::default());
            match format {
                Format::Json => print_json(&report),
                Format::Text => print!("{}", report.render()),
            }
            Ok(())
        }
        DatasetCmd::Generate { shape, replace, format } => {
            let opts = GenerateOptions { scale: shape.scale, seed: shape.seed, faults: profile(&shape)?, replace };
            let source = tools::pg::connect(config.source().map_err(Exit::config)?, 4).await.map_err(Exit::config)?;
            let target = match &config.target {
                Some(url) => Some(tools::pg::connect(url, 2).await.map_err(Exit::config)?),
                None => None,
            };
            let report = dataset::generate(&source, &opts, |line| eprintln!("  {line}")).await.map_err(Exit::failed)?;
            if let Some(target) = &target {
                dataset::apply_target_schema(target, replace).await.map_err(Exit::failed)?;
            }
            match format {
                Format::Json => print_json(&report),
                Format::Text => {
                    print!("{}", report.render());
                    println!("generated in {:.1}s", report.seconds);
                    if target.is_some() {
                        println!("the modern target schema is in place; next: agentctl plan --goal \"migrate everything\"");
                    }
                }
            }
            Ok(())
        }
    }
}

fn demo_dir(opts: &DemoOpts) -> PathBuf {
    if let Some(dir) = &opts.data_dir {
        return dir.clone();
    }
    if let Some(dir) = std::env::var_os("AGENTCTL_DEMO_DIR") {
        return PathBuf::from(dir);
    }
    let root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    match std::env::var_os("HOME") {
        // Root's home is closed to the postgres user the server runs as.
        Some(home) if !root => PathBuf::from(home).join(".local/share/agentctl/demo"),
        _ => PathBuf::from("/var/lib/agentctl/demo"),
    }
}

pub async fn demo(opts: DemoOpts) -> Result<(), Exit> {
    let dir = demo_dir(&opts);
    if opts.fresh && dir.exists() {
        if let Ok((old, _)) = DaemonCluster::open(&dir) {
            old.stop().map_err(Exit::failed)?;
        }
        std::fs::remove_dir_all(&dir).map_err(|e| Exit::failed(format!("removing {}: {e}", dir.display())))?;
    }
    let (cluster, created) = tokio::task::block_in_place(|| DaemonCluster::open(&dir)).map_err(Exit::config)?;
    println!("PostgreSQL {} in {} on port {}", if created { "created" } else { "reused" }, dir.display(), cluster.port);
    let admin_cfg =
        Config::resolve(&DbFlags { source: None, target: Some(cluster.url("postgres")) }, &Vars::default()).map_err(Exit::config)?;
    let admin = tools::pg::connect(admin_cfg.target().map_err(Exit::config)?, 1).await.map_err(Exit::failed)?;
    for db in ["legacy", "modern"] {
        ensure_database(&admin, db).await.map_err(Exit::failed)?;
    }
    admin.close().await;
    let config = Config::resolve(&DbFlags { source: Some(cluster.url("legacy")), target: Some(cluster.url("modern")) }, &Vars::default())
        .map_err(Exit::config)?;
    let conns = Connections::open(&config, true).await?;
    let source = conns.source.clone().expect("opened with the source");

    // Regenerate only when the stamped dataset is not the one asked for.
    let wanted = World::build(opts.scale, opts.seed, &FaultProfile::production()).map_err(Exit::config)?;
    let expected = wanted.report(opts.scale, &Default::default());
    let stamp = dataset::stamp(&source).await.map_err(Exit::failed)?;
    let same = stamp.as_ref().is_some_and(|s| s["scale"] == serde_json::json!(opts.scale) && s["seed"] == serde_json::json!(opts.seed));
    let report: DatasetReport = if same {
        println!("reference dataset already loaded (scale {}, seed {})", opts.scale, opts.seed);
        expected
    } else {
        println!("generating the reference dataset at scale {} ...", opts.scale);
        let gen = GenerateOptions { scale: opts.scale, seed: opts.seed, faults: FaultProfile::production(), replace: true };
        let r = dataset::generate(&source, &gen, |line| println!("  {line}")).await.map_err(Exit::failed)?;
        println!("  {} rows in {:.1}s ({:.0} rows/s)", r.rows, r.seconds, r.rows as f64 / r.seconds);
        r
    };
    dataset::apply_target_schema(&conns.target, true).await.map_err(Exit::failed)?;
    let control = tools::control::ControlStore::open(conns.target.clone()).await.map_err(Exit::failed)?;
    control.forget_migrated_rows().await.map_err(Exit::failed)?;
    println!("\nWhat the legacy data holds, and what a migration must do with it:\n{}", report.render());

    let (mapping, mapping_origin) = crate::plan_run::mapping_file(&Default::default(), &conns).await?;
    let session = Session::start(&conns, "demo", Some("migrate everything"), conns.tools()?, SessionOptions::from_config(&config)).await?;
    let goal = PlanGoal { goal: "migrate everything".into(), only: false, mapping, mapping_origin, batch_size: None };
    let work = async {
        let planned = session.plan(goal).await.map_err(Exit::failed)?;
        println!("{}\n", planned.explanation);
        print!("{}", agents::planning::render(&planned.plan));
        session.operator_decision(
            format!("approved plan {} for the demo", &planned.hash[..12]),
            "the demo migrates its own private databases",
            serde_json::json!({"hash": planned.hash}),
        );
        let results = session.execute(&planned, 4).await.map_err(Exit::failed)?;
        Ok::<_, Exit>(results)
    };
    let result = crate::interruptible(work, session.run_id).await;
    let run_id = session.run_id;
    let results = crate::plan_run::end(session, result, "succeeded").await?;
    crate::plan_run::print_results(&results, run_id);
    println!("\nThe whole run is in the audit trail: agentctl --target {} audit show {run_id}\n", cluster.url("modern"));
    println!("Look around:\n  psql -h 127.0.0.1 -p {} -U postgres -d legacy   # the legacy data\n  psql -h 127.0.0.1 -p {} -U postgres -d modern   # the target schema and agentctl's control tables\nStop the server:\n  {}", cluster.port, cluster.port, cluster.stop_command());
    Ok(())
}

pub async fn bench(config: &Config, cmd: BenchCmd) -> Result<(), Exit> {
    match cmd {
        BenchCmd::Uuid { rows, format } => {
            let target = tools::pg::connect(config.target().map_err(Exit::config)?, 1).await.map_err(Exit::config)?;
            let figures = tools::bench::uuid_layouts(&target, rows).await.map_err(Exit::failed)?;
            match format {
                Format::Json => print_json(&figures),
                Format::Text => {
                    for f in &figures {
                        println!(
                            "{:<8} {:>9} rows in {:>6.2}s  {:>9.0} rows/s  primary key index {:>5} MiB",
                            format!("{:?}", f.layout).to_lowercase(),
                            f.rows,
                            f.seconds,
                            f.rows_per_second,
                            f.index_bytes >> 20
                        );
                    }
                }
            }
            Ok(())
        }
    }
}
