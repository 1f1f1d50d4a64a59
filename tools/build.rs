// `sqlx::migrate!` embeds tools/migrations at compile time; a migration added without touching
// any Rust file must still rebuild the crate.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
