//! Setting a cluster up and looking at it: `metaformat` (the root and what the layout needs, a new instance
//! id), the bookies registered, the ledgers under the root, the instance id and cookies in coordination.

use logtank_coord::zookeeper_client::{Client, CreateMode};
use logtank_coord::ZkError;
use rand::RngCore;

use crate::cookie::Cookie;
use crate::layout::{Layout, LAYOUT_TEXT};
use crate::LedgerError;

/// Ledgers a root may hold before listing them all gets refused (the GC lists them every run).
pub const LEDGERS_LISTED_MAX: usize = 10_000_000;

/// What a metaformat found before it changed anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSurvey {
    pub exists: bool,
    pub ledgers: usize,
    pub instance_id: Option<String>,
    pub cookies: Vec<String>,
}

/// Looks at `root` without changing anything (what `metaformat` asks about before touching it).
pub async fn survey(client: &Client, layout: &Layout) -> Result<RootSurvey, LedgerError> {
    match client.check_stat(layout.root()).await {
        Ok(None) => {
            return Ok(RootSurvey {
                exists: false,
                ledgers: 0,
                instance_id: None,
                cookies: Vec::new(),
            })
        }
        Ok(Some(_)) => {}
        Err(e) => return Err(LedgerError::coord("stat", layout.root(), e)),
    }
    Ok(RootSurvey {
        exists: true,
        ledgers: list_ledgers(client, layout).await?.len(),
        instance_id: instance_id(client, layout).await?,
        cookies: children_or_empty(client, &layout.cookies()).await?,
    })
}

/// Creates the root (and its parents), `available`, `available/readonly`, `cookies`, `idgen`, `LAYOUT`
/// and a new `INSTANCEID`. With `force`, an existing root is formatted anew: its ledgers' metadata and its
/// cookies are deleted (every bookie must then be formatted again, as with BookKeeper's metaformat).
/// Without, a root that holds ledgers is refused. Returns the new instance id.
pub async fn metaformat(client: &Client, layout: &Layout, force: bool) -> Result<String, LedgerError> {
    let survey = survey(client, layout).await?;
    if survey.ledgers > 0 && !force {
        return Err(LedgerError::InvalidArgument(format!(
            "{} holds {} ledgers; formatting it would orphan them (use --force to delete their metadata)",
            layout.root(),
            survey.ledgers
        )));
    }
    let persistent = CreateMode::Persistent.with_acls(logtank_coord::node_acls());
    if survey.exists {
        for id in list_ledgers(client, layout).await? {
            delete_quietly(client, &layout.ledger(id)).await?;
        }
        for top in children_or_empty(client, layout.root()).await? {
            if Layout::is_ledger_dir(&top) {
                delete_tree(client, &format!("{}/{top}", layout.root())).await?;
            }
        }
        for bookie in &survey.cookies {
            delete_quietly(client, &layout.cookie(bookie)).await?;
        }
    }
    client
        .mkdir(layout.root(), &persistent)
        .await
        .map_err(|e| LedgerError::coord("create", layout.root(), e))?;
    for path in [
        layout.available(),
        layout.readonly(),
        layout.cookies(),
        layout.idgen(),
    ] {
        create_or_keep(client, &path, b"").await?;
    }
    put(client, &layout.layout(), LAYOUT_TEXT.as_bytes()).await?;
    let id = new_instance_id();
    put(client, &layout.instance_id(), id.as_bytes()).await?;
    log::info!("formatted {}: instance id {id}", layout.root());
    Ok(id)
}

/// A random (version 4) UUID, BookKeeper's instance id form.
pub fn new_instance_id() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The cluster's instance id, `None` if the root was never formatted.
pub async fn instance_id(client: &Client, layout: &Layout) -> Result<Option<String>, LedgerError> {
    let path = layout.instance_id();
    match client.get_data(&path).await {
        Ok((data, _)) => Ok(Some(String::from_utf8_lossy(&data).trim().to_string())),
        Err(ZkError::NoNode) => Ok(None),
        Err(e) => Err(LedgerError::coord("read", &path, e)),
    }
}

/// The bookie's cookie in coordination, `None` if there is none.
pub async fn read_cookie(
    client: &Client,
    layout: &Layout,
    bookie: &str,
) -> Result<Option<Cookie>, LedgerError> {
    let path = layout.cookie(bookie);
    match client.get_data(&path).await {
        Ok((data, _)) => Cookie::from_json(&path, &data).map(Some),
        Err(ZkError::NoNode) => Ok(None),
        Err(e) => Err(LedgerError::coord("read", &path, e)),
    }
}

