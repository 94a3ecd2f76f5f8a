//! Cookies at start and `logtank bookie format`: a bookie serves only directories that were formatted for
//! it, in this cluster, at this address (`logtank_ledger::cookie` says why).

use std::path::{Path, PathBuf};

use logtank_coord::zookeeper_client::Client;
use logtank_ledger::cookie::{cookie_path, read_dir_cookie, Cookie};
use logtank_ledger::{admin, Layout};
use logtank_runtime::daemon::SetupError;

/// What a bookie's identity is made of.
#[derive(Debug, Clone)]
pub struct Identity {
    pub bookie_id: String,
    pub journal_dir: PathBuf,
    pub ledgers_dir: PathBuf,
}

impl Identity {
    fn cookie(&self, instance_id: &str) -> Cookie {
        Cookie::new(&self.bookie_id, instance_id, &self.journal_dir, &self.ledgers_dir)
    }

    fn dirs(&self) -> [&Path; 2] {
        [&self.journal_dir, &self.ledgers_dir]
    }
}

/// Checks the cookies of every directory and of coordination against what this bookie is. Every failure is
/// a [`SetupError`] (exit 78) naming what differs and how to fix it.
pub async fn verify_cookies(
    client: &Client,
    layout: &Layout,
    me: &Identity,
    config_hint: &str,
) -> anyhow::Result<()> {
    let format_hint = format!("logtank bookie format {config_hint}");
    let Some(instance_id) = admin::instance_id(client, layout).await? else {
        return Err(SetupError(format!(
            "{} has no INSTANCEID: the ledgers root is not formatted; run `logtank ledgers metaformat --root {}` \
             once for the cluster, then `{format_hint}`",
            layout.instance_id(),
            layout.root()
        ))
        .into());
    };
    let expected = me.cookie(&instance_id);
    let mut problems = Vec::new();
    let mut found_any = false;
    for dir in me.dirs() {
        match read_dir_cookie(dir)? {
            None => problems.push(format!("{} has no cookie", cookie_path(dir).display())),
            Some(cookie) => {
                found_any = true;
                for d in cookie.differences(&expected) {
                    problems.push(format!("{}: {d}", cookie_path(dir).display()));
                }
            }
        }
    }
    match admin::read_cookie(client, layout, &me.bookie_id).await? {
        None => problems.push(format!(
            "coordination has no cookie at {}",
            layout.cookie(&me.bookie_id)
        )),
        Some(cookie) => {
            for d in cookie.differences(&expected) {
                problems.push(format!("{}: {d}", layout.cookie(&me.bookie_id)));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let fix = if found_any {
        format!(
            "these directories were formatted for another bookie or cluster: point the config at this bookie's \
             own directories and address, or, if their data is not needed, `{format_hint} --force`"
        )
    } else {
        format!("the bookie is not formatted: run `{format_hint}`")
    };
    Err(SetupError(format!(
        "bookie {} refuses to start: {}. {fix}",
        me.bookie_id,
        problems.join("; ")
    ))
    .into())
}

/// What a format did.
#[derive(Debug, Clone)]
pub struct Formatted {
    pub cookie: Cookie,
    /// Files removed (with `force`).
    pub removed: Vec<PathBuf>,
}

/// Writes this bookie's cookie into its directories and into coordination. Refuses directories that hold
/// another cookie or journal data unless `force`, which deletes their contents first (the bookie's entries
/// with them: only for a bookie whose data is not needed).
pub async fn format(
    client: &Client,
    layout: &Layout,
    me: &Identity,
    force: bool,
) -> anyhow::Result<Formatted> {
    let Some(instance_id) = admin::instance_id(client, layout).await? else {
        anyhow::bail!(
            "{} has no INSTANCEID: run `logtank ledgers metaformat --root {}` first",
            layout.instance_id(),
            layout.root()
        );
    };
    let cookie = me.cookie(&instance_id);
    let mut removed = Vec::new();
    for dir in me.dirs() {
        logtank_durable::create_dir_all_durably(dir)?;
        let existing = read_dir_cookie(dir)?;
        let data = data_files(dir)?;
        let same = existing
            .as_ref()
            .is_some_and(|c| c.differences(&cookie).is_empty());
        if !same && (existing.is_some() || !data.is_empty()) && !force {
            anyhow::bail!(
                "{} already holds {} (the data of a bookie); formatting would lose it. Use --force if it is not needed",
                dir.display(),
                match &existing {
                    Some(c) => format!("the cookie of bookie {} in cluster {}", c.bookie_id, c.instance_id),
                    None => format!("{} journal files", data.len()),
                }
            );
        }
        if force && !same {
            for path in std::fs::read_dir(dir)? {
                let path = path?.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
                removed.push(path);
            }
        }
        logtank_durable::write_atomically(&cookie_path(dir), &cookie.to_json())?;
        give_to_service_user(dir)?;
    }
    admin::write_cookie(client, layout, &cookie).await?;
    Ok(Formatted { cookie, removed })
}

/// The journal segments in `dir` (what formatting would lose).
fn data_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "journal") {
            out.push(path);
        }
    }
    Ok(out)
}

/// The user the bookie's unit runs as (the package creates it).
pub const SERVICE_USER: &str = "logtank";

/// Run as root (`sudo logtank bookie format …`, the operator's usual way), the directories and their cookies
/// are given to the service user when it exists, so the bookie can write where it was formatted.
fn give_to_service_user(dir: &Path) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let Some(user) = nix::unistd::User::from_name(SERVICE_USER)? else {
        return Ok(());
    };
    for path in [dir.to_path_buf(), cookie_path(dir)] {
        nix::unistd::chown(&path, Some(user.uid), Some(user.gid))
            .map_err(|e| anyhow::anyhow!("giving {} to {SERVICE_USER}: {e}", path.display()))?;
    }
    Ok(())
}
