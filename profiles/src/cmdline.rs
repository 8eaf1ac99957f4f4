//! Editing `cmdline.txt`: one line of kernel arguments. Tokens are split on
//! whitespace except inside double quotes (the kernel's own rule), so an
//! argument like `systemd.run="/boot/firmware/picluster-node stage1"` is one token.

/// Split a command line into arguments, keeping quotes as written.
pub fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.trim().chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Append `add` to the arguments of `line`, skipping any already present, and
/// return the new file content (one line, newline-terminated).
pub fn append(line: &str, add: &[String]) -> String {
    let mut toks = tokens(line);
    for a in add {
        if !toks.contains(a) {
            toks.push(a.clone());
        }
    }
    toks.join(" ") + "\n"
}

/// Remove every argument in `remove` from `line`, keeping the rest in order.
pub fn remove(line: &str, remove: &[String]) -> String {
    let toks: Vec<String> = tokens(line)
        .into_iter()
        .filter(|t| !remove.contains(t))
        .collect();
    toks.join(" ") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIOS: &str = "console=serial0,115200 console=tty1 root=PARTUUID=6c586e13-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n";

    #[test]
    fn quoted_arguments_stay_whole() {
        let t = tokens("a systemd.run=\"/x y stage1\" b");
        assert_eq!(t, vec!["a", "systemd.run=\"/x y stage1\"", "b"]);
    }

    #[test]
    fn append_keeps_every_token_in_order_and_is_idempotent() {
        let add = vec!["cgroup_enable=memory".to_string(), "x=\"a b\"".to_string()];
        let once = append(PIOS, &add);
        assert!(once.starts_with(PIOS.trim_end()));
        assert!(once.ends_with("firstboot cgroup_enable=memory x=\"a b\"\n"));
        assert_eq!(append(&once, &add), once);
        assert_eq!(remove(&once, &add), PIOS);
    }
}
