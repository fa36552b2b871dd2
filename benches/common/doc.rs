//! Shared by the benchmarks: each writes one `##` section of `docs/PERFORMANCE.md` and
//! keeps the others.

/// Replaces the section starting at `heading` (up to the next `## `) with `section`, or
/// appends it.
pub fn splice(doc: Option<String>, heading: &str, section: &str) -> String {
    let doc = doc.unwrap_or_else(|| {
        "# Performance\n\nMeasured figures, one `##` section per milestone (detection core, agent mode, \
         binary size, ...). Each section says how it was produced; tools that refresh one section keep \
         the others.\n"
            .to_string()
    });
    let start = doc
        .match_indices(heading)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || doc[..i].ends_with('\n'));
    match start {
        Some(i) => {
            let after = i + heading.len();
            let end = doc[after..]
                .match_indices("\n## ")
                .next()
                .map_or(doc.len(), |(j, _)| after + j + 1);
            let mut out = String::with_capacity(doc.len() + section.len());
            out.push_str(&doc[..i]);
            out.push_str(section);
            if end < doc.len() {
                out.push('\n');
            }
            out.push_str(&doc[end..]);
            out
        }
        None => {
            let mut out = doc.trim_end().to_string();
            out.push_str("\n\n");
            out.push_str(section);
            out
        }
    }
}
