//! `[access]`: the administrator account and how it logs in.

use serde::Serialize;
use toml::Spanned;

use super::convert::Builder;
use crate::checks;
use crate::schema::RawAccess;

#[derive(Debug, Clone, Serialize)]
pub struct Access {
    pub user: String,
    pub ssh_authorized_keys: Vec<String>,
    /// A crypt hash; a secret (it never appears in plan output).
    #[serde(skip)]
    pub password_hash: Option<String>,
    /// Line and column of `user` in the cluster file, for later checks.
    #[serde(skip)]
    pub user_at: Option<(usize, usize)>,
}

impl Access {
    pub fn keys_only(&self) -> bool {
        self.password_hash.is_none()
    }
}

impl Builder<'_, '_> {
    pub(super) fn access(&mut self, a: &Spanned<RawAccess>) -> Option<Access> {
        let raw = a.get_ref();
        let user_ok = self.check(
            &raw.user,
            "access.user",
            checks::username(raw.user.get_ref()),
            Some("choose a personal administrator name such as alice; stage 1 renames Raspberry Pi OS's first user (uid 1000) to it"),
        );
        let mut keys = Vec::new();
        let mut ok = user_ok;
        for (i, k) in raw.ssh_authorized_keys.iter().enumerate() {
            let v = k.get_ref().trim();
            if self.check(
                k,
                &format!("access.ssh_authorized_keys[{i}]"),
                checks::ssh_public_key(v),
                Some("paste the contents of a .pub file, e.g. `cat ~/.ssh/id_ed25519.pub`"),
            ) {
                keys.push(v.to_string());
            } else {
                ok = false;
            }
        }
        let password_hash = match &raw.password_hash {
            None => None,
            Some(h) => {
                if self.check(
                    h,
                    "access.password_hash",
                    checks::password_hash(h.get_ref()),
                    Some("paste the whole output of `openssl passwd -6` or `mkpasswd -m yescrypt`, or remove the key for a keys-only account"),
                ) {
                    Some(h.get_ref().clone())
                } else {
                    ok = false;
                    None
                }
            }
        };
        if raw.ssh_authorized_keys.is_empty() && raw.password_hash.is_none() {
            self.bad(
                a,
                "access.ssh_authorized_keys",
                "no SSH key and no password hash: nobody could log in to the nodes".into(),
                Some("add your public key, e.g. ssh_authorized_keys = [\"ssh-ed25519 AAAA… you@laptop\"]"),
            );
            ok = false;
        }
        let user_at = Some(self.src.line_col(raw.user.span().start));
        ok.then(|| Access {
            user_at,
            user: raw.user.get_ref().clone(),
            ssh_authorized_keys: keys,
            password_hash,
        })
    }
}
