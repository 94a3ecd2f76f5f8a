//! ACLs and identities: ZooKeeper's `world`, `auth`, `digest`, `ip` schemes, the super user, and the
//! `sasl` ids DIGEST-MD5 logins get.

use base64::Engine as _;
use logtank_zk::{err, perms, Acl, Id};
use sha1::{Digest as _, Sha1};

/// `user:base64(sha1("user:password"))`, the digest scheme's stored id for `user:password`.
pub fn digest_id(user_password: &str) -> String {
    let user = user_password.split(':').next().unwrap_or("");
    let hash = Sha1::digest(user_password.as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// Identities one connection may prove (its `ip` id included). ZooKeeper sets no bound; real clients
/// add one or two.
pub const IDS_PER_CONNECTION_MAX: usize = 32;

/// What a session has proven about itself.
#[derive(Debug, Clone, Default)]
pub struct AuthIds {
    pub ids: Vec<Id>,
    pub is_super: bool,
}

impl AuthIds {
    pub fn for_ip(ip: &str) -> AuthIds {
        AuthIds {
            ids: vec![Id {
                scheme: "ip".into(),
                id: ip.into(),
            }],
            is_super: false,
        }
    }

    /// Adds a proven identity. Returns false (and adds nothing) when the connection already holds
    /// [`IDS_PER_CONNECTION_MAX`] others: every ACL check and every `auth` ACL walks them, so one
    /// client's `addauth` loop must not make its requests, or the server, ever slower.
    #[must_use]
    pub fn add(&mut self, id: Id) -> bool {
        if self.ids.contains(&id) {
            return true;
        }
        if self.ids.len() >= IDS_PER_CONNECTION_MAX {
            return false;
        }
        self.ids.push(id);
        true
    }

    /// ZooKeeper's `checkACL`: allowed if any entry grants one of `perm`'s bits to one of our ids.
    pub fn allows(&self, acl: &[Acl], perm: i32) -> bool {
        if self.is_super || acl.is_empty() {
            return true;
        }
        acl.iter().filter(|a| a.perms & perm != 0).any(|a| {
            (a.id.scheme == "world" && a.id.id == "anyone")
                || self
                    .ids
                    .iter()
                    .any(|id| id.scheme == a.id.scheme && id_matches(&a.id.scheme, &id.id, &a.id.id))
        })
    }

    /// ZooKeeper's `fixupACL`: validates the entries and replaces `auth` with the session's own ids.
    pub fn fixup(&self, acl: &[Acl]) -> Result<Vec<Acl>, i32> {
        if acl.is_empty() {
            return Err(err::INVALID_ACL);
        }
        // ZooKeeper (since 3.5) drops duplicate entries; a set keeps that linear in the ACL's length.
        let mut out = Vec::with_capacity(acl.len());
        let mut seen = std::collections::HashSet::with_capacity(acl.len());
        let mut push = |entry: Acl| {
            if seen.insert(entry.clone()) {
                out.push(entry);
            }
        };
        for a in acl {
            match a.id.scheme.as_str() {
                "world" if a.id.id == "anyone" => push(a.clone()),
                "auth" => {
                    let mut any = false;
                    for id in self
                        .ids
                        .iter()
                        .filter(|id| id.scheme != "ip" && id.scheme != "super")
                    {
                        any = true;
                        push(Acl {
                            perms: a.perms,
                            id: id.clone(),
                        });
                    }
                    if !any {
                        return Err(err::INVALID_ACL);
                    }
                }
                "digest" if a.id.id.split(':').count() == 2 => push(a.clone()),
                "ip" if valid_ip_acl(&a.id.id) => push(a.clone()),
                "sasl" if !a.id.id.is_empty() => push(a.clone()),
                "super" => push(a.clone()),
                _ => return Err(err::INVALID_ACL),
            }
        }
        if out.iter().any(|a| a.perms & !perms::ALL != 0) {
            return Err(err::INVALID_ACL);
        }
        Ok(out)
    }
}

fn id_matches(scheme: &str, have: &str, acl_id: &str) -> bool {
    match scheme {
        "ip" => ip_matches(have, acl_id),
        _ => have == acl_id,
    }
}

fn valid_ip_acl(spec: &str) -> bool {
    let (addr, bits) = spec.split_once('/').unwrap_or((spec, ""));
    addr.parse::<std::net::IpAddr>().is_ok() && (bits.is_empty() || bits.parse::<u8>().is_ok())
}

/// `ip` ACLs are an address or `address/prefix-bits`.
fn ip_matches(client: &str, spec: &str) -> bool {
    let (addr, bits) = spec.split_once('/').unwrap_or((spec, ""));
    let (Ok(client), Ok(addr)) = (
        client.parse::<std::net::IpAddr>(),
        addr.parse::<std::net::IpAddr>(),
    ) else {
        return false;
    };
    let (c, a, width) = match (client, addr) {
        (std::net::IpAddr::V4(c), std::net::IpAddr::V4(a)) => {
            (u128::from(u32::from(c)), u128::from(u32::from(a)), 32u32)
        }
        (std::net::IpAddr::V6(c), std::net::IpAddr::V6(a)) => (u128::from(c), u128::from(a), 128u32),
        _ => return false,
    };
    let bits: u32 = if bits.is_empty() {
        width
    } else {
        bits.parse().unwrap_or(width).min(width)
    };
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (c >> shift) == (a >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_kazoo_harness_super() {
        // The kazoo test harness configures this super digest for password "test".
        assert_eq!(digest_id("super:test"), "super:D/InIHSb7yEEbrWz8b9l71RjZJU=");
    }

    #[test]
    fn acl_checks() {
        let me = AuthIds {
            ids: vec![
                Id {
                    scheme: "ip".into(),
                    id: "10.0.0.7".into(),
                },
                Id {
                    scheme: "digest".into(),
                    id: digest_id("bob:pw"),
                },
            ],
            is_super: false,
        };
        let acl = vec![Acl {
            perms: perms::READ,
            id: Id {
                scheme: "ip".into(),
                id: "10.0.0.0/8".into(),
            },
        }];
        assert!(me.allows(&acl, perms::READ));
        assert!(!me.allows(&acl, perms::WRITE));
        let fixed = me.fixup(&[Acl {
            perms: perms::ALL,
            id: Id {
                scheme: "auth".into(),
                id: "".into(),
            },
        }]);
        assert_eq!(fixed.unwrap()[0].id.scheme, "digest");
        assert_eq!(AuthIds::for_ip("1.2.3.4").fixup(&[]), Err(err::INVALID_ACL));
    }
}
