//! Shared by the table modules of the cluster model: the converter that
//! reports each problem at the span of the offending value.

use std::net::Ipv4Addr;
use std::ops::Range;

use toml::Spanned;

use crate::error::Source;

fn span<T>(s: &Spanned<T>) -> Option<Range<usize>> {
    Some(s.span())
}

/// Converts raw tables into the model, reporting every problem it meets and
/// returning `None` for what it could not convert.
pub(super) struct Builder<'s, 'a> {
    pub(super) src: &'s mut Source<'a>,
}

impl Builder<'_, '_> {
    pub(super) fn bad<T>(&mut self, at: &Spanned<T>, field: &str, msg: String, hint: Option<&str>) {
        self.src
            .report(span(at), field, msg, hint.map(str::to_string));
    }

    pub(super) fn check<T>(
        &mut self,
        at: &Spanned<T>,
        field: &str,
        result: Result<(), String>,
        hint: Option<&str>,
    ) -> bool {
        match result {
            Ok(()) => true,
            Err(msg) => {
                self.bad(at, field, msg, hint);
                false
            }
        }
    }

    pub(super) fn ipv4(&mut self, at: &Spanned<String>, field: &str) -> Option<Ipv4Addr> {
        match at.get_ref().parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.bad(
                    at,
                    field,
                    format!("\"{}\" is not an IPv4 address", at.get_ref()),
                    Some("write it as four numbers, e.g. 192.168.0.120"),
                );
                None
            }
        }
    }
}
