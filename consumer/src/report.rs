//! How the operator verbs (`status`, `replay`, `verify`, `orphans`, `promote`) print their
//! reports: the text an operator reads, or with `--json` the report itself (its fields are
//! documented on each report type) as pretty JSON, for scripts. Nothing else is printed to
//! stdout, so `--json` output always parses.

use serde::Serialize;

/// Prints `report` to stdout: as pretty JSON with `json`, else as `text` renders it.
pub fn print<R: Serialize>(report: &R, json: bool, text: impl FnOnce(&R) -> String) {
    if json {
        let out = serde_json::to_string_pretty(report).expect("a report serializes");
        println!("{out}");
    } else {
        print!("{}", text(report));
    }
}
