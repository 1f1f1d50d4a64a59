//! The sandbox image: `sandbox/Dockerfile` on a slim Python base pulled from a registry, or,
//! with no registry (this project's machines have none), on a minimal Debian root filesystem
//! made by debootstrap and imported. Tagged by the Dockerfile's hash, so a build is reused until
//! the Dockerfile changes.

use std::collections::HashMap;
use std::time::Instant;

use bollard::query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder};
use bollard::Docker;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::engine::{engine, image_present};
use crate::{docker_err, Error, Result};

const DOCKERFILE: &str = include_str!("../Dockerfile");
const REPOSITORY: &str = "agentctl-sandbox";
/// The base a registry provides.
const REGISTRY_BASE: &str = "python:3.12-slim";
/// The base made offline, tagged by the Debian release it holds.
const OFFLINE_BASE: &str = "agentctl-sandbox-base:bookworm";

/// The image's name: `agentctl-sandbox:` and the first 12 hex digits of the Dockerfile's hash.
pub fn tag() -> String {
    let hash = hex::encode(Sha256::digest(DOCKERFILE.as_bytes()));
    format!("{REPOSITORY}:{}", &hash[..12])
}

#[derive(Debug, serde::Serialize)]
pub struct Built {
    pub image: String,
    /// It was there already.
    pub reused: bool,
    /// The base it was built on, when it was built.
    pub base: Option<String>,
    pub seconds: f64,
}

/// Where the offline path gets Debian's packages.
fn mirror() -> String {
    std::env::var("AGENTCTL_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".to_owned())
}

/// Builds the image unless it is there; says what it does through `say`.
pub async fn build(say: &(dyn Fn(&str) + Sync)) -> Result<Built> {
    let started = Instant::now();
    let docker = engine().await?;
    let image = tag();
    if image_present(&docker, &image).await? {
        return Ok(Built {
            image,
            reused: true,
            base: None,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let base = match pull(&docker, REGISTRY_BASE).await {
        Ok(()) => REGISTRY_BASE.to_owned(),
        Err(reason) => {
            say(&format!("no registry ({reason}); building the base offline"));
            offline_base(&docker, say).await?;
            OFFLINE_BASE.to_owned()
        }
    };
    say(&format!("building {image} on {base}"));
    dockerfile_build(&docker, &image, &base).await?;
    Ok(Built { image, reused: false, base: Some(base), seconds: started.elapsed().as_secs_f64() })
}

/// Pulls an image unless it is present; the registry's refusal as a one-line reason.
async fn pull(docker: &Docker, image: &str) -> Result<()> {
    if image_present(docker, image).await? {
        return Ok(());
    }
    let (name, tag) = image.split_once(':').unwrap_or((image, "latest"));
    let options = CreateImageOptionsBuilder::new().from_image(name).tag(tag).build();
    created(docker.create_image(Some(options), None, None)).await
}

/// Follows an image's creation (a pull or an import) to its end; the first error as one line.
async fn created(
    progress: impl futures::Stream<
        Item = std::result::Result<bollard::models::CreateImageInfo, bollard::errors::Error>,
    >,
) -> Result<()> {
    futures::pin_mut!(progress);
    while let Some(step) = progress.next().await {
        let info = step.map_err(docker_err("creating an image"))?;
        if let Some(detail) = info.error_detail {
            return Err(Error::Other(detail.message.unwrap_or_default()));
        }
    }
    Ok(())
}

/// `agentctl-sandbox-base:bookworm`: debootstrap's minimal Debian with python3, imported.
async fn offline_base(docker: &Docker, say: &(dyn Fn(&str) + Sync)) -> Result<()> {
    if image_present(docker, OFFLINE_BASE).await? {
        say(&format!("reusing {OFFLINE_BASE}"));
        return Ok(());
    }
    if which("debootstrap").is_none() {
        return Err(Error::Other(
            "the offline build needs debootstrap (apt-get install debootstrap) and root; or build \
                sandbox/Dockerfile where a registry is reachable"
                .into(),
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("agentctl-sandbox-rootfs-")
        .tempdir_in(std::env::temp_dir())
        .map_err(|e| Error::Other(format!("a directory for the root filesystem: {e}")))?;
    let root = dir.path().join("root");
    let mirror = mirror();
    say(&format!("debootstrap bookworm (minbase + python3) from {mirror}"));
    let out = tokio::process::Command::new("debootstrap")
        .args(["--variant=minbase", "--include=python3", "bookworm"])
        .arg(&root)
        .arg(&mirror)
        .output()
        .await
        .map_err(|e| Error::Other(format!("running debootstrap: {e}")))?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stdout);
        let last = log
            .lines()
            .rev()
            .find(|l| l.starts_with("E:") || l.starts_with("W:"))
            .unwrap_or("see debootstrap's log");
        return Err(Error::Other(format!("debootstrap failed ({}): {last}", out.status)));
    }
    say(&format!("importing the root filesystem as {OFFLINE_BASE}"));
    let mut tar = tokio::process::Command::new("tar")
        .args(["-c", "-f", "-", "-C"])
        .arg(&root)
        .args(["--exclude=./var/cache/apt/archives", "--exclude=./var/lib/apt/lists", "."])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Other(format!("running tar: {e}")))?;
    let stdout = tar.stdout.take().expect("piped stdout");
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(stdout));
    let (repo, tag) = OFFLINE_BASE.split_once(':').expect("name:tag");
    let options = CreateImageOptionsBuilder::new().from_src("-").repo(repo).tag(tag).build();
    created(docker.create_image(Some(options), Some(body), None))
        .await
        .map_err(|e| Error::Other(format!("importing the root filesystem: {e}")))?;
    let status = tar.wait().await.map_err(|e| Error::Other(format!("tar: {e}")))?;
    if !status.success() {
        return Err(Error::Other(format!("tar of the root filesystem failed: {status}")));
    }
    Ok(())
}

/// `docker build` of the Dockerfile with `BASE` set; the context is the Dockerfile alone.
async fn dockerfile_build(docker: &Docker, image: &str, base: &str) -> Result<()> {
    let mut context = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(DOCKERFILE.len() as u64);
    header.set_mode(0o644);
    context
        .append_data(&mut header, "Dockerfile", DOCKERFILE.as_bytes())
        .and_then(|()| context.finish())
        .map_err(|e| Error::Other(format!("build context: {e}")))?;
    let context = context.into_inner().map_err(|e| Error::Other(format!("build context: {e}")))?;
    let args = HashMap::from([("BASE", base)]);
    let options = BuildImageOptionsBuilder::new()
        .dockerfile("Dockerfile")
        .t(image)
        .rm(true)
        .forcerm(true)
        .buildargs(&args)
        .build();
    let mut progress = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut log = String::new();
    while let Some(step) = progress.next().await {
        let info = step.map_err(docker_err(format!("building {image}")))?;
        if let Some(detail) = info.error_detail {
            return Err(Error::Other(format!(
                "building {image}: {}",
                detail.message.unwrap_or_default()
            )));
        }
        if let Some(line) = info.stream {
            log.push_str(&line);
        }
    }
    if !image_present(docker, image).await? {
        let last = log.trim().lines().last().unwrap_or("no output").to_owned();
        return Err(Error::Other(format!("building {image} left no image: {last}")));
    }
    Ok(())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