/// Writes (or replaces) the bookie's cookie in coordination.
pub async fn write_cookie(client: &Client, layout: &Layout, cookie: &Cookie) -> Result<(), LedgerError> {
    put(client, &layout.cookie(&cookie.bookie_id), &cookie.to_json()).await
}

/// The writable and the readonly bookies registered under the root, sorted.
pub async fn list_bookies(
    client: &Client,
    layout: &Layout,
) -> Result<(Vec<String>, Vec<String>), LedgerError> {
    let mut writable: Vec<String> = children(client, &layout.available())
        .await?
        .into_iter()
        .filter(|b| b != "readonly")
        .collect();
    let mut readonly = children_or_empty(client, &layout.readonly()).await?;
    writable.sort();
    readonly.sort();
    Ok((writable, readonly))
}

/// Every ledger id under the root, sorted.
pub async fn list_ledgers(client: &Client, layout: &Layout) -> Result<Vec<u64>, LedgerError> {
    let mut ids = Vec::new();
    for top in children_or_empty(client, layout.root()).await? {
        if !Layout::is_ledger_dir(&top) {
            continue;
        }
        let top_path = format!("{}/{top}", layout.root());
        for mid in children_or_empty(client, &top_path).await? {
            if !Layout::is_ledger_subdir(&mid) {
                continue;
            }
            for leaf in children_or_empty(client, &format!("{top_path}/{mid}")).await? {
                if let Some(id) = Layout::ledger_id(&top, &mid, &leaf) {
                    ids.push(id);
                }
            }
            if ids.len() > LEDGERS_LISTED_MAX {
                return Err(LedgerError::InvalidArgument(format!(
                    "{} holds more than {LEDGERS_LISTED_MAX} ledgers",
                    layout.root()
                )));
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Whether ledger `id`'s metadata exists (the garbage collector's check before it deletes entries).
pub async fn ledger_exists(client: &Client, layout: &Layout, id: u64) -> Result<bool, LedgerError> {
    let path = layout.ledger(id);
    client
        .check_stat(&path)
        .await
        .map(|s| s.is_some())
        .map_err(|e| LedgerError::coord("stat", &path, e))
}

async fn children(client: &Client, path: &str) -> Result<Vec<String>, LedgerError> {
    match client.list_children(path).await {
        Ok(children) => Ok(children),
        Err(ZkError::NoNode) => Err(LedgerError::NotFormatted {
            path: path.to_string(),
        }),
        Err(e) => Err(LedgerError::coord("list", path, e)),
    }
}

async fn children_or_empty(client: &Client, path: &str) -> Result<Vec<String>, LedgerError> {
    match client.list_children(path).await {
        Ok(children) => Ok(children),
        Err(ZkError::NoNode) => Ok(Vec::new()),
        Err(e) => Err(LedgerError::coord("list", path, e)),
    }
}

async fn create_or_keep(client: &Client, path: &str, data: &[u8]) -> Result<(), LedgerError> {
    let persistent = CreateMode::Persistent.with_acls(logtank_coord::node_acls());
    match client.create(path, data, &persistent).await {
        Ok(_) | Err(ZkError::NodeExists) => Ok(()),
        Err(e) => Err(LedgerError::coord("create", path, e)),
    }
}

/// Creates `path` with `data`, or replaces its data.
async fn put(client: &Client, path: &str, data: &[u8]) -> Result<(), LedgerError> {
    let persistent = CreateMode::Persistent.with_acls(logtank_coord::node_acls());
    match client.create(path, data, &persistent).await {
        Ok(_) => Ok(()),
        Err(ZkError::NodeExists) => client
            .set_data(path, data, None)
            .await
            .map(|_| ())
            .map_err(|e| LedgerError::coord("write", path, e)),
        Err(e) => Err(LedgerError::coord("create", path, e)),
    }
}

async fn delete_quietly(client: &Client, path: &str) -> Result<(), LedgerError> {
    match client.delete(path, None).await {
        Ok(()) | Err(ZkError::NoNode) => Ok(()),
        Err(e) => Err(LedgerError::coord("delete", path, e)),
    }
}

/// Deletes `path` and everything under it (depth first; bounded by the tree, which the caller listed).
async fn delete_tree(client: &Client, path: &str) -> Result<(), LedgerError> {
    let mut stack = vec![(path.to_string(), false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            delete_quietly(client, &node).await?;
            continue;
        }
        stack.push((node.clone(), true));
        for child in children_or_empty(client, &node).await? {
            stack.push((format!("{node}/{child}"), false));
        }
    }
    Ok(())
}
