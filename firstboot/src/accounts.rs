//! Users and groups as the root's `/etc/passwd` and `/etc/group` list them
//! (not the machine running the agent: the root may be a tree under test).

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::fsutil::read_optional;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Accounts {
    pub users: Vec<User>,
    pub groups: Vec<Group>,
}

fn fields(line: &str) -> Option<Vec<&str>> {
    let line = line.trim_end_matches('\r');
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    Some(line.split(':').collect())
}

impl Accounts {
    /// Read `<root>/etc/passwd` and `<root>/etc/group` (missing files are empty).
    pub fn load(root: &Path) -> Result<Accounts> {
        let passwd = root.join("etc/passwd");
        let group = root.join("etc/group");
        let mut a = Accounts::default();
        if let Some(text) = read_optional(&passwd)? {
            for (i, line) in String::from_utf8_lossy(&text).lines().enumerate() {
                let Some(f) = fields(line) else { continue };
                let parsed = (f.len() >= 7)
                    .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                    .flatten();
                let Some((uid, gid)) = parsed else {
                    bail!(
                        "{}:{}: not a passwd entry: {line:?}",
                        passwd.display(),
                        i + 1
                    );
                };
                a.users.push(User {
                    name: f[0].to_string(),
                    uid,
                    gid,
                    home: f[5].to_string(),
                    shell: f[6].to_string(),
                });
            }
        }
        if let Some(text) = read_optional(&group)? {
            for (i, line) in String::from_utf8_lossy(&text).lines().enumerate() {
                let Some(f) = fields(line) else { continue };
                let gid = (f.len() >= 4).then(|| f[2].parse().ok()).flatten();
                let Some(gid) = gid else {
                    bail!("{}:{}: not a group entry: {line:?}", group.display(), i + 1);
                };
                a.groups.push(Group {
                    name: f[0].to_string(),
                    gid,
                    members: f[3]
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect(),
                });
            }
        }
        Ok(a)
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn user_by_uid(&self, uid: u32) -> Option<&User> {
        self.users.iter().find(|u| u.uid == uid)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn group_by_gid(&self, gid: u32) -> Option<&Group> {
        self.groups.iter().find(|g| g.gid == gid)
    }

    /// A user name (or number) to a uid.
    pub fn uid_of(&self, owner: &str) -> Result<u32> {
        if let Ok(n) = owner.parse() {
            return Ok(n);
        }
        match self.user(owner) {
            Some(u) => Ok(u.uid),
            // Every Linux system has root as 0, even a test tree without passwd.
            None if owner == "root" => Ok(0),
            None => bail!("user {owner:?} is not in /etc/passwd"),
        }
    }

    /// A group name (or number) to a gid.
    pub fn gid_of(&self, group: &str) -> Result<u32> {
        if let Ok(n) = group.parse() {
            return Ok(n);
        }
        match self.group(group) {
            Some(g) => Ok(g.gid),
            None if group == "root" => Ok(0),
            None => bail!("group {group:?} is not in /etc/group"),
        }
    }

    /// Owner and group of a file spec, with the file named in the error.
    pub fn owner_of(&self, path: &str, owner: &str, group: &str) -> Result<(u32, u32)> {
        let uid = self
            .uid_of(owner)
            .with_context(|| format!("owner of {path}"))?;
        let gid = self
            .gid_of(group)
            .with_context(|| format!("group of {path}"))?;
        Ok((uid, gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_and_group() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\n# comment\npi:x:1000:1000:,,,:/home/pi:/bin/bash\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nsudo:x:27:pi\npi:x:1000:\nvideo:x:44:pi,other\n",
        )
        .unwrap();
        let a = Accounts::load(dir.path()).unwrap();
        assert_eq!(a.user_by_uid(1000).unwrap().home, "/home/pi");
        assert_eq!(a.group("video").unwrap().members, vec!["pi", "other"]);
        assert_eq!(a.owner_of("/x", "pi", "sudo").unwrap(), (1000, 27));
        assert_eq!(a.owner_of("/x", "0", "root").unwrap(), (0, 0));
        let err = format!("{:#}", a.owner_of("/etc/x", "alice", "root").unwrap_err());
        assert!(
            err.contains("owner of /etc/x") && err.contains("\"alice\""),
            "{err}"
        );
    }

    #[test]
    fn broken_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\npi:x\n",
        )
        .unwrap();
        let err = Accounts::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("etc/passwd:2: not a passwd entry"), "{err}");
    }
}
