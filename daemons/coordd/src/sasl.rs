//! The server side of SASL DIGEST-MD5 (RFC 2831, `qop=auth` only) over ZooKeeper's `sasl` op (102), as
//! ZooKeeper's Java server speaks it: realm `zk-sasl-md5`, users and passwords from `[auth.sasl_users]`.
//! On success the session gets the identity `sasl:<user>`.
//!
//! Three steps: the client's empty token gets a challenge (nonce); the client's digest response is checked
//! and answered with `rspauth`, which proves the server knows the password too.

use std::collections::BTreeMap;
use std::collections::HashMap;

use md5::{Digest as _, Md5};

/// The realm ZooKeeper's server uses for DIGEST-MD5 (`SaslQuorumAuthServer`/`ZooKeeperSaslServer`).
pub const REALM: &str = "zk-sasl-md5";

#[derive(Debug)]
pub enum SaslOutcome {
    /// Send this token and expect another.
    Continue(Vec<u8>),
    /// Authenticated as `user`; send `reply` (rspauth).
    Done {
        reply: Vec<u8>,
        user: String,
    },
    Failed(String),
}

#[derive(Debug, Default)]
pub struct SaslServer {
    nonce: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn md5(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().to_vec()
}

/// Parses `key=value,key="quoted value"` pairs.
fn parse_directives(token: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(token);
    let mut out = HashMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_string();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut escaped = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (true, c) => {
                        value.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    (false, c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        out.insert(key, value.trim().to_string());
    }
}

impl SaslServer {
    pub fn new() -> SaslServer {
        SaslServer::default()
    }

    pub fn step(&mut self, token: &[u8], users: &BTreeMap<String, String>) -> SaslOutcome {
        let Some(nonce) = self.nonce.clone() else {
            let bytes: [u8; 24] = rand::random();
            let nonce = hex(&bytes);
            let challenge =
                format!("realm=\"{REALM}\",nonce=\"{nonce}\",qop=\"auth\",charset=utf-8,algorithm=md5-sess");
            self.nonce = Some(nonce);
            return SaslOutcome::Continue(challenge.into_bytes());
        };
        let d = parse_directives(token);
        let get = |k: &str| d.get(k).map(String::as_str).unwrap_or("");
        let user = get("username");
        let Some(password) = users.get(user) else {
            return SaslOutcome::Failed(format!("unknown user '{user}'"));
        };
        if get("nonce") != nonce {
            return SaslOutcome::Failed("nonce mismatch".into());
        }
        let qop = if get("qop").is_empty() { "auth" } else { get("qop") };
        if qop != "auth" {
            return SaslOutcome::Failed(format!("unsupported qop '{qop}'"));
        }
        let realm = if d.contains_key("realm") {
            get("realm")
        } else {
            REALM
        };
        let (cnonce, nc, uri) = (get("cnonce"), get("nc"), get("digest-uri"));
        let key = md5(&[user.as_bytes(), b":", realm.as_bytes(), b":", password.as_bytes()]);
        let a1 = hex(&md5(&[&key, b":", nonce.as_bytes(), b":", cnonce.as_bytes()]));
        let response = |a2: String| {
            let a2 = hex(&md5(&[a2.as_bytes()]));
            hex(&md5(&[
                format!("{a1}:{nonce}:{nc}:{cnonce}:{qop}:{a2}").as_bytes()
            ]))
        };
        if response(format!("AUTHENTICATE:{uri}")) != get("response") {
            return SaslOutcome::Failed(format!("wrong password for '{user}'"));
        }
        let rspauth = response(format!(":{uri}"));
        SaslOutcome::Done {
            reply: format!("rspauth={rspauth}").into_bytes(),
            user: user.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays the client side as RFC 2831 (and puresasl, kazoo's library) computes it.
    fn client_response(challenge: &[u8], user: &str, password: &str, cnonce: &str) -> String {
        let d = parse_directives(challenge);
        let nonce = &d["nonce"];
        let uri = "zookeeper/zk-sasl-md5";
        let key = md5(&[format!("{user}:{REALM}:{password}").as_bytes()]);
        let a1 = hex(&md5(&[&key, format!(":{nonce}:{cnonce}").as_bytes()]));
        let a2 = hex(&md5(&[format!("AUTHENTICATE:{uri}").as_bytes()]));
        let resp = hex(&md5(&[
            format!("{a1}:{nonce}:00000001:{cnonce}:auth:{a2}").as_bytes()
        ]));
        format!(
            "qop=auth,realm=\"{REALM}\",username=\"{user}\",nonce=\"{nonce}\",cnonce=\"{cnonce}\",nc=00000001,digest-uri=\"{uri}\",response={resp}"
        )
    }

    #[test]
    fn digest_md5_accepts_the_right_password_only() {
        let users: BTreeMap<String, String> = [("jaasuser".to_string(), "jaas_password".to_string())].into();
        let mut s = SaslServer::new();
        let SaslOutcome::Continue(challenge) = s.step(b"", &users) else {
            panic!("expected a challenge")
        };
        let good = client_response(&challenge, "jaasuser", "jaas_password", "abc");
        assert!(
            matches!(s.step(good.as_bytes(), &users), SaslOutcome::Done { ref user, .. } if user == "jaasuser")
        );
        let mut s = SaslServer::new();
        let SaslOutcome::Continue(challenge) = s.step(b"", &users) else {
            panic!("expected a challenge")
        };
        let bad = client_response(&challenge, "jaasuser", "nope", "abc");
        assert!(matches!(s.step(bad.as_bytes(), &users), SaslOutcome::Failed(_)));
    }
}
