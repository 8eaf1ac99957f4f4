// Included by the build scripts of picluster-node and picluster: both compute
// the same identifier of the sources the node agent is built from, so the
// builder can tell a current agent from a stale cross-build that carries the
// same version number. Not a security measure (the agent's SHA-256 is
// recorded in build.json for that): FNV-1a over paths and contents is enough.

/// The crates whose sources make the agent, relative to the workspace root.
const AGENT_SOURCES: &[&str] = &["firstboot/src", "firstboot/Cargo.toml", "profiles/src", "profiles/Cargo.toml"];

fn agent_source_id(workspace: &std::path::Path) -> Option<String> {
    fn walk(p: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
        if p.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), out)?;
            }
        } else {
            out.push(p.to_path_buf());
        }
        Ok(())
    }
    let mut files = Vec::new();
    for s in AGENT_SOURCES {
        walk(&workspace.join(s), &mut files).ok()?;
    }
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for f in &files {
        let rel = f.strip_prefix(workspace).ok()?;
        feed(rel.to_string_lossy().as_bytes());
        feed(&[0]);
        feed(&std::fs::read(f).ok()?);
        feed(&[0]);
    }
    Some(format!("{h:016x}"))
}

fn emit_agent_source_id(workspace: &std::path::Path) {
    for s in AGENT_SOURCES {
        println!("cargo:rerun-if-changed={}", workspace.join(s).display());
    }
    // Outside a checkout (a packaged crate) there is nothing to compare.
    let id = agent_source_id(workspace).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=PICLUSTER_AGENT_SOURCE={id}");
}
