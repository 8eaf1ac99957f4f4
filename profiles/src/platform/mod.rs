//! The `[platform]` table: which data-platform components the first server
//! deploys. (Rendering of the manifests lives beside this schema.)

use serde::Serialize;
use toml::Spanned;

use crate::error::Source;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Platform {
    pub components: Vec<String>,
}

impl Platform {
    /// Parse and check the `[platform]` table; `None` after reporting problems.
    pub fn from_table(
        table: Option<&Spanned<toml::Table>>,
        src: &mut Source<'_>,
    ) -> Option<Platform> {
        let Some(table) = table else {
            return Some(Platform::default());
        };
        let mut ok = true;
        let mut components = Vec::new();
        for (key, value) in table.get_ref() {
            match (key.as_str(), value) {
                ("components", toml::Value::Array(items)) => {
                    for item in items {
                        match item.as_str() {
                            Some(s) => components.push(s.to_string()),
                            None => {
                                src.report(
                                    Some(table.span()),
                                    "platform.components",
                                    "every entry must be a string",
                                    None,
                                );
                                ok = false;
                            }
                        }
                    }
                }
                _ => {
                    src.report(
                        Some(table.span()),
                        format!("platform.{key}"),
                        format!("unknown key `{key}`"),
                        Some("the [platform] table accepts: components".into()),
                    );
                    ok = false;
                }
            }
        }
        if !components.is_empty() {
            src.report(
                Some(table.span()),
                "platform.components",
                format!(
                    "data-platform components are not available yet (got {})",
                    components.join(", ")
                ),
                Some("leave components = [] for now".into()),
            );
            ok = false;
        }
        ok.then_some(Platform { components })
    }
}
